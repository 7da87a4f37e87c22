"""MonitorCallback: the monitor / mode / min_delta / baseline logic of Keras."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback

_MAX_SUFFIXES = ("acc", "accuracy", "auc", "precision", "recall")


class MonitorCallback(Callback):
    """Base for callbacks that watch one log value for improvement (Keras).

    ``EarlyStopping``, ``ModelCheckpoint`` and ``ReduceLROnPlateau`` build on
    it; subclass it for your own: read the value with ``get_monitor_value(logs)``
    in ``on_epoch_end`` and compare it with ``is_improvement``.

    Args:
      monitor: the log key to watch. Defaults to `"val_loss"`.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys, else
        min). Defaults to `"auto"`.
      min_delta: the smallest change that counts as an improvement. Defaults to `0`.
      baseline: a value the monitored quantity must beat. Defaults to `None`.

    Raises:
      ValueError: an unknown ``mode``.
      TypeError: a ``monitor`` that is not a string.

    Example:
      >>> import jaxfit
      >>> class Best(jaxfit.callbacks.MonitorCallback):
      ...     best = None
      ...     def on_epoch_end(self, epoch, logs=None):
      ...         value = self.get_monitor_value(logs)
      ...         if value is not None and self.is_improvement(value, self.best):
      ...             self.best = value
      >>> best = Best(monitor="val_accuracy")
      >>> for epoch, acc in enumerate([0.5, 0.75, 0.7]):
      ...     best.on_epoch_end(epoch, {"val_accuracy": acc})
      >>> best.best
      0.75
    """

    @errors.filter_traceback
    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 0.0,
        baseline: float | None = None,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                errors.expected("mode", "one of 'auto', 'min', 'max'", mode)
            )
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
        """Whether ``value`` improves on ``reference`` by more than ``min_delta``.

        Args:
          value: the monitored value now.
          reference: the best value so far, or ``None`` (anything improves on it).

        Returns:
          ``value > reference + min_delta`` in ``"max"`` mode,
          ``value < reference - min_delta`` in ``"min"`` mode.
        """
        if reference is None:
            return True
        return self._sign * (value - reference) > self.min_delta

    def get_monitor_value(self, logs: dict[str, Any] | None) -> float | None:
        """The monitored value in ``logs`` as a float, or ``None`` when absent.

        Args:
          logs: a hook's logs (``on_epoch_end``'s, usually).

        Returns:
          ``float(logs[monitor])``, or ``None`` if ``logs`` lacks the key (say,
          a ``val_`` key in an epoch without validation).
        """
        value = (logs or {}).get(self.monitor)
        if value is None:
            return None
        return float(np.asarray(value))
