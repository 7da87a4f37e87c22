"""Pure inference steps: the eval and predict computations jaxfit jits.

``make_eval_step`` computes a batch's loss and metric sums without changing the
state; ``make_predict_step`` returns the model's outputs in inference mode. A
batch is the dict ``core.step`` describes. Both take an optional precision
policy (casts around ``apply``; no loss scaling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
