"""The run's ending, once ``fit`` has returned: the test evaluation,
checkpoint/, history.json and history.csv, curves.png, then metrics.json (the
completion mark), each written atomically, and only then is backup/ removed.

Between the stages ``_Where.enter`` honours a preemption (SIGTERM, shared by
every process) and Ctrl-C, which is recorded while the ending lasts (a second
Ctrl-C raises at once) rather than raised wherever it lands: inside orbax's
checkpoint write or a garbage-collector callback a KeyboardInterrupt leaves a
half-written staging directory, or is dropped by Python. Until metrics.json is
in place backup/ holds the trained state, so ``--resume`` redoes the ending.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src.core import placement
from jaxfit._src.driver import preemption
from jaxfit._src.runner import population_report, schema
from jaxfit._src.runner.build import _Prepared
from jaxfit._src.runner.checks import _streaming
from jaxfit._src.runner.rundir import (
    COMPLETE,
    _atomic,
    _plot,
    _remove_backups,
    _Tracker,
    _write_json,
)
from jaxfit._src.runner.schema import RunConfig
from jaxfit._src.runner.show import _duration


class _Where:
    """Where a run stands once ``fit`` has returned: the ending's stage (``None``
    while training), whether it was stopped before that stage began (SIGTERM and
    Ctrl-C are checked between stages), Ctrl-C received while it lasts, and
    whether metrics.json is written."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.before = False
        self.complete = False
        self.interrupts: list[int] = []

    def enter(self, stage: str) -> None:
        """Begins ``stage``, unless Ctrl-C came or a preemption was requested (on
        any process)."""
        self.stage, self.before = stage, True
        if self.interrupts:
            raise KeyboardInterrupt
        _check_preemption()
        self.before = False

    def words(self) -> str:
        """Where the ending stopped, for the stop line."""
        if self.complete:
            return f"{self.stage}; the run is complete (metrics.json is written)"
        return f"after training, {'before' if self.before else 'during'} {self.stage}"


