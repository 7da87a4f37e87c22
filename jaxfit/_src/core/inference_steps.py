"""Pure inference steps: the eval and predict computations jaxfit jits.

``make_eval_step`` computes a batch's loss and metric sums without changing the
state; ``make_predict_step`` returns the model's outputs in inference mode. A
batch is the dict ``core.step`` describes. Both take an optional precision
policy (casts around ``apply``; no loss scaling). Each uses ``state.rng`` as
its batch's key, as it is.

Fresh keys at inference: ``keyed`` and ``make_keyed_predict_step`` split a
batch key off a carried key per batch (and fold in ``INFERENCE_TAG``, so that a
validation chain started from the training rng never repeats a training
step's key); the carried key comes back, so a pass of several blocks continues
one chain. The key of a batch depends only on the chain's start and the
batch's place in the pass, never on how batches are grouped into blocks or
sharded over devices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax

from jaxfit._src.core import precision
from jaxfit._src.core.state import TrainState

if TYPE_CHECKING:
    from jaxfit._src.core.step import Objective


def _resolve(policy: str | precision.Policy | None) -> precision.Policy:
    return precision.policy("float32" if policy is None else policy)


def make_eval_step(
    apply, objective: Objective, policy: str | precision.Policy | None = None
):
    """Returns ``eval_step(state, batch) -> (state, logs)``; the state is unchanged.

    ``policy`` is as in ``make_train_step`` (casts only; no loss scaling).
    """
    compute_apply = precision.make_compute_apply(_resolve(policy), apply)

    def eval_step(state: TrainState, batch: dict[str, Any]):
        y_pred, _ = compute_apply(
            state.params,
            state.model_state,
            batch["x"],
            train=False,
            rng=state.rng,
            mask=batch["mask"],
        )
        mask = batch["mask"]
        weights = tuple(w * mask for w in batch["sample_weight"])
        parts = objective.per_sample(batch["y"], y_pred)
        return state, objective.batch_logs(batch["y"], y_pred, parts, weights, mask)

    return eval_step


def make_predict_step(apply, policy: str | precision.Policy | None = None):
    """Returns ``predict_step(state, x, mask) -> y_pred`` in inference mode.

    ``policy`` is as in ``make_train_step``; under a casting policy the floating
    outputs come back float32.
    """
    compute_apply = precision.make_compute_apply(_resolve(policy), apply)

    def predict_step(state: TrainState, x: Any, mask: Any = None):
        y_pred, _ = compute_apply(
            state.params, state.model_state, x, train=False, rng=state.rng, mask=mask
        )
        return y_pred

    return predict_step


INFERENCE_TAG = 0x1F  # folded into every inference batch key


def _next_key(rng: Any) -> tuple[Any, Any]:
    """``(carry, batch key)``: the chain's next key and this batch's."""
    carry, key = jax.random.split(rng)
    return carry, jax.random.fold_in(key, INFERENCE_TAG)


def keyed(step):
    """``step`` (``(state, batch) -> (state, logs)``, the state unchanged) run on
    a fresh batch key: the returned state carries the advanced key."""

    def keyed_step(state: TrainState, batch: dict[str, Any]):
        carry, key = _next_key(state.rng)
        _, logs = step(state.replace(rng=key), batch)
        return state.replace(rng=carry), logs

    return keyed_step


def make_keyed_predict_step(apply, policy: str | precision.Policy | None = None):
    """``predict_step(state, x, mask) -> (y_pred, rng)``: ``make_predict_step``'s
    on a fresh batch key split off ``state.rng``; ``rng`` is the advanced key."""
    predict_step = make_predict_step(apply, policy)

    def keyed_predict_step(state: TrainState, x: Any, mask: Any = None):
        carry, key = _next_key(state.rng)
        return predict_step(state.replace(rng=key), x, mask), carry

    return keyed_predict_step


def make_predict_block(apply, policy: str | precision.Policy | None = None):
    """``block(state, x, mask) -> (y_pred, rng)`` over a block of batches (``x``
    and ``mask`` with a leading axis of slots, the real ones first): the keyed
    predict step on each real batch in turn (a ``lax.fori_loop`` with a trip
    count read from the mask, as ``core.step.make_block``); the empty slots'
    outputs are zeros."""
    step = make_keyed_predict_step(apply, policy)

    def block(state: TrainState, x: Any, mask: Any):
        slots = mask.shape[0]
        if slots == 1:
            y_pred, rng = step(state, jax.tree.map(lambda a: a[0], x), mask[0])
            return jax.tree.map(lambda a: a[None], y_pred), rng
        take = lambda a, i: jax.lax.dynamic_index_in_dim(a, i, keepdims=False)  # noqa: E731
        shapes = jax.eval_shape(
            step, state, jax.tree.map(lambda a: take(a, 0), x), mask[0]
        )[0]
        out = jax.tree.map(
            lambda s: jax.numpy.zeros((slots, *s.shape), s.dtype), shapes
        )
        real = jax.numpy.sum(jax.numpy.any(mask > 0, axis=1)).astype(jax.numpy.int32)

        def one(i, carry):
            rng, out = carry
            y_pred, rng = step(
                state.replace(rng=rng),
                jax.tree.map(lambda a: take(a, i), x),
                take(mask, i),
            )
            return rng, jax.tree.map(lambda buf, v: buf.at[i].set(v), out, y_pred)

        rng, out = jax.lax.fori_loop(0, real, one, (state.rng, out))
        return out, rng

    return block
