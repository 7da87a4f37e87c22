"""Metrics: per-sample metric functions and on-device mean accumulators.

A metric maps ``(y_true, y_pred)`` to per-sample values of shape ``(batch,)``
(Keras 3 math; any axes past the batch axis are averaged); its value over an
epoch is their sample-weighted mean, accumulated on device in a ``MeanState``
with the pure, jit-able ``empty / update / merge / compute`` functions (as
CommonLoopUtils' metrics). ``resolve`` turns a name or callable into a metric
function; ``"accuracy"`` resolves to binary, sparse or categorical accuracy from
the shapes of ``y_true`` and ``y_pred``, exactly as Keras 3's
``compile_utils.get_metric``, and every loss name is a metric name too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxfit._src import errors
from jaxfit._src.core import losses

MetricFn = Callable[[Any, Any], jax.Array]
"""A per-sample metric: ``(y_true, y_pred) -> (batch,)``."""


class MeanState(NamedTuple):
    """Running sums of a weighted mean: ``total = sum(w * v)``, ``count = sum(w)``.

    Attributes:
      total: the weighted sum of the values seen, a float32 scalar.
      count: the sum of the weights seen, a float32 scalar.
    """

    total: jax.Array
    count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count


def empty() -> MeanState:
    """A zeroed accumulator.

    Returns:
      A ``MeanState`` with float32 zero ``total`` and ``count``.
    """
    return MeanState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


def update(state: MeanState, values: ArrayLike, weights: ArrayLike) -> MeanState:
    """Adds a batch of weighted values.

    Args:
      state: the accumulator so far.
      values: per-sample values, shape ``(batch,)``.
      weights: per-sample weights, broadcastable to ``values``.

    Returns:
      ``state`` with ``sum(values * weights)`` and ``sum(weights)`` added.
    """
    values = jnp.asarray(values, jnp.float32)
    weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), values.shape)
    return MeanState(
        state.total + jnp.sum(values * weights), state.count + jnp.sum(weights)
    )


def merge(a: MeanState, b: MeanState) -> MeanState:
    """Combines two accumulators.

    Args:
      a: one accumulator.
      b: another accumulator.

    Returns:
      The accumulator of both: totals and counts added.
    """
    return MeanState(a.total + b.total, a.count + b.count)


def compute(state: MeanState) -> jax.Array:
    """The weighted mean so far.

    Args:
      state: the accumulator.

    Returns:
      ``total / count`` as a float32 scalar, and 0 where nothing was counted
      (Keras' ``divide_no_nan``); computed with numpy for host (numpy) sums,
      so the driver converts fetched totals with no device call.
    """
    m = np if isinstance(state.total, (np.ndarray, np.generic)) else jnp
    counted = state.count != 0
    safe = m.where(counted, state.count, 1.0)
    return m.where(counted, state.total / safe, 0.0)


def _per_sample(values: jax.Array) -> jax.Array:
    """As float32, averaged over every axis but the batch axis."""
    values = values.astype(jnp.float32)
    if values.ndim <= 1:
        return values
    return jnp.mean(values, axis=tuple(range(1, values.ndim)))


def binary_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5
) -> jax.Array:
    """Per-sample share of ``y_true == (y_pred > threshold)`` over the last axis.

    Args:
      y_true: labels in ``{0, 1}``, shape ``(batch, ...)``.
      y_pred: probabilities (or scores), same shape as ``y_true``; a rank-1
        ``y_pred`` is read as ``(batch, 1)``.
      threshold: predictions above it count as 1.

    Returns:
      Float32 values in ``[0, 1]``, shape ``(batch,)``.
    """
    y_true, y_pred = losses._align(y_true, y_pred)
    hits = y_true == (y_pred > threshold).astype(y_pred.dtype)
    return _per_sample(jnp.mean(hits.astype(jnp.float32), axis=-1))


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """1 where ``argmax(y_true) == argmax(y_pred)``, else 0.

    Args:
      y_true: one-hot labels, shape ``(batch, ..., classes)``.
      y_pred: scores, same shape as ``y_true``.

    Returns:
      Float32 values in ``{0, 1}``, shape ``(batch,)``.
    """
    hits = jnp.argmax(y_true, axis=-1) == jnp.argmax(y_pred, axis=-1)
    return _per_sample(hits)


def _labels(y_true: ArrayLike, y_pred: jax.Array) -> jax.Array:
    """Labels of shape ``y_pred.shape[:-1]``: a trailing 1-axis is dropped."""
    labels = jnp.asarray(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    return labels


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """1 where the integer label equals ``argmax(y_pred)``, else 0.

    Args:
      y_true: integer labels, shape ``(batch, ...)`` or ``(batch, ..., 1)``.
      y_pred: scores, shape ``(batch, ..., classes)``.

    Returns:
      Float32 values in ``{0, 1}``, shape ``(batch,)``.
    """
    y_pred = jnp.asarray(y_pred)
    # As Keras, labels are compared in y_pred's (float) dtype.
    dtype = y_pred.dtype if jnp.issubdtype(y_pred.dtype, jnp.floating) else jnp.float32
    labels = _labels(y_true, y_pred).astype(dtype)
    return _per_sample(labels == jnp.argmax(y_pred, axis=-1).astype(dtype))


def _in_top_k(labels: jax.Array, y_pred: jax.Array, k: int) -> jax.Array:
    """Keras' ``in_top_k``: fewer than ``k`` scores beat the label's (NaN loses)."""
    label_score = jnp.take_along_axis(y_pred, labels[..., None], axis=-1)
    label_score = jnp.where(jnp.isnan(label_score), -jnp.inf, label_score)
    return jnp.sum(y_pred > label_score, axis=-1) < k


def top_k_categorical_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, k: int = 5
) -> jax.Array:
    """1 where the one-hot label is among the ``k`` highest predictions.

    Args:
      y_true: one-hot labels, shape ``(batch, ..., classes)``.
      y_pred: scores, same shape as ``y_true``.
      k: how many of the highest scores count.

    Returns:
      Float32 values in ``{0, 1}``, shape ``(batch,)``.
    """
    y_pred = jnp.asarray(y_pred)
    labels = jnp.argmax(jnp.asarray(y_true), axis=-1).astype(jnp.int32)
    return _per_sample(_in_top_k(labels, y_pred, k))


def sparse_top_k_categorical_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, k: int = 5
) -> jax.Array:
    """1 where the integer label is among the ``k`` highest predictions.

    Args:
      y_true: integer labels, shape ``(batch, ...)`` or ``(batch, ..., 1)``.
      y_pred: scores, shape ``(batch, ..., classes)``.
      k: how many of the highest scores count.

    Returns:
      Float32 values in ``{0, 1}``, shape ``(batch,)``.
    """
    y_pred = jnp.asarray(y_pred)
    labels = _labels(y_true, y_pred).astype(jnp.int32)
    return _per_sample(_in_top_k(labels, y_pred, k))


_METRICS: dict[str, MetricFn] = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
}
_AUTO = ("accuracy", "acc", "crossentropy", "ce")
_ACCURACY = {
    "binary": binary_accuracy,
    "sparse": sparse_categorical_accuracy,
    "categorical": categorical_accuracy,
}
_CROSSENTROPY = {
    "binary": "binary_crossentropy",
    "sparse": "sparse_categorical_crossentropy",
    "categorical": "categorical_crossentropy",
}


# names of metric objects (``metric_objects``): Keras' snake-case class names
_OBJECT_NAMES = ("auc", "f1_score", "fbeta_score", "precision", "recall")


def names() -> list[str]:
    """Every metric name ``resolve`` accepts (loss names included), sorted.

    Returns:
      The names, lowercase and sorted.
    """
    return sorted(set(_METRICS) | set(_AUTO) | set(_OBJECT_NAMES) | set(losses.names()))


def is_object(identifier: Any) -> bool:
    """Whether ``identifier`` is a metric object (``empty/update/merge/compute``).

    Args:
      identifier: anything given as a metric.

    Returns:
      True for jaxfit's metric objects and any object with those four methods.
    """
    return all(
        callable(getattr(identifier, method, None))
        for method in ("empty", "update", "merge", "compute")
    )


def _kind(y_true: Any, y_pred: Any) -> str:
    """Keras 3: binary if y_pred's last dim is 1, sparse if labels lack the class axis."""
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(pred_shape) <= 1 or pred_shape[-1] == 1:
        return "binary"
    if len(true_shape) < len(pred_shape) or (true_shape and true_shape[-1] == 1):
        return "sparse"
    return "categorical"


@errors.filter_traceback
def resolve(
    identifier: Any, y_true: Any, y_pred: Any, *, argname: str = "metrics"
) -> Any:
    """``metric_objects.resolve`` (the public ``jaxfit.metrics.resolve``) for
    everything but the names of metric objects (``"auc"``, ``"precision"``...),
    which that one builds: a per-sample function for a name, a callable or a
    metric object returned as is, and the errors naming ``argname``."""
    if is_object(identifier):
        return identifier
    fn: Callable[..., Any] | None = None
    if isinstance(identifier, str):
        name = identifier.lower()
        if name in ("accuracy", "acc"):
            fn = _ACCURACY[_kind(y_true, y_pred)]
        elif name in ("crossentropy", "ce"):
            fn = losses.get(_CROSSENTROPY[_kind(y_true, y_pred)])
        elif name in _METRICS or name in losses.names():
            fn = _METRICS.get(name) or losses.get(name)
    return losses.registered(
        fn, identifier, argname, "a metric name", names(), "per-sample values"
    )


def name_of(identifier: Any) -> str:
    """The log key of a metric.

    Args:
      identifier: a name or a callable.

    Returns:
      The name the user gave, a callable's ``__name__``, or else its type's name.
    """
    return losses.name_of(identifier)


def host_values(key: str, state: Any) -> dict[str, float]:
    """A fetched state's value as floats (on the host, no device call).

    Args:
      key: the state's log key.
      state: a ``MeanState`` or a metric object's state, of numpy arrays.

    Returns:
      ``{key: value}``; for a vector value ``{f"{key}_{i}": value[i]}``.
    """
    value = compute(state) if isinstance(state, MeanState) else state.compute()
    value = np.asarray(value)
    if value.ndim == 0:
        return {key: float(value)}
    return {f"{key}_{i}": float(v) for i, v in enumerate(value.reshape(-1))}
