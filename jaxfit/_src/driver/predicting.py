"""``predict``: the model over padded batches, the real rows back in order.

Arrays go through the trainer's keyed predict step one padded batch at a time
(one compile for every batch, the ragged last one padded); a stream of x
batches (``predict_dataset``) through ``data.predict_stream`` and the same
feeder ``fit_dataset`` reads with, in fused blocks (one compile per batch shape
bucket). Each batch gets a fresh key split off the call's key chain
(``core.inference_steps``). The outputs stay on the device until the end and
come back in one transfer, unless a callback overrides a predict batch hook:
then each batch is waited for and its hooks called around it (Keras' order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import placement
from jaxfit._src.core.placement import Placement
from jaxfit._src.data import arrays
from jaxfit._src.data import predict_stream as predict_stream_lib
from jaxfit._src.driver import compiler, plans
from jaxfit._src.driver.callback import CallbackList

_BATCH_HOOKS = ("on_predict_batch_begin", "on_predict_batch_end")


def wants_batches(callbacks: CallbackList) -> bool:
    """Whether a callback overrides a predict batch hook."""
    return any(callbacks.wants(hook) for hook in _BATCH_HOOKS)


def predict(
    predict_step: Callable[..., Any],
    state: Any,
    keyed: Callable[[], Any],
    where: Placement,
    x: Any,
    batch_size: int,
    callbacks: Callable[[int | None], CallbackList],
) -> Any:
    """Runs ``predict_step(state, x_batch, mask) -> (y_pred, rng)`` over ``x``
    in padded batches, ``x`` checked against ``state`` first; the key chain
    starts at the rng of ``keyed()`` (``state`` with the call's key, made once
    ``x`` is checked: a bad ``x`` runs and compiles nothing);
    ``callbacks(steps)`` gets the ``on_predict_*`` hooks."""
    arrays.require_arrays(x, "x", "the inputs")
    data = arrays.to_numpy(x, "x")
    n = arrays.num_samples({"x": data})
    if n == 0:
        raise ValueError(errors.expected("x", "at least one sample", data))
    batches = arrays.Batches(n, batch_size, shuffle=False, seed=0, pad_to=where.padded)
    _check(predict_step, state, data, batches)
    state = keyed()
    callback_list = callbacks(batches.steps_per_epoch)
    callback_list.call("on_predict_begin")
    hooks = wants_batches(callback_list)
    index, mask = batches.epoch_indices(0)
    rows = where.local_rows(index.shape[1])
    outputs, rng = [], state.rng
    for step in range(index.shape[0]):
        if hooks:
            callback_list.call("on_predict_batch_begin", step)
        x_batch, mask_batch = where.put_batch(
            (arrays.take(data, index[step][rows]), mask[step][rows]), index.shape[1]
        )
        y_pred, rng = predict_step(state.replace(rng=rng), x_batch, mask_batch)
        outputs.append(y_pred)
        if hooks:
            callback_list.call(
                "on_predict_batch_end",
                step,
                logs={"outputs": _real_rows(placement.gather(y_pred), mask[step])},
            )
    host = placement.gather(outputs)
    # Padding rows sit at the end of *every* batch once a batch is padded to a
    # multiple of the data axis (and at the end of the ragged last one): keep the
    # real rows by the mask, which is in sample order (no shuffle).
    real = mask.reshape(-1) > 0
    result = jax.tree.map(lambda *parts: np.concatenate(parts)[real], *host)
    callback_list.call("on_predict_end")
    return result


def predict_stream(
    block_fn: Callable[..., Any],
    predict_step: Callable[..., Any],
    state: Any,
    keyed: Callable[[], Any],
    where: Placement,
    dataset: Any,
    batches: int | None,
    producer_timeout: float | None,
    callbacks: Callable[[int | None], CallbackList],
) -> Any:
    """``predict_dataset``: the stream read by a ``StreamSource`` (as
    ``fit_dataset``'s), its first batch traced before anything runs, then its
    blocks through ``block_fn`` from ``keyed()`` (``state`` with the call's
    key, made once that batch is checked against ``state``); a fused block has as many slots as an
    evaluation's would (one batch a block when a batch hook is overridden, or
    for a convolutional model on CPU, as the compiled steps do)."""
    source = plans.stream_source(
        predict_stream_lib.paired_stream(dataset),
        "dataset",
        where,
        producer_timeout=producer_timeout,
        evaluation=True,
    )
    try:
        jaxpr = check_shapes(
            predict_step,
            state,
            source.example[0],
            source.padded_size,
            source.batch_size,
            "dataset batch 0: x",
        )
        state = keyed()
        callback_list = callbacks(batches)
        fuse = not wants_batches(callback_list) and not (
            jax.default_backend() == "cpu" and compiler._uses(jaxpr, compiler._CONV)
        )
        capacity = source.capacity(fuse, batches)
        blocks = source.eval_blocks(batches, capacity, lambda: capacity)
        try:
            return predict_blocks(block_fn, state, blocks, callback_list)
        finally:
            blocks.close()
    finally:
        source.close()


def predict_blocks(
    block_fn: Callable[..., Any],
    state: Any,
    blocks: Any,
    callback_list: CallbackList,
) -> Any:
    """Runs ``block_fn(state, x, mask) -> (y_pred, rng)`` over a stream's device
    blocks (``(block, real batches)``), the key chain starting at ``state.rng``;
    returns the real rows' outputs, concatenated in order."""
    callback_list.call("on_predict_begin")
    hooks = wants_batches(callback_list)
    outputs, rng, step = [], state.rng, 0
    for block, real in blocks:
        if hooks:  # one batch a block (see data.predict_stream)
            callback_list.call("on_predict_batch_begin", step)
        y_pred, rng = block_fn(state.replace(rng=rng), block["x"], block["mask"])
        outputs.append((y_pred, block["mask"]))
        if hooks:
            callback_list.call(
                "on_predict_batch_end", step, logs={"outputs": _rows([outputs[-1]])}
            )
        step += real
    result = _rows(outputs)
    callback_list.call("on_predict_end")
    return result


