"""CSVLogger: one row per epoch, flushed at each epoch end (Keras arguments)."""

from __future__ import annotations

import csv
import os
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback

_TRAINING_ONLY = ("learning_rate", "lr", "loss_scale")


class CSVLogger(Callback):
    """Streams epoch logs to a CSV file (readable with ``History.from_csv``).

    Args:
      filename: the CSV path.
      separator: the column separator. Defaults to `","`.
      append: append to an existing file (no second header) instead of
        overwriting. Defaults to `False`.

    The file is flushed at every epoch end, so a crash loses at most the epoch in
    flight. Columns are the first epoch's keys, plus their ``val_`` twins when the
    run validates (``validation_freq`` may skip the first epoch); a value not
    logged at an epoch is left empty.

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
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        if jax.process_index() != 0:  # only process 0 writes files
            self._file = None
            return
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
