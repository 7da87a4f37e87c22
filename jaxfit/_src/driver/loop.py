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

import contextlib
import dataclasses
import itertools
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src.core import hyperparams, placement
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import compiler, memory, preemption, progress
from jaxfit._src.driver import warmup as warmup_lib
from jaxfit._src.driver.callback import CallbackList
from jaxfit._src.driver.compiler import Compiled
from jaxfit._src.driver.history import History
from jaxfit._src.driver.session import FitSession, Position
from jaxfit._src.driver.yield_policy import YieldPolicy

# (device block, number of real batches in it: they come first, the rest of its
# slots are padding the compiled block skips)
Blocks = Iterable[tuple[Any, int]]
Steps = Generator[Any, None, Any]  # yields None (yield points) and Wait


class Wait:
    """Something the loop is about to block on: ``fit_async`` calls it on another
    thread first. It never raises (the loop's own wait raises what it would)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn

    def __call__(self) -> None:
        try:
            self.fn()
        except Exception:  # noqa: BLE001 - raised again where the loop waits
            pass


def yield_points(steps: Steps) -> Iterator[None]:
    """``steps`` without its ``Wait`` items: each ``next`` runs to the next
    yield point; closing it closes ``steps``."""
    try:
        for item in steps:
            if item is None:
                yield
    finally:
        steps.close()


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


def host_values(
    names: list[str], sums: dict[str, Any], j: int | None = None
) -> dict[str, float]:
    """``total / count`` for each log, in ``names`` order (0 where count is 0)."""
    values = {}
    for name in names:
        state = sums[name]
        total, count = np.asarray(state.total), np.asarray(state.count)
        if j is not None:
            total, count = total[j], count[j]
        values[name] = float(total / count) if count > 0 else 0.0
    return values


def _deliver(names, pending, first_batch, callbacks: CallbackList, begin, end):
    """Fetches pending batch logs in one transfer and calls the batch hooks."""
    if not (callbacks.wants(begin) or callbacks.wants(end)):
        # Nobody reads per-batch logs: only the last batch's, for on_yield.
        batch = first_batch + sum(real for _, real in pending)
        last = {}
        if callbacks.wants("on_yield"):
            logs, real = pending[-1]
            last = host_values(names, placement.fetch(logs), real - 1)
        pending.clear()
        return batch, last
    fetched = placement.fetch([logs for logs, _ in pending])
    batch, last = first_batch, {}
    for logs, (_, real) in zip(fetched, pending):
        for j in range(real):
            callbacks.call(begin, batch, logs={})
            last = host_values(names, logs, j)
            callbacks.call(end, batch, logs=last)
            batch += 1
    pending.clear()
    return batch, last


class _InterruptGuard:
    """Defers Ctrl-C that lands between a step's dispatch and storing its result,
    and never loses one.

    The dispatched call consumes (donates) the previous state; if
    KeyboardInterrupt struck before the new state was stored, ``trainer.state``
    would point at deleted buffers. Inside ``critical()`` the interrupt is held
    and raised right after; elsewhere it is raised at once, as usual. Python
    drops an exception raised inside a garbage-collection callback (jaxlib runs
    one), so every Ctrl-C is also recorded, and ``check()`` at each step boundary
    raises it again if the fit is still running.
    """

    def __init__(self) -> None:
        self.in_critical = False
        self.pending = False
        self.interrupted = False

    def handler(self, signum, frame) -> None:
        del signum, frame
        self.interrupted = True
        if self.in_critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raises a Ctrl-C that came during this fit and was lost on its way."""
        if self.interrupted:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        usable = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if not usable:  # another handler owns Ctrl-C, or not the main thread
            yield
            return
        signal.signal(signal.SIGINT, self.handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.in_critical = True
        try:
            yield
        finally:
            self.in_critical = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def _closing(blocks: Blocks) -> Iterator[Iterator[tuple[Any, int]]]:
    """Iterates ``blocks`` and closes it (if it can be closed) however we leave."""
    iterator = iter(blocks)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _should_validate(epoch: int, freq: Any) -> bool:
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return (epoch + 1) in freq


def finish(steps: Steps) -> Any:
    """Runs ``steps`` to its end, skipping its ``Wait`` items (the sync front),
    and returns its value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


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
        yield from _sync(totals)
        logs = host_values(plan.compiled.log_names, placement.fetch(totals))
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
    policy.reset()
    with _closing(plan.blocks()) as blocks:
        while (item := (yield from _next(blocks))) is not None:
            block, real = item
            rows[0] = block["mask"].shape[-1]
            first = yield from _compile(plan.programs, run, state, totals, block)
            totals, logs = run(state, totals, block)  # the state is not donated
            policy.dispatched(real, compiled=first)
            pending.append((logs, real))
            ran += real
            measuring = policy.measuring()  # the first block only measures
            if measuring or policy.due():
                yield from _sync(logs)
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
        _deliver(plan.compiled.log_names, pending, first, callbacks, *hooks)
    pending.clear()


def _next(blocks: Iterator[Any]) -> Generator[Any, None, Any]:
    """The next block (``None`` at the end); a stream's feeder is waited for
    first through a ``Wait``."""
    wait = getattr(blocks, "wait", None)
    if wait is not None and not getattr(blocks, "ready", lambda: False)():
        yield Wait(wait)
    return next(blocks, None)


def _sync(tree: Any) -> Generator[Any, None, None]:
    """A ``Wait`` for ``tree``'s arrays unless they are ready; the caller then
    blocks on them (where a failed call's error is turned into jaxfit's)."""
    if not all(_ready(leaf) for leaf in jax.tree.leaves(tree)):
        yield Wait(lambda: jax.block_until_ready(tree))


def _ready(leaf: Any) -> bool:
    is_ready = getattr(leaf, "is_ready", None)
    return is_ready is None or bool(is_ready())


def _compile(programs: set, jitted: Any, *args: Any) -> Generator[Any, None, bool]:
    """Before a program's first call (of this block shape): a ``Wait`` that
    compiles it (``fit_async`` compiles off the event loop; JAX keeps the
    executable for the call). True when this is that first call."""
    shape = args[-1]["mask"].shape
    if shape in programs:
        return False
    programs.add(shape)
    specs = tuple(warmup_lib.specs(arg) for arg in args)
    yield Wait(lambda: jitted.lower(*specs).compile())
    return True


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


def launch(trainer: Any, plan: FitPlan, args: Any, batch_size: int) -> Steps:
    """A new session on ``trainer`` with History (and the progress bar) installed,
    then the guarded loop; nothing has run yet."""
    # only process 0 prints
    verbose = progress.resolve_verbose(args.verbose) if jax.process_index() == 0 else 0
    history = History()
    installed = [history] + callback_lib.normalize(args.callbacks)
    if verbose:
        installed.append(progress.ProgressBar(verbose))
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
    callbacks = callback_lib.CallbackList(installed, trainer, params)
    trainer.history, session.callbacks = history, callbacks.callbacks
    plan.batch_size = batch_size
    plan.call = "fit_dataset" if hasattr(args, "validation_batches") else "fit"
    return guarded(session, plan, callbacks, trainer.compile_spec)


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
                compiler.accumulating(spec, start, compiled.accumulate_steps),
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
    guard = _InterruptGuard()
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
                        _preempted_message(session, callbacks), session.preempted
                    )
                if session.stop_training:
                    break
        session.finished = True
    finally:
        plan.primed.clear()
        plan.source.close()
        plan.warmup.wait()
        callbacks.call("on_train_end", logs=epoch_logs)


def _preempted_message(session: FitSession, callbacks: CallbackList) -> str:
    """Where a preempted fit stopped, and how to resume it: one line."""
    where = session.position
    name = signal.Signals(session.preempted or signal.SIGTERM).name
    head = (
        f"jaxfit: {name} (preemption): training stopped at epoch {where.epoch} "
        f"after {where.batch} of its batches"
    )
    backup = next((cb for cb in callbacks.callbacks if hasattr(cb, "backup_dir")), None)
    status = 128 + (session.preempted or signal.SIGTERM)
    if backup is None:
        return (
            f"{head}; nothing was saved (no BackupAndRestore): trainer.state is the "
            f"state there (exit status {status})."
        )
    return (
        f"{head}; a rerun of the same fit with BackupAndRestore("
        f"{backup.backup_dir!r}) resumes from its last backup (exit status {status})."
    )


def _run_epoch(
    session: FitSession,
    plan: FitPlan,
    callbacks: CallbackList,
    guard: _InterruptGuard,
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
    yield from _sync(totals)
    with _failures(session, plan):
        logs = _epoch_logs(session, plan, totals)
    plan.policy.synced()  # the epoch's end is a sync: a step-time sample
    if plan.validation is not None and _should_validate(epoch, plan.validation_freq):
        val_logs = yield from evaluate_steps(
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
    guard: _InterruptGuard,
    epoch: int,
    begin: Position,
) -> Generator[Any, None, tuple[int, Any]]:
    """Dispatches the epoch's blocks; at each yield point delivers the batch logs
    run since the last one. Returns the batches of the epoch run and its totals."""
    hooks = ("on_train_batch_begin", "on_train_batch_end")
    totals = begin.totals if begin.totals is not None else plan.compiled.empty_totals()
    pending: list = []
    batch = steps = begin.batch
    processes, policy = jax.process_count(), plan.policy
    policy.reset()
    with _closing(_epoch_source(plan, epoch, begin)) as blocks:  # joins feeders
        while True:
            try:
                item = yield from _next(blocks)
            except Exception:  # the data failed: what ran before reaches the hooks
                if pending:
                    with _failures(session, plan):
                        _deliver(
                            plan.compiled.log_names, pending, batch, callbacks, *hooks
                        )
                raise
            if item is None:
                break
            block, real = item
            steps += real
            first = yield from _compile(
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
                yield from _sync(logs)
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
        yield Wait(plan.warmup.wait)
    plan.warmup.wait()  # what compiles ahead is done by the first epoch's end
    if pending:
        with _failures(session, plan):
            batch, last = _deliver(
                plan.compiled.log_names, pending, batch, callbacks, *hooks
            )
        callbacks.call("on_yield", epoch, batch - 1, logs=last)
    return steps, totals


def _measure(session: FitSession, plan: FitPlan, logs: Any) -> Steps:
    """Waits for the block just dispatched and takes its time as the first
    step-time sample (several processes agree on process 0's)."""
    yield from _sync(logs)
    with _failures(session, plan):
        jax.block_until_ready(logs)
    plan.policy.synced()
    if plan.policy.shared:
        _agree(session, plan.policy)


def _first_call(session: FitSession, plan: FitPlan, totals: Any, block: Any) -> None:
    """Before a train program's first call: the programs compiled ahead (at the
    fit's first call), and the memory check that may refuse it."""
    if not plan.warmup.started:  # compiled beside this block's program
        _warm(plan, session.state, totals, block)
    if plan.call == "fit_dataset":  # what errors quote: its batches
        plan.batch_size = block["mask"].shape[-1]
    memory.before_first_call(
        session, plan.compiled.train_block, totals, block, plan.call, plan.batch_size
    )


def _dispatch(
    session: FitSession,
    plan: FitPlan,
    guard: _InterruptGuard,
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


def _warm(plan: FitPlan, state: Any, totals: Any, block: Any) -> None:
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
        data = warmup_lib.sharded(getattr(jax.tree.leaves(block)[0], "sharding", None))
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
        batch, last = _deliver(
            plan.compiled.log_names, pending, batch, callbacks, *hooks
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
    logs = host_values(plan.compiled.log_names, placement.fetch(totals))
    learning_rate = hyperparams.get(session.state.opt_state)
    if learning_rate is not None:  # as Keras' LR callbacks log it
        logs["learning_rate"] = float(placement.fetch(learning_rate))
    if session.state.loss_scale is not None:  # mixed_float16: the dynamic scale
        logs["loss_scale"] = float(placement.fetch(session.state.loss_scale.scale))
    return logs