def _real_rows(outputs: Any, mask: np.ndarray) -> Any:
    """The rows of a batch's (host) outputs where ``mask`` is 1."""
    real = mask > 0
    return jax.tree.map(lambda a: a[real], outputs)


def _rows(outputs: list[tuple[Any, Any]]) -> Any:
    """The real rows of blocks of outputs ``[slots, rows, ...]`` (masks
    ``[slots, rows]``), in order, in one transfer."""
    host = jax.device_get(outputs)
    keep = np.concatenate([mask.reshape(-1) > 0 for _, mask in host])
    return jax.tree.map(
        lambda *parts: np.concatenate([p.reshape(-1, *p.shape[2:]) for p in parts])[
            keep
        ],
        *[y for y, _ in host],
    )


def _check(
    predict_step: Callable[..., Any], state: Any, x: Any, batches: arrays.Batches
) -> None:
    """Traces the predict step once (jit reuses it): a shape mismatch names x."""
    size = batches.padded_size
    check_shapes(predict_step, state, x, size, batches.batch_size, "x")


def check_shapes(
    step: Callable[..., Any], state: Any, x: Any, size: int, shown: int, argname: str
) -> Any:
    """``step(state, x of size rows, mask)`` traced abstractly (its jaxpr); a
    shape mismatch names ``argname`` with ``shown`` rows."""
    try:
        return jax.make_jaxpr(step)(
            state,
            compiler.batch_spec(x, size),
            jax.ShapeDtypeStruct((size,), jnp.float32),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{argname}: the model cannot be applied to x of "
            f"{compiler.shapes(compiler.batch_spec(x, shown))} with "
            f"params of {compiler.shapes(state.params)}: {compiler.first_line(error)}. "
            "Check x's feature shape against the model."
        ) from None
