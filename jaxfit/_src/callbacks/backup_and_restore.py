"""BackupAndRestore: resume a killed run exactly where its last backup left it."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.callbacks import saver as saver_lib
from jaxfit._src.checkpoint import orbax_io, run_state
from jaxfit._src.driver.callback import Callback

_NAME = re.compile(r"^backup-(\d+)$")


class BackupAndRestore(Callback):
    """Backs the whole run up, and resumes from the backup when ``fit`` is rerun.

    Keras 3's ``BackupAndRestore``, made exact: when a run dies (a preempted TPU,
    an out-of-memory kill, Ctrl-C) and the same ``fit`` call is made again with
    this callback, training continues from the last backup as if it had never
    stopped: the same params (bit for bit on CPU), the same History (the epochs
    before the interruption included), the same shuffling order, dropout keys,
    learning-rate schedule position and early-stopping counters. Backups taken
    mid-epoch (``save_freq=N``) resume mid-epoch, with that epoch's running loss
    sums, skipping the batches already run.

    Each backup is a new directory ``backup_dir/backup-<n>`` renamed into place
    once complete; the older one is removed only after that. A kill at any moment
    leaves at least one complete backup. A backup is never taken from a state
    whose loss is NaN or infinite, so with ``TerminateOnNaN`` the last backup is
    the last finite state.

    By default a backup is complete on disk when the hook that takes it
    (``on_epoch_end``, or the yield point of ``save_freq=N``) returns, as in
    Keras: a kill at any later moment resumes from it. With
    ``write_in_background=True`` the state is copied to host memory at that
    point and the files are written on a background thread while training goes
    on; the next backup and the end of ``fit`` wait for it. A kill before then
    loses that newest backup, and the rerun resumes from the one before it
    (which stays complete until the new one is in place) or from scratch if it
    was the first: faster for large states, at the price of redoing up to one
    backup interval.

    Args:
      backup_dir: the directory holding the backups.
      save_freq: ``"epoch"``, or a number of batches (the backup is taken at the
        first yield point after that many batches; ``yield_every="batch"`` makes
        it exact). Defaults to `"epoch"`.
      delete_checkpoint: remove ``backup_dir`` when training ends normally
        (including early stopping), as Keras. Defaults to `True`.
      write_in_background: write each backup's files on a background thread
        instead of before the hook returns (see above for what a kill then
        loses). Defaults to `False`.

    Raises:
      ValueError: a bad ``save_freq`` (at construction); at ``fit``'s start, a
        backup that does not match the trainer (another model), with the first
        differing path.
      TypeError: ``write_in_background`` is not a bool (at construction).
      OSError: a backup could not be written (disk full, permissions), naming
        its path; the previous backup is kept.

    Example:
      >>> import jaxfit
      >>> backup = jaxfit.callbacks.BackupAndRestore("/tmp/jaxfit-backup")
    """

    runs_last = True

    @errors.filter_traceback
    def __init__(
        self,
        backup_dir: str | os.PathLike[str],
        save_freq: Literal["epoch"] | int = "epoch",
        delete_checkpoint: bool = True,
        write_in_background: bool = False,
    ):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)):
            raise TypeError(
                errors.expected("backup_dir", "a directory path", backup_dir)
            )
        self.backup_dir = os.path.abspath(os.fspath(backup_dir))
        self.delete_checkpoint = bool(delete_checkpoint)
        self._saver = saver_lib.Saver(
            save_freq, "BackupAndRestore", background=write_in_background
        )
        self.save_freq = save_freq
        self.write_in_background = write_in_background
        self._next = 0

    def _backups(self) -> list[tuple[int, str]]:
        """Complete backups, oldest first (staging directories are hidden)."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = []
        for name in os.listdir(self.backup_dir):
            match = _NAME.match(name)
            path = os.path.join(self.backup_dir, name)
            if match and os.path.isfile(os.path.join(path, orbax_io.METADATA)):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def get_state(self) -> dict[str, Any]:
        return {"since": self._saver.since}

    def set_state(self, state: dict[str, Any]) -> None:
        self._saver.since = int(state["since"])

    def on_train_begin(self, logs=None):
        backups = self._backups()
        self._next = backups[-1][0] + 1 if backups else 0
        if backups:  # runs after every other callback's on_train_begin (runs_last)
            self.trainer.session.resume = run_state.restore_run(
                self.trainer, backups[-1][1]
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._saver.begin_epoch(self.trainer)

    def on_yield(self, epoch, batch, logs=None):
        if self._saver.due_at_yield(self.trainer):
            self._backup(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._saver.save_freq == "epoch":
            self._backup(logs)

    def _backup(self, logs: dict[str, Any] | None) -> None:
        if not saver_lib.finite_loss(logs):
            return
        path = os.path.join(self.backup_dir, f"backup-{self._next}")
        self._next += 1

        def prune(written: str) -> None:  # once the new backup is in place
            for _, older in self._backups():
                if older != written:
                    shutil.rmtree(older, ignore_errors=True)

        self._saver.write(self.trainer, path, after=prune)

    def on_train_end(self, logs=None):
        self._saver.wait()
        if self.delete_checkpoint and self.trainer.session.finished:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
