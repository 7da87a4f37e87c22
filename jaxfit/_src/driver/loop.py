"""The one epoch/batch loop, a generator shared by the sync and async fronts.

The loop yields (to its front) exactly at yield points. Between them it only
dispatches compiled blocks: no host-device sync. At a yield point it fetches the
batch logs of everything run since the last one in one transfer and calls the
batch hooks for each of those batches, in order, with that batch's own logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import signal
import threading
import warnings
from typing import Any, Callable, Generator, Iterable, Iterator

import numpy as np

from jaxfit._src.core import hyperparams
from jaxfit._src.driver import placement
from jaxfit._src.driver.callback import CallbackList
from jaxfit._src.driver.yield_policy import YieldPolicy

MAX_BLOCK = 256  # the most train steps fused into one compiled call
# ...and the most bytes of batches per call: small batches fuse many steps (the
# per-call cost of the host gather and device_put is what limits small models),
# large ones few (they are compute-bound, and yields stay frequent).
BLOCK_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The jitted blocks for one structure of ``y``, and the log names."""

    log_names: list[str]
    train_block: Any  # (state, totals, block) -> (state, totals, batch_logs)
    eval_block: Any  # (state, totals, block) -> (totals, batch_logs)
    empty_totals: Any  # () -> zeroed totals, made on device (no transfer)
    state_shardings: Any = None  # of the state these blocks take (and return)
    accumulate_steps: int = 1  # > 1: the optimizer is optax.MultiSteps
    fuse: bool = True  # whether several steps may share one compiled call
    objective: Any = None  # the resolved losses and metrics (label checks read it)
    y_pred: Any = None  # the model output's shapes, as traced


Blocks = Iterable[tuple[Any, int]]  # (device block, number of real batches in it)


@dataclasses.dataclass
class EvalPlan:
    blocks: Callable[[], Blocks]
    compiled: Compiled
    # evaluate_dataset(batches=N) / validation_batches on a stream: the batches
    # asked for, for tfjs' ran-out-of-data warning; None: whatever the data gives.
    required_batches: int | None = None


@dataclasses.dataclass
class Position:
    """Where a run stands, as of ``trainer.state`` (what a checkpoint records).

    Attributes:
      epoch: the epoch the next step belongs to.
      batch: the batches of that epoch already run (0 at an epoch's start).
      totals: that epoch's running loss and metric sums (device ``MeanState``s),
        ``None`` when ``batch`` is 0.
      stopped: the run had decided to stop (``stop_training``) at this point.
    """

    epoch: int = 0
    batch: int = 0
    totals: Any = None
    stopped: bool = False


@dataclasses.dataclass
class FitPlan:
    # (epoch, first batch) -> that epoch's blocks from that batch on, prefetched;
    # the first batch is > 0 only when resuming mid-epoch from a checkpoint.
    epoch_blocks: Callable[[int, int], Blocks]
    epochs: int
    initial_epoch: int
    policy: YieldPolicy
    validation: EvalPlan | None
    validation_freq: Any
    compiled: Compiled
    # With steps_per_epoch on a stream: batches each epoch must bring, for the
    # ran-out-of-data warning (tfjs); None when an epoch is whatever the data gives.
    required_steps: int | None = None
    cleanup: Callable[[], None] = lambda: None  # stops feeders that span epochs
    # In-memory data: the next epoch's first blocks are gathered and put on the
    # device while the current epoch's last steps run (before its end-of-epoch
    # sync), so the next epoch starts without waiting for the host.
    prime: bool = False
    primed: dict = dataclasses.field(default_factory=dict)


