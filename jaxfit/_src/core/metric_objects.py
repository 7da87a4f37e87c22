"""Mean metrics as objects (``MeanMetricWrapper`` and Keras' accuracy classes), and
``get``: any metric identifier to a built metric object.

A mean metric averages a per-sample function ``(y_true, y_pred) -> (batch,)``
with sample weights in a ``metrics.MeanState``. ``MeanMetricWrapper(fn,
name=...)`` names a custom function (a lambda is otherwise logged as
``<lambda>``); ``BinaryAccuracy(threshold=0.7)`` and the top-k classes carry
Keras' arguments. A loss object (``jaxfit.losses.Huber(delta=2.0)``) is a metric
too: its per-sample loss averaged, logged under the loss's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.core import confusion_metrics, metric_base, metrics

_PER_SAMPLE = (
    "A metric callable must return one value per sample, shape (batch,); do not "
    "reduce over the batch (or wrap it in a metric object)."
)


class MeanMetricWrapper(metric_base.Metric):
    """The sample-weighted mean of a per-sample function (``keras.metrics.MeanMetricWrapper``).

    Args:
      fn: ``(y_true, y_pred, **kwargs) -> (batch,)``: one value per sample.
      name: the log key. Defaults to `None` (``fn.__name__``).
      **kwargs: keyword arguments passed to ``fn`` on every call.

    Example:
      >>> import jaxfit
      >>> m = jaxfit.metrics.MeanMetricWrapper(lambda t, p: abs(t - p)[:, 0], name="gap")
      >>> m.name
      'gap'
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, **kwargs: Any):
        if not callable(fn):
            raise TypeError(
                errors.expected("fn", "a callable (y_true, y_pred) -> (batch,)", fn)
            )
        self.fn = fn
        self.kwargs = dict(kwargs)
        self.name = name or metrics.name_of(fn)

    def _config(self) -> tuple[Any, ...]:
        return (self.name, self.fn, tuple(sorted(self.kwargs.items())))

    def per_sample(self, y_true: Any, y_pred: Any) -> jax.Array:
        """The wrapped function's per-sample values.

        Args:
          y_true: the batch's labels.
          y_pred: the batch's predictions.

        Returns:
          ``fn(y_true, y_pred, **kwargs)``, shape ``(batch,)``.
        """
        return self.fn(y_true, y_pred, **self.kwargs)

    def build(self, y_true: Any, y_pred: Any) -> MeanMetricWrapper:
        """Checks that the function gives one value per sample (shapes only).

        Args:
          y_true: one output's labels (array or shape struct, batch axis first).
          y_pred: the model's output for it.

        Returns:
          ``self``; a ``ValueError`` naming ``metrics`` and the shape returned
          where it is not ``(batch,)``.
        """
        batch = tuple(y_pred.shape)[:1]
        try:
            out = jax.eval_shape(self.per_sample, y_true, y_pred)
        except (TypeError, ValueError) as error:
            raise ValueError(
                errors.expected(
                    "metrics",
                    f"metric {self.name!r} computable on y of shape "
                    f"{tuple(y_true.shape)} and predictions of shape "
                    f"{tuple(y_pred.shape)}",
                    errors.Description(f"an error: {str(error).splitlines()[0]}"),
                )
            ) from None
        shape = tuple(getattr(out, "shape", ()))
        if shape != batch:
            raise ValueError(
                errors.expected(
                    "metrics",
                    f"per-sample values of shape {batch} from metric {self.name!r}",
                    errors.Description(f"values of shape {shape}"),
                    _PER_SAMPLE,
                )
            )
        return self

    def empty(self) -> metrics.MeanState:
        return metrics.empty()

    def update(self, state, y_true, y_pred, sample_weight):
        return metrics.update(state, self.per_sample(y_true, y_pred), sample_weight)

    def compute(self, state: metrics.MeanState) -> Any:
        return metrics.compute(state)


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` equals the 0/1 label (``keras.metrics.BinaryAccuracy``).

    Args:
      name: the log key. Defaults to `"binary_accuracy"`.
      threshold: predictions above it count as 1. Defaults to `0.5`.
    """

    direction = "up"  # higher is better (mode="auto")

    def __init__(self, name: str = "binary_accuracy", threshold: float = 0.5):
        super().__init__(metrics.binary_accuracy, name=name, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` equals ``argmax(y_true)`` (one-hot labels).

    Args:
      name: the log key. Defaults to `"categorical_accuracy"`.
    """

    direction = "up"  # higher is better (mode="auto")

    def __init__(self, name: str = "categorical_accuracy"):
        super().__init__(metrics.categorical_accuracy, name=name)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` equals the integer label.

    Args:
      name: the log key. Defaults to `"sparse_categorical_accuracy"`.
    """

    direction = "up"  # higher is better (mode="auto")

    def __init__(self, name: str = "sparse_categorical_accuracy"):
        super().__init__(metrics.sparse_categorical_accuracy, name=name)


