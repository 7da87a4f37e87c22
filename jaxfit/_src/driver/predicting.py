"""``predict``: the model over padded batches, the real rows back in order."""

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
from jaxfit._src.driver import compiler
from jaxfit._src.driver.callback import CallbackList


def predict(
    predict_step: Callable[..., Any],
    state: Any,
    where: Placement,
    x: Any,
    batch_size: int,
    callbacks: Callable[[int], CallbackList],
) -> Any:
    """Runs ``predict_step(state, x_batch, mask)`` over ``x`` in padded batches;
    ``callbacks(steps)`` gets the ``on_predict_*`` hooks."""
    arrays.require_arrays(x, "x", "the inputs")
    data = arrays.to_numpy(x, "x")
    n = arrays.num_samples({"x": data})
    if n == 0:
        raise ValueError(errors.expected("x", "at least one sample", data))
    batches = arrays.Batches(
        n,
        batch_size,
        shuffle=False,
        seed=0,
        pad_to=where.padded,
    )
    _check(predict_step, state, data, batches)
    callback_list = callbacks(batches.steps_per_epoch)
    callback_list.call("on_predict_begin")
    index, mask = batches.epoch_indices(0)
    rows = where.local_rows(index.shape[1])
    outputs = []
    for start in range(index.shape[0]):
        x_batch, mask_batch = where.put_batch(
            (arrays.take(data, index[start][rows]), mask[start][rows]), index.shape[1]
        )
        outputs.append(predict_step(state, x_batch, mask_batch))
    host = placement.gather(outputs)
    # Padding rows sit at the end of *every* batch once a batch is padded to a
    # multiple of the data axis (and at the end of the ragged last one): keep the
    # real rows by the mask, which is in sample order (no shuffle).
    real = mask.reshape(-1) > 0
    result = jax.tree.map(lambda *parts: np.concatenate(parts)[real], *host)
    callback_list.call("on_predict_end")
    return result


def _check(
    predict_step: Callable[..., Any], state: Any, x: Any, batches: arrays.Batches
) -> None:
    """Traces the predict step once (jit reuses it): a shape mismatch names x."""
    size = batches.padded_size
    try:
        jax.eval_shape(
            predict_step,
            state,
            compiler.batch_spec(x, size),
            jax.ShapeDtypeStruct((size,), jnp.float32),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"x: the model cannot be applied to x of "
            f"{compiler.shapes(compiler.batch_spec(x, batches.batch_size))} with "
            f"params of {compiler.shapes(state.params)}: {compiler.first_line(error)}. "
            "Check x's feature shape against the model."
        ) from None
