"""ModelCheckpoint: checkpoint directories during training (Keras 3 arguments).

Where it writes and what it deletes: its *root* is the directory part of
``filepath``'s fixed text (before the first format field). ``max_to_keep``
remembers its checkpoints relative to that root (also in the state a backup
saves), resolves them inside the root on restore (``paths.within``: an absolute
path or one leaving the root is dropped) and deletes only jaxfit checkpoints
strictly inside it (``paths.remove_owned``). A resumed copy of a run directory
therefore prunes its own checkpoints, never the original's.
"""

from __future__ import annotations

import os
import string
import warnings
from typing import Any, Literal

from jaxfit._src import errors, paths
from jaxfit._src.callbacks import saver as saver_lib
from jaxfit._src.callbacks.monitor import MonitorCallback
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.driver import callback as callback_lib


def _fixed_part(filepath: str) -> tuple[str, bool]:
    """``filepath``'s literal text before its first format field, and whether
    it has one.

    Raises:
      ValueError: ``filepath`` is not a valid format string.
    """
    fixed = []
    try:
        for literal, field, _, _ in string.Formatter().parse(filepath):
            fixed.append(literal)
            if field is not None:
                return "".join(fixed), True
    except ValueError as error:
        raise ValueError(
            errors.expected(
                "filepath",
                "a path with format fields like {epoch:02d}",
                filepath,
                f"It is not a valid format string ({error}); write a literal "
                "brace as {{ or }}.",
            )
        ) from None
    return "".join(fixed), False


def _is_directory_path(text: str) -> bool:
    """Whether ``text`` names a directory by its form: empty, ``.``/``..``, or
    ending with a separator."""
    seps = (os.sep,) + ((os.altsep,) if os.altsep else ())
    return (
        text in ("", ".", "..")
        or text.endswith(seps)
        or (os.path.basename(text) in (".", ".."))
    )


def _check_max_to_keep(max_to_keep: Any) -> None:
    """Raises ``ValueError`` unless ``max_to_keep`` is a positive int or None."""
    if max_to_keep is not None and (
        isinstance(max_to_keep, bool)
        or not isinstance(max_to_keep, int)
        or max_to_keep < 1
    ):
        raise ValueError(
            errors.expected("max_to_keep", "a positive integer or None", max_to_keep)
        )


