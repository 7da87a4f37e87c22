"""Evaluation: an eval plan's blocks through the compiled eval step (``evaluate``,
``evaluate_dataset`` and validation inside ``fit``).

Validation follows the fit's yield policy (its own instance: an eval step's time
differs from a train step's), so a long validation has yield points too, where
the pending test batch logs reach the test batch hooks; ``evaluate`` runs
blocks as large as they can be and syncs once, at the end.

Each batch gets a fresh key split off a chain that starts at the ``rng`` of the
state passed in (``evaluate``: its call's key, see ``inference_rng``;
validation: the training rng) and continues across blocks; the state itself is
never changed or stored back.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Generator
from typing import Any

import jax

from jaxfit._src.core import placement
from jaxfit._src.driver import memory
from jaxfit._src.driver import warmup as warmup_lib
from jaxfit._src.driver.callback import CallbackList
from jaxfit._src.driver.compiler import Compiled
from jaxfit._src.driver.steps import (
    Blocks,
    Wait,
    closing,
    compile_first,
    deliver,
    finish,
    host_values,
    next_block,
    sync,
)
from jaxfit._src.driver.yield_policy import YieldPolicy


@dataclasses.dataclass
class EvalPlan:
    """One evaluation pass: a source's eval blocks through the compiled eval step."""

    source: Any  # data.sources.ArraySource | StreamSource
    compiled: Compiled
    limit: int | None = None  # at most this many batches (validation_steps...)
    # evaluate_dataset(batches=N) / validation_batches on a stream: the batches
    # asked for, for tfjs' ran-out-of-data warning; None: whatever the data gives.
    required_batches: int | None = None
    capacity: int = 1  # a block's slots: the most eval steps per compiled call
    # sizes the blocks and places the yield points (validation: fit's interval)
    policy: YieldPolicy = dataclasses.field(
        default_factory=lambda: YieldPolicy(None, False)
    )
    programs: set = dataclasses.field(default_factory=set)  # shapes called so far

    def blocks(self) -> Blocks:
        self.policy.capacity = self.capacity
        return self.source.eval_blocks(
            self.limit, self.capacity, self.policy.block_steps
        )


def evaluate_loop(
    state: Any,
    plan: EvalPlan,
    callbacks: CallbackList,
    warmup: warmup_lib.Warmup | None = None,
) -> dict[str, float]:
    """Runs the eval step over ``plan`` and returns the epoch logs."""
    return finish(evaluate_steps(state, plan, callbacks, warmup))


def evaluate_steps(
    state: Any,
    plan: EvalPlan,
    callbacks: CallbackList,
    warmup: warmup_lib.Warmup | None = None,
) -> Generator[Any, None, dict[str, float]]:
    """The eval step over ``plan``, yielding at its policy's yield points (where
    the pending test batch logs reach the batch hooks); returns the logs."""
    if warmup is not None:  # the eval steps may be compiling in the background
        if warmup.busy():
            yield Wait(warmup.wait)
        warmup.wait()
    callbacks.call("on_test_begin")
    pending: list = []
    rows = [0]  # the batch size of the last block, for an out-of-memory error
    with memory.evaluating(rows):
        ran, totals = yield from _eval_blocks(state, plan, callbacks, pending, rows)
        if not ran:
            raise ValueError("validation data: expected at least one batch, got none.")
        _warn_if_short(ran, plan.required_batches)
        _deliver_test(plan, pending, ran, callbacks)
        yield from sync(totals)
        logs = host_values(
            plan.compiled.log_names,
            placement.fetch(totals),
            members=plan.compiled.members,
        )
    callbacks.call("on_test_end", logs=logs)
    return logs


def _eval_blocks(
    state: Any,
    plan: EvalPlan,
    callbacks: CallbackList,
    pending: list,
    rows: list[int],
) -> Generator[Any, None, tuple[int, Any]]:
    """Dispatches the eval blocks; at yield points the pending logs reach the
    test batch hooks. Returns the batches run and the totals."""
    policy, ran, run = plan.policy, 0, plan.compiled.eval_block
    totals = plan.compiled.empty_totals()
    rng = state.rng  # the chain of batch keys, continued from block to block
    policy.reset()
    with closing(plan.blocks()) as blocks:
        while (item := (yield from next_block(blocks))) is not None:
            block, real = item
            rows[0] = block["mask"].shape[-1]
            first = yield from compile_first(plan.programs, run, state, totals, block)
            # the state is not donated, nor changed: only the key chain advances
            rng, totals, logs = run(state.replace(rng=rng), totals, block)
            policy.dispatched(real, compiled=first)
            pending.append((logs, real))
            ran += real
            measuring = policy.measuring()  # the first block only measures
            if measuring or policy.due():
                yield from sync(logs)
                jax.block_until_ready(logs)
                policy.synced()
                if not measuring:
                    _deliver_test(plan, pending, ran, callbacks)
                    yield
                    policy.reset()
    return ran, totals


def _deliver_test(
    plan: EvalPlan, pending: list, ran: int, callbacks: CallbackList
) -> None:
    """The pending test batch logs (the last of the ``ran`` batches) to the test
    batch hooks, if any wants them."""
    hooks = ("on_test_batch_begin", "on_test_batch_end")
    if pending and (callbacks.wants(hooks[0]) or callbacks.wants(hooks[1])):
        first = ran - sum(real for _, real in pending)
        deliver(
            plan.compiled.log_names,
            pending,
            first,
            callbacks,
            *hooks,
            plan.compiled.members,
        )
    pending.clear()


def _warn_if_short(ran: int, required: int | None) -> None:
    if required is not None and ran < required:
        warnings.warn(  # tfjs' evaluateDataset warning
            f"Your dataset iterator ran out of data during evaluation after {ran} "
            f"batches; interrupting evaluation. Make sure that your dataset can "
            f"generate at least `batches` batches (in this case, {required} "
            "batches), e.g. by repeating it.",
            UserWarning,
            stacklevel=4,
        )
