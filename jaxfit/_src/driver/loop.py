"""The one epoch/batch loop, a generator shared by the sync and async fronts.

The loop yields ``None`` (to its front) exactly at yield points. Between them it
only dispatches compiled blocks, sized by the yield policy: no host-device sync.
At a yield point it waits for the device, fetches the batch logs of everything
run since the last one in one transfer and calls the batch hooks for each of
those batches, in order, with that batch's own logs. Before anything that
blocks (a program's first compile, the device at a yield point or an epoch's
end, a stream's producer) it yields a ``Wait``: ``fit_async`` runs it on another
thread, so the event loop never waits; the sync front skips it and the loop
blocks where it would anyway.

After each train call (a step boundary; with fused steps, the block's end) the
loop asks ``preemption.due()`` (a flag read in one process): a SIGTERM makes that
boundary a yield point and ends the fit with ``Preempted``. A train call XLA
fails (out of memory) puts the state before it back (``memory``).
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import sys
import warnings
from collections.abc import Generator
from typing import Any

import jax
import numpy as np

from jaxfit._src.core import hyperparams, placement
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import compiler, evaluating, memory, preemption, progress
from jaxfit._src.driver import steps as steps_lib
from jaxfit._src.driver import warmup as warmup_lib
from jaxfit._src.driver.callback import CallbackList
from jaxfit._src.driver.compiler import Compiled
from jaxfit._src.driver.evaluating import EvalPlan
from jaxfit._src.driver.history import History
from jaxfit._src.driver.interrupts import InterruptGuard
from jaxfit._src.driver.session import FitSession, Position
from jaxfit._src.driver.steps import Blocks, Steps
from jaxfit._src.driver.yield_policy import YieldPolicy


@dataclasses.dataclass
class FitPlan:
    """A fit: which epochs, from which source, how often to yield and validate."""

    source: Any  # data.sources.ArraySource | StreamSource
    epochs: int
    initial_epoch: int
    policy: YieldPolicy
    validation: EvalPlan | None
    validation_freq: Any
    compiled: Compiled
    capacity: int = 1  # a block's slots: the most steps per compiled call
    # In-memory data: the next epoch's first blocks are gathered and put on the
    # device while the current epoch's last steps run (before its end-of-epoch
    # sync), so the next epoch starts without waiting for the host.
    prime: bool = False
    primed: dict = dataclasses.field(default_factory=dict)
    warmup: warmup_lib.Warmup = dataclasses.field(default_factory=warmup_lib.Warmup)
    batch_size: int = 0  # what memory errors quote (set by launch)
    call: str = "fit"  # or "fit_dataset" (set by launch)
    # block shapes of the train programs this fit has called: before a program's
    # first call its memory is checked and an intact state is held
    programs: set = dataclasses.field(default_factory=set)

    def __post_init__(self) -> None:
        self.policy.capacity = self.capacity

    def epoch_blocks(self, epoch: int, start: int) -> Blocks:
        return self.source.epoch_blocks(
            epoch, start, self.capacity, self.policy.block_steps
        )


def _should_validate(epoch: int, freq: Any) -> bool:
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return (epoch + 1) in freq


def launch(trainer: Any, plan: FitPlan, args: Any, batch_size: int) -> Steps:
    """A new session on ``trainer`` with History (and the progress bar) installed,
    then the guarded loop; nothing has run yet. A trainer with an
    ``install_callbacks(callbacks, verbose, params)`` method (a population)
    installs its own History and callbacks."""
    # only process 0 prints
    verbose = progress.resolve_verbose(args.verbose) if jax.process_index() == 0 else 0
    params = {
        "verbose": verbose,
        "epochs": plan.epochs,
        "steps": plan.source.steps,
        "batch_size": batch_size,
        "do_validation": plan.validation is not None,
    }
    trainer.session = session = FitSession(
        trainer.state, trainer.session.placement, trainer.seed
    )
    install = getattr(trainer, "install_callbacks", None)
    history, callbacks = (
        install(args.callbacks, verbose, params)
        if install is not None
        else install_callbacks(trainer, args.callbacks, verbose, params)
    )
    trainer.history, session.callbacks = history, callbacks.callbacks
    plan.batch_size = batch_size
    plan.call = "fit_dataset" if hasattr(args, "validation_batches") else "fit"
    return guarded(session, plan, callbacks, trainer.compile_spec)


def install_callbacks(
    trainer: Any, callbacks: Any, verbose: int, params: dict[str, Any]
) -> tuple[History, CallbackList]:
    """A fit's History, the given callbacks and (``verbose``) the progress bar."""
    history = History()
    installed = [history] + callback_lib.normalize(callbacks)
    if verbose:
        installed.append(progress.ProgressBar(verbose))
    return history, callback_lib.CallbackList(installed, trainer, params)


