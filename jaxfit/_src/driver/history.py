"""History: the record of a run, always installed by ``fit``."""

from __future__ import annotations

from typing import Any

from jaxfit._src.driver.callback import Callback


class History(Callback):
    """Records epoch logs; ``fit`` returns it.

    Attributes:
      history: ``{log key: [value per epoch]}``; a validation key appears only for
        the epochs that ran validation (as Keras).
      epoch: the indices of the epochs run (``initial_epoch .. epochs - 1``).
      params: ``{"verbose", "epochs", "steps"}`` of the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        return f"History(epoch={self.epoch}, keys={list(self.history)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
