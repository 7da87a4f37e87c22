"""The JAX implementations of the benchmark, and the child-process entry point.

    python benchmarks/impls.py IMPL WORKLOAD [--quick]   # prints one JSON line

- ``jaxfit``: ``Trainer.fit`` with its defaults (``yield_every="auto"``: steps
  fused into ``lax.scan`` blocks between yield points).
- ``jaxfit-batch``: the same with ``yield_every="batch"`` (a sync every step).
- ``handloop``: what a careful JAX user writes: one ``jax.jit`` step per batch
  with the state donated, batches put on the device one ahead, the epoch loss
  summed on device and read once per epoch.
- ``scan``: a whole epoch as one ``lax.scan`` over batches already on the device:
  the practical lower bound for per-step overhead.
- ``keras``, ``keras-spe32``, ``flax-nnx``: ``benchmarks/external.py``.

The callbacks workload adds a per-batch callback that reads the batch loss (and
``verbose=1`` progress for jaxfit and Keras, written to /dev/null); for the hand
loops that is a host read of the loss every step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import workloads  # noqa: E402

_COMPILES = [0]


def _count(event: str, *args: Any, **kwargs: Any) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


class Timer:
    """Epoch wall times; the compile count when the first epoch ended."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.compiles_after_first: int | None = None
        self._start = 0.0

    def begin(self) -> None:
        self._start = time.perf_counter()

    def end(self) -> None:
        self.times.append(time.perf_counter() - self._start)
        if self.compiles_after_first is None:
            self.compiles_after_first = _COMPILES[0]


def _loss_fn(apply, params, state, x, y, rng):
    logits, new_state = apply(params, state, x, train=True, rng=rng)
    loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, new_state


def _normalized(model: Any):
    """The model's apply as ``(params, state, x, *, train, rng) -> (y, state)``."""
    from jaxfit._src.core import apply as apply_lib

    apply, _ = apply_lib.normalize(model.apply_fn)
    return apply


def _batches(spec, n, epoch):
    order = np.random.default_rng([0, epoch]).permutation(n)
    batch = spec["batch"]
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]  # drop ragged


def run_jaxfit(spec, x, y, timer, yield_every="auto") -> float:
    import jaxfit

    class Clock(jaxfit.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            timer.begin()

        def on_epoch_end(self, epoch, logs=None):
            timer.end()

    callbacks: list[Any] = [Clock()]
    verbose = 0
    if spec.get("callbacks"):
        seen = []
        callbacks.append({"on_train_batch_end": lambda batch, logs: seen.append(
            float(logs["loss"]))})
        verbose = 1
    trainer = jaxfit.Trainer(workloads.model(spec), optimizer=optax.adam(1e-3),
                             loss="sparse_categorical_crossentropy_from_logits",
                             mesh=None)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        history = trainer.fit(x, y, batch_size=spec["batch"], epochs=spec["epochs"],
                              verbose=verbose, callbacks=callbacks,
                              yield_every=yield_every)
    return history.history["loss"][-1]


def _prepared(spec):
    model = workloads.model(spec)
    apply = _normalized(model)
    optimizer = optax.adam(1e-3)
    params = model.params
    state = model.state if model.state is not None else {}
    return apply, optimizer, (params, optimizer.init(params), state,
                              jax.random.PRNGKey(0))


def run_handloop(spec, x, y, timer) -> float:
    apply, optimizer, carry = _prepared(spec)

    @jax.jit
    def step(carry, xb, yb, total):
        params, opt_state, state, rng = carry
        rng, key = jax.random.split(rng)
        (loss, state), grads = jax.value_and_grad(
            lambda p: _loss_fn(apply, p, state, xb, yb, key), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, state, rng), \
            total + loss, loss

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 3))
    per_batch = bool(spec.get("callbacks"))
    loss_value = 0.0
    for epoch in range(spec["epochs"]):
        timer.begin()
        order = _batches(spec, len(x), epoch)
        total = jnp.zeros(())
        upcoming = jax.device_put((x[order[0]], y[order[0]]))
        for i in range(len(order)):
            xb, yb = upcoming
            if i + 1 < len(order):  # the next batch moves while this one runs
                upcoming = jax.device_put((x[order[i + 1]], y[order[i + 1]]))
            carry, total, loss = step(carry, xb, yb, total)
            if per_batch:
                float(loss)  # a per-batch callback reading the loss
        loss_value = float(total) / len(order)
        timer.end()
    return loss_value


def run_scan(spec, x, y, timer) -> float:
    apply, optimizer, carry = _prepared(spec)

    def body(carry, batch):
        params, opt_state, state, rng = carry
        xb, yb = batch
        rng, key = jax.random.split(rng)
        (loss, state), grads = jax.value_and_grad(
            lambda p: _loss_fn(apply, p, state, xb, yb, key), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, state, rng), loss

    @jax.jit
    def epoch_fn(carry, xs, ys):
        carry, losses = jax.lax.scan(body, carry, (xs, ys))
        return carry, losses.mean()

    epoch_fn = jax.jit(epoch_fn.__wrapped__, donate_argnums=(0,))
    loss_value = 0.0
    for epoch in range(spec["epochs"]):
        order = np.stack(_batches(spec, len(x), epoch))
        xs, ys = jax.device_put((x[order], y[order]))  # the epoch, on device
        jax.block_until_ready((xs, ys))
        timer.begin()
        carry, mean = epoch_fn(carry, xs, ys)
        loss_value = float(mean)
        timer.end()
    return loss_value


def run(impl: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one implementation; returns its measurements."""
    x, y = workloads.data(spec)
    timer = Timer()
    if impl == "jaxfit":
        loss = run_jaxfit(spec, x, y, timer)
    elif impl == "jaxfit-batch":
        loss = run_jaxfit(spec, x, y, timer, yield_every="batch")
    elif impl == "handloop":
        loss = run_handloop(spec, x, y, timer)
    elif impl == "scan":
        loss = run_scan(spec, x, y, timer)
    else:
        import external

        if impl == "keras":
            loss = external.keras_fit(spec, x, y, timer)
        elif impl == "keras-spe32":
            loss = external.keras_fit(spec, x, y, timer, steps_per_execution=32)
        elif impl == "flax-nnx":
            loss = external.flax_nnx(spec, x, y, timer)
        else:
            raise ValueError(f"impl: unknown implementation {impl!r}")
    stats = jax.devices()[0].memory_stats() or {}
    steps = len(x) // spec["batch"]
    steady = float(np.median(timer.times[1:])) if len(timer.times) > 1 else timer.times[0]
    return {
        "first_epoch_s": timer.times[0], "steady_epoch_s": steady,
        "steps_per_s": steps / steady, "samples_per_s": steps * spec["batch"] / steady,
        "compiles_after_first_epoch": _COMPILES[0] - (timer.compiles_after_first or 0),
        "peak_memory_bytes": stats.get("peak_bytes_in_use"),
        "final_loss": float(loss), "epochs": len(timer.times),
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
    }


if __name__ == "__main__":
    impl, workload = sys.argv[1], sys.argv[2]
    table = workloads.QUICK if "--quick" in sys.argv else workloads.FULL
    spec = dict(table[workload])
    for arg in sys.argv[3:]:  # --set key=value (tests shrink the sizes)
        if arg.startswith("--set="):
            key, value = arg[len("--set="):].split("=", 1)
            spec[key] = json.loads(value)
    print(json.dumps({"impl": impl, "workload": workload, **run(impl, spec)}))
