"""BackupAndRestore: resume a killed run exactly where its last backup left it.

Its directory holds only what it writes: ``backup-<n>`` checkpoints (the two
newest), their staging siblings while a write is in flight, and jaxfit's marker
when it created the directory. At a normal end it deletes exactly those, and the
directory itself only if it made it and nothing else is in it.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax

from jaxfit._src import errors, paths
from jaxfit._src.callbacks import saver as saver_lib
from jaxfit._src.checkpoint import orbax_io, run_state
from jaxfit._src.driver import preemption
from jaxfit._src.driver.callback import Callback

_NAME = re.compile(r"^backup-(\d+)$")
_SIBLING = re.compile(r"^\.backup-\d+\.(saving|old)$")


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
    once complete. The two newest are kept (Keras' ``double_checkpoint``): older
    ones are removed only once the new one is in place, so a kill at any moment
    leaves at least one complete backup. Each records the sha256 of its files and
    of its metadata; on resume the newest is checked before anything is read,
    and if it is damaged (a file changed, ``metadata.json`` edited, truncated or
    missing, ``state/`` missing) a one-line ``RuntimeWarning`` names the file and
    the previous backup is used. A backup is never taken from a state whose loss
    is NaN or infinite, so with ``TerminateOnNaN`` the last backup is the last
    finite state.

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

    Preemption: when SIGTERM has been received during ``fit``, the next yield
    point writes a backup of that exact position, whatever ``save_freq``, and
    waits for it to be complete (also with ``write_in_background=True``), so the
    rerun resumes exactly there.

    ``backup_dir`` is refused as Keras refuses an empty one, and further: ``""``,
    ``"."``, the working or home directory, one of their parents, the filesystem
    root, or an existing directory holding anything but jaxfit checkpoints. It is
    created (marked as jaxfit's) at the first backup. The end-of-training
    deletion removes this callback's backups only, then the directory if jaxfit
    created it and it is empty.

    Args:
      backup_dir: the directory holding the backups.
      save_freq: ``"epoch"``, or a number of batches (the backup is taken at the
        first yield point after that many batches; ``yield_every="batch"`` makes
        it exact). Defaults to `"epoch"`.
      delete_checkpoint: remove the backups (and ``backup_dir``, if jaxfit
        created it) when training ends normally (including early stopping), as
        Keras. Defaults to `True`.
      write_in_background: write each backup's files on a background thread
        instead of before the hook returns (see above for what a kill then
        loses). Defaults to `False`.

    Raises:
      ValueError: a bad ``save_freq`` or a refused ``backup_dir`` (at
        construction, one line naming it); at ``fit``'s start, a backup that
        does not match the trainer (another model), with the first differing
        path, or no intact backup (one line naming the newest backup's damaged
        file).
      TypeError: ``backup_dir`` is not a path, or ``write_in_background`` is not
        a bool (at construction).
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
        self.backup_dir = self._checked(backup_dir)
        self.delete_checkpoint = bool(delete_checkpoint)
        self._saver = saver_lib.Saver(
            save_freq, "BackupAndRestore", background=write_in_background
        )
        self.save_freq = save_freq
        self.write_in_background = write_in_background
        self._next = 0
        self._damaged: set[str] = set()  # backups found damaged at restore
        self._preempted_at: tuple[int, int] | None = None

    @staticmethod
    def _checked(backup_dir: Any) -> str:
        return paths.checked_dir(
            backup_dir,
            "backup_dir",
            what="a backup directory",
            owned=orbax_io.holds_only_checkpoints,
        )

    def _backups(self) -> list[tuple[int, str]]:
        """This callback's backup directories, oldest first: jaxfit checkpoints
        (their marker, or jaxfit's metadata.json) named ``backup-<n>``, a damaged
        one included; staging directories, and a directory named like a backup
        that jaxfit did not write, are not listed."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = []
        for name in os.listdir(self.backup_dir):
            match = _NAME.match(name)
            path = os.path.join(self.backup_dir, name)
            if match and orbax_io.is_checkpoint(path):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def newest_intact(self) -> tuple[str, dict[str, Any]] | None:
        """The newest backup that passes ``orbax_io.verify`` and its metadata, or
        None (for the runner's ``--resume`` and ``jaxfit show``)."""
        for _, path in reversed(self._backups()):
            try:
                return path, orbax_io.verify(path, "backup_dir")
            except (orbax_io.CheckpointCorrupted, FileNotFoundError):
                continue
        return None

    def get_state(self) -> dict[str, Any]:
        return {"since": self._saver.since}

    def set_state(self, state: dict[str, Any]) -> None:
        self._saver.since = int(state["since"])

    def on_train_begin(self, logs=None):
        self.backup_dir = self._checked(self.backup_dir)  # still ours to write
        self._damaged = set()
        self._preempted_at = None
        backups = self._backups()
        self._next = backups[-1][0] + 1 if backups else 0
        if backups:  # runs after every other callback's on_train_begin (runs_last)
            self.trainer.session.resume = self._restore(backups)

    def _restore(self, backups: list[tuple[int, str]]) -> Any:
        """Restores the newest intact backup; warns for each damaged one."""
        first: orbax_io.CheckpointCorrupted | None = None
        for index in range(len(backups) - 1, -1, -1):
            path = backups[index][1]
            try:
                return run_state.restore_run(self.trainer, path)
            except orbax_io.CheckpointCorrupted as error:
                self._damaged.add(path)
                first = first or error
                if index > 0:
                    warnings.warn(
                        f"BackupAndRestore: the backup {path!r} is damaged: "
                        f"{error.file!r} {error.problem}; resuming from the "
                        f"previous backup, {backups[index - 1][1]!r}.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        assert first is not None
        raise orbax_io.CheckpointCorrupted(
            first.path,
            first.file,
            f"{first.problem}, and no older backup in {self.backup_dir!r} is "
            "intact. Delete the directory to start afresh",
            "backup_dir",
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._saver.begin_epoch(self.trainer)

    def on_yield(self, epoch, batch, logs=None):
        due = self._saver.due_at_yield(self.trainer)  # counts the batches run
        if preemption.requested() is not None:
            position = self.trainer.session.position
            at = (position.epoch, position.batch)
            if at != self._preempted_at:  # this exact position, complete on disk
                self._preempted_at = at
                self._backup(logs, background=False)
        elif due:
            self._backup(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._saver.save_freq == "epoch":
            self._backup(logs)

    def _backup(self, logs: dict[str, Any] | None, background: bool | None = None):
        if not saver_lib.finite_loss(logs, self.trainer):
            return
        paths.make_dir(self.backup_dir, "backup directory")
        path = os.path.join(self.backup_dir, f"backup-{self._next}")
        self._next += 1

        def prune(written: str) -> None:  # once the new backup is in place
            older = [
                p for _, p in self._backups() if p != written and p not in self._damaged
            ]
            keep = older[-1:]  # the previous intact backup: the fallback
            for _, old in self._backups():
                if old != written and old not in keep:
                    paths.remove_owned(
                        old, self.backup_dir, owned=orbax_io.is_checkpoint
                    )

        self._saver.write(
            self.trainer, path, after=prune, argname="backup_dir", background=background
        )

    def on_train_end(self, logs=None):
        finished = self.trainer.session.finished
        self._saver.wait(quiet=not finished)
        if self.delete_checkpoint and finished and jax.process_index() == 0:
            self.remove_backups()

    def remove_backups(self) -> None:
        """Deletes what this callback wrote: its backups, their staging
        siblings, then the marker and the directory if it made the directory and
        nothing else is in it (what ``delete_checkpoint`` does at a normal end;
        the runner calls it once a run's ending is complete)."""
        directory = self.backup_dir
        if not os.path.isdir(directory):
            return
        for name in os.listdir(directory):
            owned: Callable[[str], bool]
            if _NAME.match(name):
                owned = orbax_io.is_checkpoint
            elif _SIBLING.match(name):  # left by a killed write
                owned = orbax_io.is_staging
            else:
                continue
            paths.remove_owned(os.path.join(directory, name), directory, owned=owned)
        if paths.is_owned(directory) and os.listdir(directory) == [paths.MARKER]:
            try:
                os.remove(os.path.join(directory, paths.MARKER))
                os.rmdir(directory)
            except OSError:
                pass  # someone wrote into it meanwhile: leave it