def guarded(
    session: FitSession, plan: FitPlan, callbacks: CallbackList, spec: compiler.Spec
) -> Steps:
    """``fit_loop`` on a copy of the state placed for the plan's compiled steps
    (with gradient accumulators when it accumulates), with SIGTERM recorded as
    a preemption request; however it ends, the session stops running and keeps
    the plain optimizer state. A preemption's line goes to stderr here, after
    ``on_train_end`` (a backup in flight is complete by then)."""
    session.running = True
    report = not preemption.active()  # else the outer caller (the runner) reports
    try:
        with preemption.handling():
            # A copy (the arrays the user holds are never donated), on the mesh.
            compiled, start = plan.compiled, session.state
            session.state = session.placement.place(
                compiler.accumulating(
                    spec, start, compiled.accumulate_steps, compiled.members
                ),
                compiled.state_shardings,
            )
            # The state before the copy stays intact through the first train
            # call (which may fail and take the donated copy with it).
            session.spare = memory.Spare(session.state, start)
            del start
            yield from fit_loop(session, plan, callbacks)
    except preemption.Preempted as stop:
        if report and jax.process_index() == 0:
            print(stop.message, file=sys.stderr, flush=True)
        raise
    finally:
        session.running, session.spare = False, None
        session.state = compiler.accumulated(session.state)
        plan.source.close()  # also when the loop never started


def fit_loop(session: FitSession, plan: FitPlan, callbacks: CallbackList) -> Steps:
    """Trains ``plan.initial_epoch .. plan.epochs - 1`` on ``session``; yields at
    yield points."""
    epoch_logs: dict[str, float] = {}
    guard = InterruptGuard()
    session.position, session.resume = Position(plan.initial_epoch), None
    session.finished = False  # read by on_train_end: a normal end, or an error
    session.preempted = None
    callbacks.call("on_train_begin")
    # A callback (BackupAndRestore) may have restored a checkpoint: start there.
    start = session.resume or Position(plan.initial_epoch)
    session.resume, session.position = None, start
    try:
        with guard.installed():
            for epoch in range(start.epoch, plan.epochs):
                begin = start if epoch == start.epoch else Position(epoch)
                if begin.stopped and begin.batch == 0:  # it had stopped after an epoch
                    session.stop_training = True
                    break
                epoch_logs = yield from _run_epoch(
                    session, plan, callbacks, guard, epoch, begin
                )
                if session.preempted is not None:
                    raise preemption.Preempted(
                        preemption.stopped_message(session, callbacks),
                        session.preempted,
                    )
                if session.stop_training:
                    break
        session.finished = True
    finally:
        plan.primed.clear()
        plan.source.close()
        plan.warmup.wait()
        callbacks.call("on_train_end", logs=epoch_logs)


def _run_epoch(
    session: FitSession,
    plan: FitPlan,
    callbacks: CallbackList,
    guard: InterruptGuard,
    epoch: int,
    begin: Position,
) -> Generator[Any, None, dict[str, float]]:
    """One epoch from ``begin.batch`` on: train, then close the epoch."""
    callbacks.call("on_epoch_begin", epoch)
    # Stopped mid-epoch before the checkpoint: only the epoch's end is left to run.
    session.stop_training = session.stop_training or begin.stopped
    steps, totals = yield from _train(session, plan, callbacks, guard, epoch, begin)
    if session.preempted is not None or _ran_out(session, plan, epoch, steps):
        return {}
    yield from steps_lib.sync(totals)
    with _failures(session, plan):
        logs = _epoch_logs(session, plan, totals)
    plan.policy.synced()  # the epoch's end is a sync: a step-time sample
    if plan.validation is not None and _should_validate(epoch, plan.validation_freq):
        val_logs = yield from evaluating.evaluate_steps(
            session.state, plan.validation, callbacks, plan.warmup
        )
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
    session.position = Position(epoch + 1)
    callbacks.call("on_epoch_end", epoch, logs=logs)
    _agree(session, plan.policy)
    yield
    return logs


