"""Gradient accumulation weighted by real samples (``fit(accumulate_steps=k)``).

Each train step's gradient is the mean over its batch's real (unpadded) samples.
``accumulate`` sums ``count * gradient`` over the steps of a group and, at the
group's end, applies the inner optimizer to ``sum(n_i * g_i) / sum(n_i)``: the
mean gradient over the group's real samples, which is the gradient of one batch
made of those samples (sample weights included, as the per-batch loss is
``sum(w * loss) / count``).

A group ends after ``k`` steps or at a ragged batch (fewer real samples than
``batch_size``: the last batch of an epoch whose size is not a multiple of it).
So on arrays each ragged epoch starts a fresh group, and ``k`` batches of ``b``
equal one batch of ``k * b`` however many samples the epoch has. When every
batch is full, groups run on across epoch boundaries (as ``optax.MultiSteps``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class AccumulateState(NamedTuple):
    """The state of ``accumulate``.

    Attributes:
      mini_step: int32, the steps accumulated in the current group.
      count: float32, the real samples accumulated in the current group.
      grads: the sum of ``count * gradient`` so far (at least float32).
      inner_opt_state: the optimizer's own state.
    """

    mini_step: Any
    count: Any
    grads: Any
    inner_opt_state: Any


def _acc_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def around(params: Any, inner_opt_state: Any) -> AccumulateState:
    """A fresh (empty) accumulation around an existing optimizer state."""
    return AccumulateState(
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.float32),
        jax.tree.map(lambda p: jnp.zeros(p.shape, _acc_dtype(p.dtype)), params),
        inner_opt_state,
    )


def accumulate(
    inner: optax.GradientTransformation, every: int, batch_size: int
) -> optax.GradientTransformationExtraArgs:
    """``inner`` applied once per group of steps to the group's mean gradient.

    Args:
      inner: the optimizer.
      every: the steps of a full group (``accumulate_steps``).
      batch_size: the real samples of a full batch; a step with fewer ends its
        group.

    Returns:
      A transformation whose ``update`` takes the step's real-sample count as
      the keyword argument ``count`` (a float32 scalar) and returns zero updates
      until the group ends.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return around(params, inner.init(params))

    def update(updates, state, params=None, *, count, **extra_args):
        grads = jax.tree.map(
            lambda a, g: a + g.astype(a.dtype) * count, state.grads, updates
        )
        total = state.count + count
        close = (state.mini_step + 1 >= every) | (count < batch_size)

        def apply(_):
            mean = jax.tree.map(
                lambda a, g: (a / jnp.maximum(total, 1.0)).astype(g.dtype),
                grads,
                updates,
            )
            return inner.update(mean, state.inner_opt_state, params, **extra_args)

        def hold(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner_opt_state

        new_updates, inner_state = jax.lax.cond(close, apply, hold, None)
        keep = lambda new: jnp.where(close, jnp.zeros_like(new), new)  # noqa: E731
        return new_updates, AccumulateState(
            jnp.where(close, 0, state.mini_step + 1).astype(jnp.int32),
            keep(total),
            jax.tree.map(keep, grads),
            inner_state,
        )

    return optax.GradientTransformationExtraArgs(init, update)