def _k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(errors.expected("k", "an int >= 1", k))
    return k


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot label is among the ``k`` highest scores.

    Args:
      k: how many of the highest scores count. Defaults to `5`.
      name: the log key. Defaults to `"top_k_categorical_accuracy"`.
    """

    direction = "up"  # higher is better (mode="auto")

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy"):
        super().__init__(metrics.top_k_categorical_accuracy, name=name, k=_k(k))


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest scores.

    Args:
      k: how many of the highest scores count. Defaults to `5`.
      name: the log key. Defaults to `"sparse_top_k_categorical_accuracy"`.
    """

    direction = "up"  # higher is better (mode="auto")

    def __init__(self, k: int = 5, name: str = "sparse_top_k_categorical_accuracy"):
        super().__init__(metrics.sparse_top_k_categorical_accuracy, name=name, k=_k(k))


_OBJECTS: dict[str, Callable[..., metric_base.Metric]] = {
    "auc": confusion_metrics.AUC,
    "precision": confusion_metrics.Precision,
    "recall": confusion_metrics.Recall,
    "f1_score": confusion_metrics.F1Score,
    "fbeta_score": confusion_metrics.FBetaScore,
}


def names() -> list[str]:
    """The metric names that stand for metric objects (``"auc"``, ...), sorted.

    Returns:
      The names.
    """
    return sorted(_OBJECTS)


@errors.filter_traceback
def get(
    identifier: Any, y_true: Any, y_pred: Any, *, argname: str = "metrics"
) -> metric_base.Metric:
    """The built metric object for any metric identifier.

    Args:
      identifier: a metric object (returned built), a name (``metrics.names()``:
        ``"auc"`` and the like make the Keras class with its defaults, the mean
        metrics and losses a ``MeanMetricWrapper`` named as written), or a
        per-sample callable (a ``MeanMetricWrapper`` named by ``__name__``).
      y_true: one output's labels (array or shape struct; shapes only).
      y_pred: the model's output for it (shapes only).
      argname: the argument named in errors. Defaults to `"metrics"`.

    Returns:
      The metric, built for these shapes and checked to produce a value.
    """
    if isinstance(identifier, metric_base.Metric):
        return identifier.build(y_true, y_pred)
    if isinstance(identifier, str) and identifier.lower() in _OBJECTS:
        return _OBJECTS[identifier.lower()](name=identifier).build(y_true, y_pred)
    fn = metrics.resolve(identifier, y_true, y_pred, argname=argname)
    wrapper = MeanMetricWrapper(fn, name=metrics.name_of(identifier))
    return wrapper.build(y_true, y_pred)


@errors.filter_traceback
def resolve(
    identifier: Any, y_true: Any, y_pred: Any, *, argname: str = "metrics"
) -> Any:
    """Returns the metric for a name, callable or object, given the data's shapes.

    Args:
      identifier: a metric or loss name (see ``names()``; case-insensitive), a
        callable ``(y_true, y_pred) -> (batch,)`` or a metric object (e.g.
        ``AUC()``), both returned as is. ``"auc"``, ``"precision"``,
        ``"recall"``, ``"f1_score"`` and ``"fbeta_score"`` give the Keras class
        with its defaults, built for these shapes; ``"accuracy"`` / ``"acc"``
        (and ``"crossentropy"`` / ``"ce"``) pick the binary, sparse or
        categorical form from the shapes, as Keras 3.
      y_true: anything with a ``.shape`` (an array or ``jax.ShapeDtypeStruct``).
      y_pred: anything with a ``.shape``; only shapes are read.
      argname: the argument name for error messages. Defaults to ``"metrics"``.

    Returns:
      The per-sample metric function or metric object; a ``ValueError`` for an
      unknown name and a ``TypeError`` for anything else, naming ``argname`` and
      the known names.
    """
    if isinstance(identifier, str) and identifier.lower() in _OBJECTS:
        return get(identifier, y_true, y_pred, argname=argname)
    return metrics.resolve(identifier, y_true, y_pred, argname=argname)