@contextlib.contextmanager
def _sigint_deferred(where: _Where) -> Iterator[None]:
    """Ctrl-C during the ending is recorded (``where.interrupts``) and acted on at
    the next stage boundary, or when the block ends; a second Ctrl-C raises at
    once. Raised wherever it lands, a KeyboardInterrupt could strike inside
    orbax's checkpoint write (its threads then leave a half-written staging
    directory) or inside a garbage-collector callback, where Python drops it.
    Only in the main thread, over Python's own SIGINT handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        del frame
        if where.interrupts:
            raise KeyboardInterrupt
        where.interrupts.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if where.interrupts:
        raise KeyboardInterrupt


def _check_preemption() -> None:
    """Raises ``Preempted`` when SIGTERM came. With several processes, each one's
    request is shared first (one collective, which every process reaches at the
    same stage), so all of them stop at the same point."""
    preemption.agreed(False, jax.process_count())
    signum = preemption.requested()
    if signum is not None:
        raise preemption.Preempted("", signum)


def _end(
    config: RunConfig,
    prepared: _Prepared,
    callbacks: list[Any],
    history: Any,
    run_dir: str,
    say: Callable[..., None],
    lead: bool,
    where: _Where,
) -> dict[str, Any]:
    """The ending, in the module docstring's order; returns the metrics. SIGTERM
    and Ctrl-C are honoured between its stages; until metrics.json is in place, backup/ holds
    the trained state, so ``--resume`` redoes it all."""
    trainer = prepared.trainer
    where.enter("the test evaluation")
    metrics = _final_metrics(config, prepared, callbacks, history, say)
    where.enter("writing checkpoint/")
    trainer.save(
        os.path.join(run_dir, "checkpoint"),  # every process: orbax; atomic
        # the experiment, not the environment (alike in a resumed ending)
        metadata={"config": {**schema.to_dict(config), "environment": None}},
    )
    where.enter("writing history.json")
    if lead:
        _write_json(os.path.join(run_dir, "history.json"), history.to_dict())
        _atomic(os.path.join(run_dir, "history.csv"), history.to_csv)
    where.enter("writing curves.png")
    if lead:
        _plot(history, os.path.join(run_dir, "curves.png"))
    where.enter(f"writing {COMPLETE}")
    tracker = next(c for c in callbacks if isinstance(c, _Tracker))
    metrics["wall_time_s"] = _lead_seconds(tracker.elapsed())
    if lead:
        _write_json(os.path.join(run_dir, COMPLETE), metrics)  # complete now
    placement.agree(True)  # every process waits for it before backup/ goes
    where.stage, where.complete = "removing backup/", True
    _remove_backups(run_dir)
    say(f"wall time: {_duration(metrics['wall_time_s'])}")
    say(f"run directory: {run_dir}")
    return metrics


def _final_metrics(
    config: RunConfig,
    prepared: _Prepared,
    callbacks: list[Any],
    history: Any,
    say: Callable[..., None],
) -> dict[str, Any]:
    """metrics.json less the wall time: how training ended and the test
    evaluation (a population's: ``population_report``), its lines printed."""
    data, trainer = prepared.data, prepared.trainer
    test: Any = None
    if _streaming(data) and data.test is not None:
        test = trainer.evaluate_dataset(data.test)
    elif not _streaming(data) and data.x_test is not None:
        test = trainer.evaluate(
            data.x_test, data.y_test, batch_size=config.fit.batch_size
        )
    if config.population is not None:
        members = population_report.metrics(config, history, callbacks, test)
        for line in population_report.show_lines(members):
            say(line)
        return members
    metrics: dict[str, Any] = {
        "final_epoch": {key: values[-1] for key, values in history.history.items()}
    }
    ending, lines = _ending(config, callbacks, history)
    metrics.update(ending)
    for line in lines:
        say(line)
    metrics["test"] = test  # None: no test split
    if test is not None:
        say("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in test.items()))
    return metrics


def _lead_seconds(seconds: float) -> float:
    """Process 0's ``seconds`` (to the millisecond) on every process, so that
    every process returns the metrics process 0 writes."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        shared = multihost_utils.broadcast_one_to_all(np.float32(seconds))
        seconds = float(np.asarray(shared))
    return round(seconds, 3)


def _ending(
    config: RunConfig, callbacks: list[Any], history: Any
) -> tuple[dict[str, Any], list[str]]:
    """How training ended, for metrics.json and run.log: the last epoch, whether
    a callback stopped it early, and which epoch's weights the run ends with (the
    test evaluation's and checkpoint/'s). Epochs count from 1, as printed."""

    last = history.epoch[-1] + 1 if history.epoch else config.fit.initial_epoch
    out: dict[str, Any] = {
        "last_epoch": last,
        "weights_epoch": last,
        "weights": "the last epoch's",
    }
    lines = []
    names = [c.name for c in config.callbacks]
    built = [c for c in callbacks if not isinstance(c, _Tracker)]
    out["monitor"] = _monitored(names, built, history)
    for i, callback in enumerate(built[: len(names)]):
        if not isinstance(callback, callbacks_lib.EarlyStopping):
            continue
        who = f"callbacks[{i}] {names[i]}"
        if callback.stopped_epoch > 0:
            out["stopped_early"] = {
                "by": who,
                "epoch": callback.stopped_epoch + 1,
                "monitor": callback.monitor,
                "patience": callback.patience,
            }
            lines.append(
                f"early stopping: {who} ended the run after epoch "
                f"{callback.stopped_epoch + 1}/{config.fit.epochs}: "
                f"{callback.monitor} did not improve for "
                f"{callback.patience} epoch"
                f"{'' if callback.patience == 1 else 's'}"
            )
        if callback.restore_best_weights and callback.best_weights is not None:
            out["weights_epoch"] = callback.best_epoch + 1
            out["weights"] = (
                f"restored by {who} (restore_best_weights): the best "
                f"{callback.monitor}, {callback.best:.6g}"
            )
            lines.append(
                f"weights: epoch {callback.best_epoch + 1}'s, restored by "
                f"{who} (best {callback.monitor}: {callback.best:.4f}); "
                "checkpoint/ and the test evaluation use them"
            )
    if "stopped_early" not in out and last < config.fit.epochs:
        out["stopped_early"] = {"by": "stop_training", "epoch": last}
        lines.append(
            f"stopped: training ended after epoch {last}/{config.fit.epochs} "
            "(stop_training)"
        )
    out.setdefault("stopped_early", None)  # the same keys in every metrics.json
    out["stop_reason"] = _stop_reason(out["stopped_early"], last, config.fit.epochs)
    return out, lines


def _stop_reason(stopped: dict[str, Any] | None, last: int, epochs: int) -> str:
    """Why training ended, in words (metrics.json's ``stop_reason``)."""
    if stopped is None:
        return f"completed: all {epochs} epochs ran"
    if stopped["by"] == "stop_training":
        return (
            f"stopped after epoch {last}/{epochs}: a callback set stop_training "
            "(TerminateOnNaN, or your own)"
        )
    return (
        f"early stopping after epoch {stopped['epoch']}/{epochs}: "
        f"{stopped['by']}'s {stopped['monitor']} did not improve for "
        f"{stopped['patience']} epoch{'' if stopped['patience'] == 1 else 's'}"
    )


def _monitored(names: list[str], built: list[Any], history: Any) -> dict[str, Any]:
    """The metric the run watched and its best epoch (1-based): the first config
    callback with a ``monitor`` (EarlyStopping, ModelCheckpoint,
    ReduceLROnPlateau; in its direction), else ``val_loss`` when validation ran
    and ``loss`` otherwise (minimised)."""
    out: dict[str, Any] = {"name": None, "mode": "min", "by": None}
    for i, callback in enumerate(built[: len(names)]):
        if isinstance(callback, callbacks_lib.MonitorCallback):
            sign = callback._sign  # decided at on_train_begin (mode="auto" too)
            out.update(
                name=callback.monitor,
                mode="max" if sign == 1.0 else "min",
                by=f"callbacks[{i}] {names[i]}",
            )
            break
    if out["name"] is None:
        out["name"] = "val_loss" if "val_loss" in history.history else "loss"
    values = [float(v) for v in history.history.get(out["name"], [])]
    epochs = history.epoch[-len(values) :] if values else []
    finite = [(v, e) for v, e in zip(values, epochs) if math.isfinite(v)]
    pick = max if out["mode"] == "max" else min  # the first best, as Keras keeps
    best = pick(finite, key=lambda pair: pair[0], default=None)
    out["best"] = None if best is None else best[0]
    out["best_epoch"] = None if best is None else int(best[1]) + 1
    return out
