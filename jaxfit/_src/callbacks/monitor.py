"""MonitorCallback: the monitor / mode / min_delta / baseline logic of Keras."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback

_MAX_SUFFIXES = ("acc", "accuracy", "auc", "precision", "recall")


class MonitorCallback(Callback):
    """Base for callbacks that watch one log value for improvement.

    Args:
      monitor: the log key to watch. Defaults to `"val_loss"`.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys, else
        min). Defaults to `"auto"`.
      min_delta: the smallest change that counts as an improvement. Defaults to `0`.
      baseline: a value the monitored quantity must beat. Defaults to `None`.
    """

    def __init__(self, monitor: str = "val_loss",
                 mode: Literal["auto", "min", "max"] = "auto",
                 min_delta: float = 0.0, baseline: float | None = None):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(errors.expected("mode", "one of 'auto', 'min', 'max'", mode))
        if not isinstance(monitor, str):
            raise TypeError(errors.expected("monitor", "a log key (str)", monitor))
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.baseline = baseline
        if mode == "auto":
            name = monitor.removeprefix("val_")
            mode = "max" if name.endswith(_MAX_SUFFIXES) else "min"
        self._sign = 1.0 if mode == "max" else -1.0

    def is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        return self._sign * (value - reference) > self.min_delta

    def get_monitor_value(self, logs: dict[str, Any] | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return None
        return float(np.asarray(value))
