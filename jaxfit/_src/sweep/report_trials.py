"""``TrialReporter``: the callback a sweep's group run carries, one copy per member.

Member ``i`` of a group is trial ``trials[i]``. At each epoch's end its copy
records the member's logs (its History, as ``History.to_dict`` gives it), writes
them to ``LOG_DIR/member-<i>.json`` (atomically: what the sweep reads once the
run is over, also after a resume), reports the objective's value to the Optuna
trial, and stops the member when the pruner says so (it is frozen as an early
stopped one; the others go on). Its state (the logs, the epoch it was pruned at)
is in the run's backups, so a resumed group continues exactly.

The Optuna trials are the sweep process's own (``ACTIVE``, set by the driver
before it runs or resumes the group): a group run outside its sweep (``jaxfit
run --resume GROUP_DIR``, which an interrupted group's stop line suggests) is
refused when it starts, in one line (a ``ConfigError``: the CLI exits 2) naming
``jaxfit sweep --resume SWEEP_DIR``, before any step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import warnings
from typing import Any

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import errors
from jaxfit._src.runner.types import ConfigError

# group name -> the Optuna trials of its members, in member order
ACTIVE: dict[str, list[Any]] = {}


class TrialReporter(callbacks_lib.Callback):
    """Reports each member's objective to its Optuna trial (module docstring).

    Args:
      group: the group's name (``ACTIVE``'s key).
      trials: the trial numbers, member order.
      monitor: the objective's log key.
      log_dir: where ``member-<i>.json`` go (the runner makes it relative to
        the run directory).
      member: the member this copy acts for (``for_member`` sets it).
    """

    def __init__(
        self,
        group: str,
        trials: list[int],
        monitor: str,
        log_dir: str = "sweep",
        member: int | None = None,
    ):
        super().__init__()
        self.group = group
        self.trials = [int(t) for t in trials]
        self.monitor = monitor
        self.log_dir = log_dir
        self.member = member
        self.logs: dict[str, Any] = {"epoch": []}
        self.pruned_at: int | None = None

    def for_member(self, member: int) -> TrialReporter:
        made = copy.copy(self)
        made.member = member
        made.logs = {"epoch": []}
        made.pruned_at = None
        return made

    def _trial(self) -> Any:
        trials = ACTIVE.get(self.group)
        if trials is None or self.member is None:
            raise ConfigError(
                errors.expected(
                    f"group {self.group!r}",
                    "to be run by its sweep (`jaxfit sweep`: its trials report to "
                    "the sweep's Optuna study)",
                    errors.Description("a run outside it"),
                    f"Resume it with: jaxfit sweep --resume {self._sweep_dir()}",
                )
            )
        return trials[self.member]

    def _sweep_dir(self) -> str:
        """The sweep directory (``SWEEP_DIR/groups/<run>/<log_dir>``), if this
        group run is in one."""
        run_dir = os.path.dirname(os.path.abspath(self.log_dir))
        groups = os.path.dirname(run_dir)
        if os.path.basename(groups) != "groups":
            return "SWEEP_DIR"
        return os.path.dirname(groups)

    def on_train_begin(self, logs=None):
        self._trial()  # refused outside its sweep, before any step

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.logs["epoch"].append(int(epoch))
        for key, value in logs.items():
            self.logs.setdefault(key, []).append(float(value))
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(float(value)):
            trial = self._trial()
            with warnings.catch_warnings():  # a resumed epoch, reported before
                warnings.filterwarnings("ignore", message=".*already reported")
                trial.report(float(value), int(epoch))
            if self.pruned_at is None and trial.should_prune():
                self.pruned_at = int(epoch)
                self.trainer.stop_training = True
        self._write()

    def _write(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        path = os.path.join(self.log_dir, f"member-{self.member}.json")
        partial = f"{path}.partial"
        try:
            with open(partial, "w", encoding="utf-8") as f:
                json.dump({"history": self.logs, "pruned_at": self.pruned_at}, f)
            os.replace(partial, path)
        except BaseException:  # Ctrl-C: no half-written file left
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise

    def get_state(self):
        return {"logs": self.logs, "pruned_at": self.pruned_at}

    def set_state(self, state):
        self.logs = {k: list(v) for k, v in state["logs"].items()}
        self.pruned_at = state["pruned_at"]


def read(log_dir: str, member: int) -> tuple[dict[str, Any], int | None]:
    """A member's ``(history dict, epoch it was pruned at or None)``."""
    path = os.path.join(log_dir, f"member-{member}.json")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:  # no epoch ended
        return {"epoch": []}, None
    return value["history"], value["pruned_at"]