def _check_filepath(filepath: str, fixed: str, formatted: bool) -> None:
    """The path policy on ``filepath``: a checkpoint directory, or (with format
    fields) the directory part before the first field.

    Raises:
      paths.PathError: naming ``filepath``.
    """
    if not formatted:
        paths.checked_dir(
            filepath,
            "filepath",
            what="a checkpoint directory",
            owned=orbax_io.is_checkpoint,
        )
    elif _is_directory_path(fixed):
        try:
            paths.checked_dir(
                fixed or ".",
                "filepath",
                what="a directory for the checkpoints",
                owned=orbax_io.holds_only_checkpoints,
            )
        except paths.PathError as error:
            raise paths.PathError(
                f"{error} (the directory part of filepath={filepath!r})"
            ) from None


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

    jaxfit writes over nothing it did not create. Refused at construction:
    a ``filepath`` that is ``""``, ``"."``, the working or home directory, one of
    their parents or the filesystem root, or an existing directory holding
    something other than jaxfit checkpoints. With format fields the same holds
    for the fixed part before the first field when that part is itself a
    directory (``"ckpts/{epoch}"``: ``ckpts/``; ``"{epoch}"``: the working
    directory, refused). At each save, a formatted path that exists must be a
    checkpoint jaxfit wrote (its ``.jaxfit`` marker or jaxfit's
    ``metadata.json``); otherwise the save raises, touching nothing.
    ``max_to_keep`` deletes only checkpoints this callback wrote, inside the
    directory of ``filepath``'s fixed part (see the module docstring).

    Args:
      filepath: the checkpoint directory, optionally with format fields.
      monitor: the log key compared for ``save_best_only``. Defaults to
        `"val_loss"`.
      verbose: print a line at each save. Defaults to `0`.
      save_best_only: save only when ``monitor`` improves (a constant
        ``filepath`` then always holds the best model). As Keras 3, a save
        whose logs lack ``monitor`` warns (``RuntimeWarning``) and saves; a
        ``val_`` monitor in a fit without validation data, or one ``mode="auto"``
        cannot direct, is an error at the start of ``fit``. Defaults to `False`.
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
      ValueError: bad arguments, a refused ``filepath`` (at construction); a
        ``filepath`` field that is not in the logs (at the first save), naming
        the available keys; a formatted path that exists and is not a jaxfit
        checkpoint (at that save).
      TypeError: ``filepath`` is not a path, or ``write_in_background`` is not
        a bool (at construction).
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
        _check_max_to_keep(max_to_keep)
        self.filepath = os.fspath(filepath)
        fixed, formatted = _fixed_part(self.filepath)
        _check_filepath(self.filepath, fixed, formatted)
        self._root = os.path.abspath(os.path.dirname(fixed) or ".")
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

    def for_member(self, member: int) -> ModelCheckpoint:
        """A copy for member ``member`` of a population, saving that member as
        a plain trainer's checkpoint (``Trainer.load`` reads it): ``filepath``'s
        ``{member}`` field filled in, else ``-member-<i>`` appended
        (``ckpt/e{epoch:02d}`` -> ``ckpt/e{epoch:02d}-member-3``)."""
        copy = callback_lib.member_copy(self)
        copy.filepath = callback_lib.member_path(self.filepath, member)
        fixed, formatted = _fixed_part(copy.filepath)
        _check_filepath(copy.filepath, fixed, formatted)
        copy._root = os.path.abspath(os.path.dirname(fixed) or ".")
        return copy

    def get_state(self) -> dict[str, Any]:
        kept = [os.path.relpath(path, self._root) for path in self.kept]
        return {"best": self.best, "kept": kept, "since": self._saver.since}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores the state ``get_state`` gave; ``kept`` paths are resolved
        inside this callback's root, and any that would leave it is dropped."""
        self.best = None if state["best"] is None else float(state["best"])
        stored = state.get("kept")
        self.kept = [
            os.path.normpath(os.path.join(self._root, relative))
            for relative in (stored if isinstance(stored, list) else [])
            if paths.within(self._root, relative) is not None
        ]
        self._saver.since = int(state["since"])

    def on_train_begin(self, logs=None):
        if self.save_best_only:  # the monitor is read only to pick the best
            self.set_monitor_op()

    def on_epoch_begin(self, epoch, logs=None):
        self._saver.begin_epoch(self.trainer)

    def on_yield(self, epoch, batch, logs=None):
        if self._saver.due_at_yield(self.trainer):
            self._save(epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._saver.save_freq == "epoch":
            self._save(epoch, None, logs)

    def on_train_end(self, logs=None):
        self._saver.wait(quiet=not self.trainer.session.finished)

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
            if current is None:  # Keras 3: warn, and save
                warnings.warn(
                    f"ModelCheckpoint: can save the best model only with "
                    f"{self.monitor!r} available (the logs have "
                    f"{sorted(logs)}); saving this one.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            elif not self.is_improvement(current, self.best):
                return
            else:
                self.best = current
        path = self._path(epoch, batch, logs)
        if path in self.kept:
            self.kept.remove(path)
        inside = paths.within(self._root, os.path.relpath(path, self._root))
        stale: list[str] = []
        if inside is not None:  # only what lies inside the root is ever pruned
            self.kept.append(path)
            stale = self.kept[: -self.max_to_keep] if self.max_to_keep else []
            self.kept = self.kept[len(stale) :]
        root = self._root

        def prune(written: str) -> None:  # once the new checkpoint is in place
            for old in stale:
                if old != written:
                    paths.remove_owned(old, root, owned=orbax_io.is_checkpoint)

        if self.verbose:
            print(f"Epoch {epoch + 1}: saving checkpoint to {path}")
        self._saver.write(
            self.trainer,
            path,
            weights_only=self.save_weights_only,
            after=prune,
            argname="filepath",
        )