def host_values(names: list[str], sums: dict[str, Any], j: int | None = None
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
    """Defers Ctrl-C that lands between a step's dispatch and storing its result.

    The dispatched call consumes (donates) the previous state; if
    KeyboardInterrupt struck before the new state was stored, ``trainer.state``
    would point at deleted buffers. Inside ``critical()`` the interrupt is held
    and raised right after; elsewhere it is raised at once, as usual.
    """

    def __init__(self) -> None:
        self.in_critical = False
        self.pending = False

    def handler(self, signum, frame) -> None:
        del signum, frame
        if self.in_critical:
            self.pending = True
        else:
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


def evaluate_loop(trainer, plan: EvalPlan, callbacks: CallbackList) -> dict[str, float]:
    """Runs the eval step over ``plan`` and returns the epoch logs (one sync)."""
    callbacks.call("on_test_begin")
    totals = plan.compiled.empty_totals()
    state = trainer._state
    pending = []
    with _closing(plan.blocks()) as blocks:
        for block, real in blocks:
            totals, logs = plan.compiled.eval_block(state, totals, block)
            pending.append((logs, real))
    if not pending:
        raise ValueError("validation data: expected at least one batch, got none.")
    ran = sum(real for _, real in pending)
    if plan.required_batches is not None and ran < plan.required_batches:
        warnings.warn(  # tfjs' evaluateDataset warning
            f"Your dataset iterator ran out of data during evaluation after {ran} "
            f"batches; interrupting evaluation. Make sure that your dataset can "
            f"generate at least `batches` batches (in this case, "
            f"{plan.required_batches} batches), e.g. by repeating it.",
            UserWarning, stacklevel=3)
    if callbacks.wants("on_test_batch_begin") or callbacks.wants("on_test_batch_end"):
        _deliver(plan.compiled.log_names, pending, 0, callbacks,
                 "on_test_batch_begin", "on_test_batch_end")
    logs = host_values(plan.compiled.log_names, placement.fetch(totals))
    callbacks.call("on_test_end", logs=logs)
    return logs


def fit_loop(trainer, plan: FitPlan, callbacks: CallbackList) -> Generator[None, None, None]:
    """Trains ``plan.initial_epoch .. plan.epochs - 1``; yields at yield points."""
    epoch_logs: dict[str, float] = {}
    guard = _InterruptGuard()
    trainer._position = Position(plan.initial_epoch)
    trainer._resume = None
    callbacks.call("on_train_begin")
    # A callback (BackupAndRestore) may have restored a checkpoint: start there.
    start = trainer._resume or Position(plan.initial_epoch)
    trainer._resume = None
    trainer._position = start
    trainer._fit_finished = False  # read by on_train_end: a normal end, or an error
    try:
        with guard.installed():
            for epoch in range(start.epoch, plan.epochs):
                begin = start if epoch == start.epoch else Position(epoch)
                if begin.stopped and begin.batch == 0:  # it had stopped after an epoch
                    trainer.stop_training = True
                    break
                epoch_logs = yield from _run_epoch(trainer, plan, callbacks, guard,
                                                   epoch, begin)
                if trainer.stop_training:
                    break
        trainer._fit_finished = True
    finally:
        plan.primed.clear()
        plan.cleanup()
        callbacks.call("on_train_end", logs=epoch_logs)


def _run_epoch(trainer, plan: FitPlan, callbacks: CallbackList, guard: _InterruptGuard,
               epoch: int, begin: Position) -> Generator[None, None, dict[str, float]]:
    """One epoch from ``begin.batch`` on: dispatch blocks, deliver batch logs at
    yield points, validate."""
    policy, names = plan.policy, plan.compiled.log_names
    callbacks.call("on_epoch_begin", epoch)
    totals = begin.totals if begin.totals is not None else plan.compiled.empty_totals()
    pending: list = []
    batch = begin.batch
    policy.reset()
    train_hooks = ("on_train_batch_begin", "on_train_batch_end")
    steps = begin.batch
    # Stopped mid-epoch before the checkpoint: only the epoch's end is left to run.
    trainer.stop_training = trainer.stop_training or begin.stopped
    primed = plan.primed.pop(epoch, None) if begin.batch == 0 else None
    if begin.stopped:
        source: Any = ()
    else:
        source = primed if primed is not None else plan.epoch_blocks(epoch, begin.batch)
    with _closing(source) as blocks:  # joins feeder threads
        for block, real in blocks:
            steps += real
            with guard.critical():
                state, totals, logs = plan.compiled.train_block(
                    trainer._state, totals, block
                )
                trainer._state = state
                trainer._position = Position(epoch, steps, totals)
            pending.append((logs, real))
            if policy.due():
                batch, last = _deliver(names, pending, batch, callbacks, *train_hooks)
                callbacks.call("on_yield", epoch, batch - 1, logs=last)
                trainer.stop_training = placement.agree(trainer.stop_training)
                policy.reset()
                yield
                if trainer.stop_training:
                    break
    if plan.prime and epoch + 1 < plan.epochs and not trainer.stop_training:
        following = iter(plan.epoch_blocks(epoch + 1, 0))
        first = next(following, None)
        if first is not None:
            plan.primed[epoch + 1] = itertools.chain([first], following)
    if pending:
        batch, last = _deliver(names, pending, batch, callbacks, *train_hooks)
        callbacks.call("on_yield", epoch, batch - 1, logs=last)
    required = plan.required_steps
    if required is not None and steps < required and not trainer.stop_training:
        warnings.warn(
            f"Your dataset ran out of data after {steps} of the {required} batches of "
            f"epoch {epoch}; interrupting training. Make sure that your dataset can "
            f"generate at least `steps_per_epoch * epochs` batches (in this case, "
            f"{required * plan.epochs} batches), e.g. by repeating it.",
            UserWarning, stacklevel=2)
        trainer.stop_training = True
        if steps == 0:
            return {}
    epoch_logs = host_values(names, placement.fetch(totals))
    learning_rate = hyperparams.get(trainer._state.opt_state)
    if learning_rate is not None:  # as Keras' LR callbacks log it
        epoch_logs["learning_rate"] = float(placement.fetch(learning_rate))
    if trainer._state.loss_scale is not None:  # mixed_float16: the dynamic scale
        epoch_logs["loss_scale"] = float(placement.fetch(trainer._state.loss_scale.scale))
    if plan.validation is not None and _should_validate(epoch, plan.validation_freq):
        val_logs = evaluate_loop(trainer, plan.validation, callbacks)
        epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
    trainer._position = Position(epoch + 1)
    callbacks.call("on_epoch_end", epoch, logs=epoch_logs)
    # every process stops together, as process 0 decided (EarlyStopping...)
    trainer.stop_training = placement.agree(trainer.stop_training)
    yield
    return epoch_logs
