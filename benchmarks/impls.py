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

Stream rows (``Trainer.fit_dataset`` and what it is compared with). They all
train on the batches ``handloop`` and ``scan`` use: epoch ``e`` is
``_batches(spec, n, e)`` (fit's per-epoch permutation for seed 0, ragged tail
dropped), gathered into numpy ``(x, y)`` batches before training starts
(``_stream_epochs``; outside the timed epochs, so these rows time the training
loop, not a host pipeline). So their final losses are comparable with
``jaxfit``'s and ``handloop``'s.

- ``jaxfit-list``: ``fit_dataset(batches)`` where ``batches`` is an
  ``EpochList``: a ``list`` (subclass) holding epoch 0's batches whose
  ``__iter__`` yields epoch ``e``'s batches on its ``e``-th call, so that a
  dataset re-iterated every epoch trains on exactly fit's batches (anything that
  reads it as a plain list, by index, sees epoch 0's order).
- ``jaxfit-gen``: ``fit_dataset(generator_function)``: a function returning a
  fresh generator each epoch, yielding that epoch's batches.
- ``jaxfit-grain``: ``fit_dataset(jaxfit.data.from_arrays(x, y, batch_size,
  seed=0))`` (grain; the same order for the same seed, but grain gathers each
  batch from ``x`` and ``y`` inside the epoch; a ragged last batch is kept, as
  fit keeps it). Needs grain: a skipped row without it.
- ``jaxfit-tfdata``: ``fit_dataset`` on ``TFDataLike``, an object with
  ``as_numpy_iterator()`` (the tf.data duck type) returning epoch ``e``'s
  batches on its ``e``-th call; TensorFlow is never imported.
- ``handloop-stream``: ``handloop`` consuming the iterator ``jaxfit-gen``
  gets (the same generator function): each batch put on the device one ahead,
  the same jitted, donated step; so ``jaxfit-list`` / ``jaxfit-gen`` against it
  reads as fit_dataset against a hand loop on the same iterator.
- ``keras-gen``, ``keras-pydataset``, ``keras-pydataset-spe32``: Keras 3
  ``model.fit`` on the same batches from a Python generator and from a
  ``keras.utils.PyDataset`` (``benchmarks/external.py``).

The callbacks workload adds a per-batch callback that reads the batch loss (and
``verbose=1`` progress for jaxfit and Keras, written to /dev/null), stream rows
included; for the hand loops that is a host read of the loss every step.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import workloads

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
    return [order[i : i + batch] for i in range(0, n - batch + 1, batch)]  # drop ragged


def _stream_epochs(spec, x, y):
    """``epoch -> [(x, y), ...]``: each epoch's numpy batches, gathered now (for
    ``spec["epochs"]`` epochs; a later epoch index wraps around, for frameworks
    that read ahead past the last epoch)."""
    epochs = [
        [(x[rows], y[rows]) for rows in _batches(spec, len(x), epoch)]
        for epoch in range(spec["epochs"])
    ]
    return lambda epoch: epochs[epoch % len(epochs)]


class EpochList(list):
    """A list of epoch 0's batches whose ``e``-th iteration yields epoch ``e``'s."""

    def __init__(self, epochs):
        super().__init__(epochs(0))
        self._epochs = epochs
        self.iterations = 0

    def __iter__(self):
        epoch, self.iterations = self.iterations, self.iterations + 1
        return iter(self._epochs(epoch))


class TFDataLike:
    """The tf.data duck type: ``as_numpy_iterator()``, epoch ``e``'s batches on
    its ``e``-th call (a shuffled ``tf.data.Dataset`` reshuffles per iteration)."""

    def __init__(self, epochs):
        self._epochs = epochs
        self.iterations = 0

    def as_numpy_iterator(self):
        epoch, self.iterations = self.iterations, self.iterations + 1
        return iter(self._epochs(epoch))


def generator_function(epochs):
    """A function returning a fresh generator of the next epoch's batches."""
    count = itertools.count()

    def batches():
        yield from epochs(next(count))

    return batches


def run_jaxfit(spec, x, y, timer, yield_every="auto", dataset=None) -> float:
    """``fit`` on the arrays, or ``fit_dataset(dataset)`` when one is given."""
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
        callbacks.append(
            {"on_train_batch_end": lambda batch, logs: seen.append(float(logs["loss"]))}
        )
        verbose = 1
    trainer = jaxfit.Trainer(
        workloads.model(spec),
        optimizer=optax.adam(1e-3),
        loss="sparse_categorical_crossentropy_from_logits",
        mesh=None,
    )
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        if dataset is None:
            history = trainer.fit(
                x,
                y,
                batch_size=spec["batch"],
                epochs=spec["epochs"],
                verbose=verbose,
                callbacks=callbacks,
                yield_every=yield_every,
            )
        else:
            history = trainer.fit_dataset(
                dataset,
                epochs=spec["epochs"],
                verbose=verbose,
                callbacks=callbacks,
                yield_every=yield_every,
            )
    return history.history["loss"][-1]


