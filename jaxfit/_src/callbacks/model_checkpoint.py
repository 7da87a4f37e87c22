"""ModelCheckpoint: checkpoint directories during training (Keras 3 arguments)."""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.callbacks import saver as saver_lib
from jaxfit._src.callbacks.monitor import MonitorCallback


class ModelCheckpoint(MonitorCallback):
    """Saves checkpoints during training, every epoch or every N batches.

    Keras 3 semantics, with orbax checkpoint *directories* in place of ``.keras``
    files: ``filepath`` may hold format fields filled from the epoch (1-based, as
    Keras), the batch (with ``save_freq=N``) and the logs, e.g.
    ``"ckpts/ckpt-{epoch:02d}-{val_loss:.3f}"``. Load one with
    ``trainer.restore(path)`` or ``jaxfit.Trainer.load(path, apply, ...)``.

    Writes are atomic (a crash mid-save leaves the previous checkpoint intact)
    and, by default, synchronous as in Keras: a checkpoint is complete on disk
    when the hook that saves it (``on_epoch_end``, or the yield point of
    ``save_freq=N``) returns. With ``write_in_background=True`` the state is
    copied to host memory there and the files are written on a background
    thread while training goes on; the next save and the end of ``fit`` wait for
    it. A kill before then loses that newest checkpoint (any earlier one, the
    same path's previous content included, stays complete). A state whose loss
    is NaN or infinite is never saved, so with ``TerminateOnNaN`` the newest
    checkpoint is the last finite one.

    Args:
      filepath: the checkpoint directory, optionally with format fields.
      monitor: the log key compared for ``save_best_only``. Defaults to
        `"val_loss"`.
      verbose: print a line at each save. Defaults to `0`.
      save_best_only: save only when ``monitor`` improves (a constant
        ``filepath`` then always holds the best model). Defaults to `False`.
      save_weights_only: save only the params, not the optimizer state, rng,
        position and callback states. Defaults to `False`.
      mode: ``"auto"``, ``"min"`` or ``"max"`` for ``monitor``. Defaults to `"auto"`.
      save_freq: ``"epoch"``, or a number of batches: the checkpoint is taken at
        the first yield point after that many batches (``yield_every="batch"``
        makes it exact) and records the exact position reached. Defaults to
        `"epoch"`.
      initial_value_threshold: the value ``monitor`` must beat for the first
        save with ``save_best_only``. Defaults to `None`.
      max_to_keep: keep only this many of the most recent checkpoints written by
        this callback, deleting older ones once a new one is in place. Defaults
        to `None` (keep all).
      write_in_background: write the files on a background thread instead of
        before the hook returns (see above for what a kill then loses).
        Defaults to `False`.

    Raises:
      ValueError: bad arguments (at construction); a ``filepath`` field that is
        not in the logs (at the first save), naming the available keys.
      TypeError: ``write_in_background`` is not a bool (at construction).
      OSError: a checkpoint could not be written (disk full, permissions),
        naming its path; the previous one at that path is kept.

    Example:
      >>> import jaxfit
      >>> checkpoint = jaxfit.callbacks.ModelCheckpoint(
      ...     "/tmp/ckpts/ckpt-{epoch:02d}-{loss:.3f}", monitor="loss", max_to_keep=3)
    """

    runs_last = True

    @errors.filter_traceback
    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: Literal["auto", "min", "max"] = "auto",
        save_freq: Literal["epoch"] | int = "epoch",
        initial_value_threshold: float | None = None,
        max_to_keep: int | None = None,
        write_in_background: bool = False,
    ):
        super().__init__(monitor, mode)
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(
                errors.expected(
                    "filepath",
                    "a path (str), optionally with format fields like {epoch:02d}",
                    filepath,
                )
            )
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool)
            or not isinstance(max_to_keep, int)
            or max_to_keep < 1
        ):
            raise ValueError(
                errors.expected(
                    "max_to_keep", "a positive integer or None", max_to_keep
                )
            )
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = save_freq
        self.max_to_keep = max_to_keep
        self.write_in_background = write_in_background
        self._saver = saver_lib.Saver(
            save_freq, "ModelCheckpoint", background=write_in_background
        )
        self.best: float | None = initial_value_threshold
        self.kept: list[str] = []  # this callback's checkpoints, oldest first

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "kept": list(self.kept), "since": self._saver.since}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.kept = [str(path) for path in state["kept"]]
        self._saver.since = int(state["since"])

    def on_epoch_begin(self, epoch, logs=None):
        self._saver.begin_epoch(self.trainer)

    def on_yield(self, epoch, batch, logs=None):
        if self._saver.due_at_yield(self.trainer):
            self._save(epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._saver.save_freq == "epoch":
            self._save(epoch, None, logs)

    def on_train_end(self, logs=None):
        self._saver.wait()

    def _path(self, epoch: int, batch: int | None, logs: dict[str, Any]) -> str:
        fields = {**logs, "epoch": epoch + 1}
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return os.path.abspath(self.filepath.format(**fields))
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"filepath: expected format fields among {sorted(fields)}, got "
                f"{self.filepath!r} ({type(error).__name__}: {error}). Use the epoch, "
                "the batch (with save_freq=N) or a key the logs have."
            ) from error

    def _save(self, epoch: int, batch: int | None, logs: dict[str, Any] | None) -> None:
        logs = dict(logs or {})
        if not saver_lib.finite_loss(logs):
            if self.verbose:
                print(f"Epoch {epoch + 1}: non-finite loss, checkpoint not saved.")
            return
        if self.save_best_only:
            current = self.get_monitor_value(logs)
            if current is None:
                warnings.warn(
                    f"ModelCheckpoint: can save the best model only with "
                    f"{self.monitor!r} in the logs (available: "
                    f"{sorted(logs)}); skipping.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            if not self.is_improvement(current, self.best):
                return
            self.best = current
        path = self._path(epoch, batch, logs)
        if path in self.kept:
            self.kept.remove(path)
        self.kept.append(path)
        stale = self.kept[: -self.max_to_keep] if self.max_to_keep else []
        self.kept = self.kept[len(stale) :]

        def prune(written: str) -> None:  # once the new checkpoint is in place
            for old in stale:
                if old != written:
                    shutil.rmtree(old, ignore_errors=True)

        if self.verbose:
            print(f"Epoch {epoch + 1}: saving checkpoint to {path}")
        self._saver.write(
            self.trainer, path, weights_only=self.save_weights_only, after=prune
        )