def _train(
    session: FitSession,
    plan: FitPlan,
    callbacks: CallbackList,
    guard: InterruptGuard,
    epoch: int,
    begin: Position,
) -> Generator[Any, None, tuple[int, Any]]:
    """Dispatches the epoch's blocks; at each yield point delivers the batch logs
    run since the last one. Returns the batches of the epoch run and its totals."""
    hooks = ("on_train_batch_begin", "on_train_batch_end")
    totals = steps_lib.restored_totals(plan.compiled.empty_totals(), begin.totals)
    pending: list = []
    batch = steps = begin.batch
    processes, policy = jax.process_count(), plan.policy
    policy.reset()
    source = _epoch_source(plan, epoch, begin)
    with steps_lib.closing(source) as blocks:  # joins feeders
        while True:
            item = yield from _next(session, plan, blocks, pending, batch, callbacks)
            if item is None:
                break
            block, real = item
            steps += real
            first = yield from steps_lib.compile_first(
                plan.programs, plan.compiled.train_block, session.state, totals, block
            )
            if first:
                _first_call(session, plan, totals, block)
            totals, logs = _dispatch(session, plan, guard, totals, block, epoch, steps)
            policy.dispatched(real, compiled=first)
            pending.append((logs, real))
            if policy.measuring():  # the first block: how long a step takes
                yield from _measure(session, plan, logs)
            guard.check()
            # a step boundary (a fused block's end): the same call on every process
            preempted = preemption.due(processes)
            if preempted or policy.due():
                yield from steps_lib.sync(logs)
                batch = _yield_point(
                    session, plan, pending, batch, callbacks, epoch, hooks
                )
                if preempted:
                    session.preempted = preemption.requested() or signal.SIGTERM
                    break
                yield
                policy.reset()
                if session.stop_training:
                    break
    if session.preempted is not None:
        return steps, totals
    _prime(session, plan, epoch)
    if plan.warmup.busy():
        yield steps_lib.Wait(plan.warmup.wait)
    plan.warmup.wait()  # what compiles ahead is done by the first epoch's end
    if pending:
        batch, last = _flush(session, plan, pending, batch, callbacks)
        callbacks.call("on_yield", epoch, batch - 1, logs=last)
    return steps, totals


def _next(
    session: FitSession,
    plan: FitPlan,
    blocks: Any,
    pending: list,
    batch: int,
    callbacks: CallbackList,
) -> Generator[Any, None, Any]:
    """The next block (``None`` at the end); when the data fails, the batches
    that ran before reach the batch hooks first."""
    try:
        return (yield from steps_lib.next_block(blocks))
    except Exception:
        if pending:
            _flush(session, plan, pending, batch, callbacks)
        raise


def _flush(
    session: FitSession,
    plan: FitPlan,
    pending: list,
    batch: int,
    callbacks: CallbackList,
) -> tuple[int, dict[str, float]]:
    """The pending batch logs to the train batch hooks (a sync)."""
    with _failures(session, plan):
        return steps_lib.deliver(
            plan.compiled.log_names,
            pending,
            batch,
            callbacks,
            "on_train_batch_begin",
            "on_train_batch_end",
            plan.compiled.members,
        )


def _measure(session: FitSession, plan: FitPlan, logs: Any) -> Steps:
    """Waits for the block just dispatched and takes its time as the first
    step-time sample (several processes agree on process 0's)."""
    yield from steps_lib.sync(logs)
    with _failures(session, plan):
        jax.block_until_ready(logs)
    plan.policy.synced()
    if plan.policy.shared:
        _agree(session, plan.policy)


def _first_call(session: FitSession, plan: FitPlan, totals: Any, block: Any) -> None:
    """Before a train program's first call: the programs compiled ahead (at the
    fit's first call), and the memory check that may refuse it."""
    if not plan.warmup.started:  # compiled beside this block's program
        _warm(plan, session.state, totals, session.placement)
    if plan.call == "fit_dataset":  # what errors quote: its batches
        plan.batch_size = block["mask"].shape[-1]
    memory.before_first_call(
        session, plan.compiled.train_block, totals, block, plan.call, plan.batch_size
    )


def _dispatch(
    session: FitSession,
    plan: FitPlan,
    guard: InterruptGuard,
    totals: Any,
    block: Any,
    epoch: int,
    steps: int,
) -> tuple[Any, Any]:
    """One train call, the state and the position (``steps`` of ``epoch`` run)
    stored before a Ctrl-C can land; a call XLA fails at dispatch puts the state
    before it back."""
    with guard.critical():
        state = session.state
        try:
            session.state, totals, logs = plan.compiled.train_block(
                state, totals, block
            )
        except memory.RUNTIME_ERROR as error:  # XLA failed it at dispatch
            memory.failed(session, plan.call, plan.batch_size, error, state)
            raise
        session.position = Position(epoch, steps, totals)
    return totals, logs


def _failures(session: FitSession, plan: FitPlan) -> Any:
    """``memory.failures`` for this fit, around a sync: a train call that failed
    (XLA reports it there) puts the state before it back, and out of memory
    becomes jaxfit's error."""
    return memory.failures(session, plan.call, plan.batch_size)


