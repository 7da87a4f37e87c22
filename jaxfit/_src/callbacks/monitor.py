"""MonitorCallback: the monitor / mode / min_delta / baseline logic of Keras."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import losses, metric_objects
from jaxfit._src.core import metrics as metrics_lib
from jaxfit._src.driver.callback import Callback

# Keras 3's metrics whose objects have ``_direction == "up"`` (keras/src/metrics),
# by the names they are logged under; ``"accuracy"`` / ``"acc"`` become one of the
# accuracies. Every other Keras metric with a direction, and every loss used as a
# metric, has "down".
_UP = frozenset(
    [
        "accuracy",
        "acc",
        "binary_accuracy",
        "categorical_accuracy",
        "sparse_categorical_accuracy",
        "top_k_categorical_accuracy",
        "sparse_top_k_categorical_accuracy",
        "auc",
        "precision",
        "recall",
        "f1_score",
        "fbeta_score",
        "r2_score",
        "cosine_similarity",
        "iou",
        "binary_iou",
        "mean_iou",
        "one_hot_iou",
        "one_hot_mean_iou",
        "pearson_correlation",
        "concordance_correlation",
        "precision_at_recall",
        "recall_at_precision",
        "sensitivity_at_specificity",
        "specificity_at_sensitivity",
    ]
)
_DOWN = frozenset(
    [
        "mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error",
        "root_mean_squared_error",
        "log_cosh_error",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_focal_crossentropy",
        "categorical_focal_crossentropy",
        "kl_divergence",
        "poisson",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "mse",
        "mae",
        "mape",
        "msle",
        "logcosh",
    ]
)


def name_direction(name: str) -> str | None:
    """``"up"``, ``"down"`` or ``None``: the direction of a metric by its name
    (Keras 3's metric objects of that name; a loss name is ``"down"``)."""
    name = name.lower()
    if name in _UP:
        return "up"
    if name in _DOWN or name in losses.names():
        return "down"
    return None


def _identifier_direction(identifier: Any) -> str | None:
    """The direction of one metric as given to the trainer: a name's (see
    ``name_direction``), a metric object's ``direction`` / ``_direction``, or a
    jaxfit metric or loss function's registered name's."""
    if isinstance(identifier, str):
        return name_direction(identifier)
    for attr in ("direction", "_direction"):
        value = getattr(identifier, attr, None)
        if value in ("up", "down"):
            return value
    for name in metrics_lib.names():
        try:
            if metric_objects.resolve(name, _PROBE, _PROBE) is identifier:
                return name_direction(name)
        except (TypeError, ValueError):
            continue
    return None


class _Probe:
    shape = (2, 2)


_PROBE = _Probe()


def _flat(spec: Any) -> list[Any]:
    """The metric identifiers of a ``metrics`` spec (a list, a dict per output)."""
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [item for value in spec.values() for item in _flat(value)]
    if isinstance(spec, (list, tuple)):
        return [item for value in spec for item in _flat(value)]
    return [spec]


def monitor_direction(monitor: str, metrics: list[Any] | None = None) -> str | None:
    """The auto mode's direction for a log key, as Keras 3's ``MonitorCallback``.

    ``val_`` is removed; ``loss`` is ``"down"`` (and ``<output>_loss``, which
    Keras cannot tell); otherwise the direction is that of the metric logged
    under that key: the one among ``metrics`` (the trainer's metric identifiers)
    whose name is the key, or its end after an output or ``weighted_`` prefix.
    Without ``metrics`` (no trainer), the key's name is read as a metric name.

    Args:
      monitor: a log key.
      metrics: the trainer's metrics and weighted metrics, flattened, or
        ``None``. Defaults to `None`.

    Returns:
      ``"up"``, ``"down"``, or ``None`` when it cannot be told.
    """
    name = monitor.removeprefix("val_")
    if name == "loss" or name.endswith("_loss"):
        return "down"
    if metrics is None:
        return name_direction(name)
    for identifier in metrics:
        key = metrics_lib.name_of(identifier)
        if name == key or name.endswith("_" + key):
            direction = _identifier_direction(identifier)
            if direction is not None:
                return direction
    return None


class MonitorCallback(Callback):
    """Base for callbacks that watch one log value for improvement (Keras).

    ``EarlyStopping``, ``ModelCheckpoint`` and ``ReduceLROnPlateau`` build on
    it; subclass it for your own: read the value with ``get_monitor_value(logs)``
    in ``on_epoch_end`` and compare it with ``is_improvement``.

    Args:
      monitor: the log key to watch. Defaults to `"val_loss"`.
      mode: ``"min"``, ``"max"`` or ``"auto"``. ``"auto"`` is Keras 3's rule:
        ``loss`` (and ``<output>_loss``) is minimised, a metric as its Keras
        metric object is (accuracies, ``auc``, ``precision``, ``recall``,
        ``f1_score``... maximised; errors and crossentropies minimised; a metric
        object of yours by its ``direction`` attribute, ``"up"`` or ``"down"``),
        ``val_`` keys as their training key; any other key is an error at the
        start of ``fit`` (Keras: at the first epoch end) asking for ``"min"`` or
        ``"max"``. Defaults to `"auto"`.
      min_delta: the smallest change that counts as an improvement. Defaults to `0`.
      baseline: a value the monitored quantity must beat. Defaults to `None`.

    Raises:
      ValueError: an unknown ``mode``; in ``"auto"`` mode, a ``monitor`` whose
        direction cannot be told (when first compared).
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
        self._sign: float | None = None
        if mode != "auto":
            self._sign = 1.0 if mode == "max" else -1.0

    def on_train_begin(self, logs=None):
        self.set_monitor_op()

    def set_monitor_op(self) -> None:
        """Decides the direction (``mode``) and checks that ``fit`` can log
        ``monitor``; called at the start of ``fit`` (and on first use otherwise).

        Raises:
          ValueError: ``mode="auto"`` and the direction of ``monitor`` cannot
            be told; or a ``val_`` monitor in a ``fit`` without validation data
            (it would never be logged).
        """
        if self.params.get("do_validation") is False and self.monitor.startswith(
            "val_"
        ):
            raise ValueError(
                errors.expected(
                    "monitor",
                    "a key this fit logs (a val_ key needs validation_data or "
                    "validation_split)",
                    self.monitor,
                    f"{type(self).__name__} would never see it: give the fit "
                    f"validation data, or monitor {self.monitor[4:]!r}.",
                )
            )
        if self.mode != "auto":
            return
        trainer = self.trainer
        metrics = None
        if trainer is not None and hasattr(trainer, "metrics"):
            metrics = _flat(trainer.metrics) + _flat(trainer.weighted_metrics)
        direction = monitor_direction(self.monitor, metrics)
        if direction is None:
            raise ValueError(
                errors.expected(
                    "mode",
                    f"'min' or 'max' for monitor={self.monitor!r}",
                    self.mode,
                    f"{type(self).__name__} cannot tell whether {self.monitor!r} "
                    "should be minimised or maximised (as Keras 3): pass "
                    "mode='max' or mode='min'.",
                )
            )
        self._sign = 1.0 if direction == "up" else -1.0

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
        if self._sign is None:
            self.set_monitor_op()
        assert self._sign is not None
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
