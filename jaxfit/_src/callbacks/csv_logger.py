"""CSVLogger: one row per epoch, flushed at each epoch end (Keras arguments)."""

from __future__ import annotations

import csv
import os
from typing import Any

import jax

from jaxfit._src import errors, paths
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver.callback import Callback

_TRAINING_ONLY = ("learning_rate", "lr", "loss_scale")
_HEAD = 4096  # bytes of an existing file read to tell whether it is a CSV log


def _is_log(path: str, separator: str) -> bool:
    """Whether the file ``path`` looks like a CSVLogger's (or ``History.to_csv``'s)
    output: its first line is ``epoch`` then ``separator`` and the columns."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
        first = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return first == "epoch" or first.startswith("epoch" + separator)


class CSVLogger(Callback):
    """Streams epoch logs to a CSV file (readable with ``History.from_csv``).

    Args:
      filename: the CSV path. It may be missing (its directory is made at
        ``on_train_begin`` if missing, with jaxfit's ``.jaxfit`` marker), empty,
        or a CSV log this callback writes (its first line is ``epoch``, the
        separator and the columns).
      separator: the column separator, one character. Defaults to `","`.
      append: append to an existing file (no second header) instead of
        overwriting. Defaults to `False`.

    The file is flushed at every epoch end, so a crash loses at most the epoch in
    flight. Columns are the first epoch's keys, plus their ``val_`` twins when the
    run validates (``validation_freq`` may skip the first epoch); a value not
    logged at an epoch is left empty.

    Unlike Keras, which opens any ``filename`` for writing, jaxfit never
    overwrites (nor appends to) a file it did not write: ``filename`` is checked
    when the callback is made, and again when training begins.

    Raises:
      ValueError: ``filename`` is ``""``, ``"."``, a directory, a path under a
        file, or an existing non-empty file whose first line is not a CSV log's
        header; ``separator`` is not one character; ``append`` is not a bool
        (each in one line, naming the argument).
      TypeError: ``filename`` is not a path.

    Example:
      >>> import jaxfit
      >>> logger = jaxfit.callbacks.CSVLogger("training.csv")
    """

    @errors.filter_traceback
    def __init__(
        self,
        filename: str | os.PathLike[str],
        separator: str = ",",
        append: bool = False,
    ):
        super().__init__()
        if (
            not isinstance(separator, str)
            or len(separator) != 1
            or separator in '\r\n"'
        ):
            raise ValueError(
                errors.expected(
                    "separator", "one character (not a quote or a newline)", separator
                )
            )
        if not isinstance(append, bool):
            raise ValueError(errors.expected("append", "True or False", append))
        self.separator = separator
        self.append = append
        self._check(filename)
        self.filename = os.fspath(filename)
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] | None = None

    def for_member(self, member: int) -> CSVLogger:
        """A copy for member ``member`` of a population, writing its own file:
        ``filename``'s ``{member}`` field filled in, else ``-member-<i>``
        before its extension (``log.csv`` -> ``log-member-3.csv``)."""
        copy = callback_lib.member_copy(self)
        copy.filename = callback_lib.member_path(self.filename, member)
        copy._check(copy.filename)
        return copy

    def _check(self, filename: Any) -> None:
        text = os.fspath(filename) if isinstance(filename, (str, os.PathLike)) else 0
        if isinstance(text, str) and text.endswith(("/", os.sep)):
            raise paths.PathError(
                errors.expected("filename", "a file name, not a directory", filename)
            )
        paths.checked_file(
            filename,
            "filename",
            what="a CSV file",
            owned=lambda path: _is_log(path, self.separator),
        )

    def on_train_begin(self, logs=None):
        if jax.process_index() != 0:  # only process 0 writes files
            self._file = None
            return
        self._check(self.filename)  # nothing has taken the name since __init__
        try:
            paths.make_parent(self.filename)
        except OSError as error:
            raise OSError(
                f"filename: cannot make the directory of {self.filename!r}: "
                f"{error.strerror or error}."
            ) from None
        exists = (
            self.append
            and os.path.exists(self.filename)
            and os.path.getsize(self.filename) > 0
        )
        if exists:
            with open(self.filename, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None
        else:
            self._keys = None
        # open across epochs, closed in on_train_end: no `with` block fits
        self._file = open(  # noqa: SIM115
            self.filename, "a" if self.append else "w", newline="", encoding="utf-8"
        )

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:
            return
        logs = dict(logs or {})
        if self._keys is None:
            self._keys = list(logs)
            if self.params.get("do_validation"):  # validation_freq may skip epoch 1
                # validation has losses and metrics, never a rate or loss scale
                self._keys += [
                    f"val_{k}"
                    for k in logs
                    if not k.startswith("val_")
                    and f"val_{k}" not in logs
                    and k not in _TRAINING_ONLY
                ]
            self._writer = csv.writer(self._file, delimiter=self.separator)
            self._writer.writerow(["epoch", *self._keys])
        elif self._writer is None:
            self._writer = csv.writer(self._file, delimiter=self.separator)
        self._writer.writerow([epoch, *(logs.get(key, "") for key in self._keys)])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None