def _warm(plan: FitPlan, state: Any, totals: Any, where: Any) -> None:
    """At the fit's first call: compiles the validation steps in the background,
    while that call compiles its own program."""
    validation = plan.validation
    eval_specs = getattr(validation and validation.source, "eval_specs", None)
    jobs = []
    if (
        eval_specs is not None
        and validation is not None
        and any(
            _should_validate(epoch, plan.validation_freq)
            for epoch in range(plan.initial_epoch, plan.epochs)
        )
    ):
        state, totals = warmup_lib.specs(state), warmup_lib.specs(totals)
        data = warmup_lib.sharded(where.batch_sharding(2))  # as put_block puts
        replicated = warmup_lib.sharded(
            getattr(jax.tree.leaves(totals)[0], "sharding", None)
        )
        val = validation.compiled
        val_totals = replicated(jax.eval_shape(val.empty_totals))
        spec = data(eval_specs(validation.capacity))
        jobs.append((val.eval_block, (state, val_totals, spec)))
    plan.warmup.start(jobs)


def _epoch_source(plan: FitPlan, epoch: int, begin: Position) -> Blocks:
    """The epoch's blocks from ``begin.batch`` on (primed ones when there are)."""
    primed = plan.primed.pop(epoch, None) if begin.batch == 0 else None
    if begin.stopped:
        return ()
    return primed if primed is not None else plan.epoch_blocks(epoch, begin.batch)


def _yield_point(
    session: FitSession,
    plan: FitPlan,
    pending: list,
    batch: int,
    callbacks: CallbackList,
    epoch: int,
    hooks: tuple[str, str],
) -> int:
    """Waits for the device, delivers the pending batch logs, calls on_yield,
    agrees on stopping."""
    with _failures(session, plan):
        jax.block_until_ready(pending[-1][0])
        plan.policy.synced()
        batch, last = steps_lib.deliver(
            plan.compiled.log_names,
            pending,
            batch,
            callbacks,
            *hooks,
            plan.compiled.members,
        )
    callbacks.call("on_yield", epoch, batch - 1, logs=last)
    _agree(session, plan.policy)
    return batch


def _agree(session: FitSession, policy: YieldPolicy) -> None:
    """At a yield point: every process stops together, as process 0 decided
    (EarlyStopping...), learns of a preemption any of them received (it then
    stops after the next train call, all at the same one), and takes process 0's
    step time (so that all size blocks and place yield points alike)."""
    session.stop_training, step_s = preemption.agreed(
        session.stop_training, jax.process_count(), policy.sample()
    )
    if policy.shared:
        policy.agree(step_s)


def _prime(session: FitSession, plan: FitPlan, epoch: int) -> None:
    """Puts the next epoch's first block on the device before this epoch's sync."""
    if plan.prime and epoch + 1 < plan.epochs and not session.stop_training:
        following = iter(plan.epoch_blocks(epoch + 1, 0))
        first = next(following, None)
        if first is not None:
            plan.primed[epoch + 1] = itertools.chain([first], following)


def _ran_out(session: FitSession, plan: FitPlan, epoch: int, steps: int) -> bool:
    """tfjs' warning when a stream ran out before ``steps_per_epoch`` batches;
    True when the epoch ran no batch at all (it then has no logs)."""
    required = plan.source.required_steps
    if required is None or steps >= required or session.stop_training:
        return False
    warnings.warn(
        f"Your dataset ran out of data after {steps} of the {required} batches of "
        f"epoch {epoch}; interrupting training. Make sure that your dataset can "
        f"generate at least `steps_per_epoch * epochs` batches (in this case, "
        f"{required * plan.epochs} batches), e.g. by repeating it.",
        UserWarning,
        stacklevel=4,
    )
    session.stop_training = True
    return steps == 0


def _epoch_logs(session: FitSession, plan: FitPlan, totals: Any) -> dict[str, float]:
    """The epoch's loss and metrics (one sync), the learning rate and loss scale."""
    compiled = plan.compiled
    logs = steps_lib.host_values(
        compiled.log_names, placement.fetch(totals), members=compiled.members
    )
    learning_rate = hyperparams.get(session.state.opt_state)
    if learning_rate is not None:  # as Keras' LR callbacks log it
        logs["learning_rate"] = _host(learning_rate)
    if session.state.loss_scale is not None:  # mixed_float16: the dynamic scale
        logs["loss_scale"] = _host(session.state.loss_scale.scale)
    return logs


def _host(value: Any) -> Any:
    """A logged scalar as a float; a population's (one per member) as an array."""
    value = placement.fetch(value)
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64)