def _prepared(spec):
    model = workloads.model(spec)
    apply = _normalized(model)
    optimizer = optax.adam(1e-3)
    params = model.params
    state = model.state if model.state is not None else {}
    return (
        apply,
        optimizer,
        (params, optimizer.init(params), state, jax.random.PRNGKey(0)),
    )


def run_handloop(spec, x, y, timer, stream=None) -> float:
    """The hand loop over ``x[order]`` slices, or over ``stream()`` (a function
    returning each epoch's iterator of numpy batches) when one is given."""
    apply, optimizer, carry = _prepared(spec)

    @jax.jit
    def step(carry, xb, yb, total):
        params, opt_state, state, rng = carry
        rng, key = jax.random.split(rng)
        (loss, state), grads = jax.value_and_grad(
            lambda p: _loss_fn(apply, p, state, xb, yb, key), has_aux=True
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (
            (optax.apply_updates(params, updates), opt_state, state, rng),
            total + loss,
            loss,
        )

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 3))
    per_batch = bool(spec.get("callbacks"))
    loss_value = 0.0
    for epoch in range(spec["epochs"]):
        timer.begin()
        if stream is None:
            batches = ((x[rows], y[rows]) for rows in _batches(spec, len(x), epoch))
        else:
            batches = iter(stream())
        total = jnp.zeros(())
        steps = 0
        upcoming = jax.device_put(next(batches))
        while upcoming is not None:
            xb, yb = upcoming
            following = next(batches, None)  # the next batch moves while this one runs
            upcoming = None if following is None else jax.device_put(following)
            carry, total, loss = step(carry, xb, yb, total)
            steps += 1
            if per_batch:
                float(loss)  # a per-batch callback reading the loss
        loss_value = float(total) / steps
        timer.end()
    return loss_value


def run_scan(spec, x, y, timer) -> float:
    apply, optimizer, carry = _prepared(spec)

    def body(carry, batch):
        params, opt_state, state, rng = carry
        xb, yb = batch
        rng, key = jax.random.split(rng)
        (loss, state), grads = jax.value_and_grad(
            lambda p: _loss_fn(apply, p, state, xb, yb, key), has_aux=True
        )(params)
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
    elif impl in ("jaxfit-list", "jaxfit-gen", "jaxfit-tfdata"):
        wrap = {
            "jaxfit-list": EpochList,
            "jaxfit-gen": generator_function,
            "jaxfit-tfdata": TFDataLike,
        }[impl]
        loss = run_jaxfit(spec, x, y, timer, dataset=wrap(_stream_epochs(spec, x, y)))
    elif impl == "jaxfit-grain":
        import grain  # noqa: F401  (optional: ModuleNotFoundError = a skipped row)

        import jaxfit

        loss = run_jaxfit(
            spec,
            x,
            y,
            timer,
            dataset=jaxfit.data.from_arrays(x, y, batch_size=spec["batch"], seed=0),
        )
    elif impl == "handloop-stream":
        loss = run_handloop(
            spec, x, y, timer, stream=generator_function(_stream_epochs(spec, x, y))
        )
    else:
        import external

        if impl == "keras":
            loss = external.keras_fit(spec, x, y, timer)
        elif impl == "keras-spe32":
            loss = external.keras_fit(spec, x, y, timer, steps_per_execution=32)
        elif impl in ("keras-gen", "keras-pydataset", "keras-pydataset-spe32"):
            loss = external.keras_fit(
                spec,
                x,
                y,
                timer,
                stream=impl.split("-")[1],
                steps_per_execution=32 if impl.endswith("spe32") else 1,
                epochs=_stream_epochs(spec, x, y),
            )
        elif impl == "flax-nnx":
            loss = external.flax_nnx(spec, x, y, timer)
        else:
            raise ValueError(f"impl: unknown implementation {impl!r}")
    stats = jax.devices()[0].memory_stats() or {}
    steps = len(x) // spec["batch"]
    steady = (
        float(np.median(timer.times[1:])) if len(timer.times) > 1 else timer.times[0]
    )
    return {
        "first_epoch_s": timer.times[0],
        "steady_epoch_s": steady,
        "steps_per_s": steps / steady,
        "samples_per_s": steps * spec["batch"] / steady,
        "compiles_after_first_epoch": _COMPILES[0] - (timer.compiles_after_first or 0),
        "peak_memory_bytes": stats.get("peak_bytes_in_use"),
        "final_loss": float(loss),
        "epochs": len(timer.times),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
    }


if __name__ == "__main__":
    impl, workload = sys.argv[1], sys.argv[2]
    table = workloads.QUICK if "--quick" in sys.argv else workloads.FULL
    spec = dict(table[workload])
    for arg in sys.argv[3:]:  # --set key=value (tests shrink the sizes)
        if arg.startswith("--set="):
            key, value = arg[len("--set=") :].split("=", 1)
            spec[key] = json.loads(value)
    print(json.dumps({"impl": impl, "workload": workload, **run(impl, spec)}))
