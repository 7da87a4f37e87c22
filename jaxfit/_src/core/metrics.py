"""Metrics: per-sample metric functions and on-device mean accumulators.

A metric maps ``(y_true, y_pred)`` to per-sample values of shape ``(batch,)``;
its value over an epoch is their sample-weighted mean, accumulated on device in a
``MeanState`` with the pure ``empty / update / merge / compute`` functions (as
CommonLoopUtils' metrics). ``"accuracy"`` resolves to binary, sparse or
categorical accuracy from the shapes of ``y_true`` and ``y_pred``, exactly as
Keras 3's ``compile_utils.get_metric``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxfit._src import errors
from jaxfit._src.core import losses

MetricFn = Callable[[Any, Any], Any]


class MeanState(NamedTuple):
    """Running sums of a weighted mean: ``total = sum(w * v)``, ``count = sum(w)``."""

    total: jax.Array
    count: jax.Array


def empty() -> MeanState:
    """A zeroed accumulator."""
    return MeanState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


def update(state: MeanState, values: Any, weights: Any) -> MeanState:
    """Adds ``sum(values * weights)`` and ``sum(weights)``."""
    values = jnp.asarray(values, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    return MeanState(
        state.total + jnp.sum(values * weights), state.count + jnp.sum(weights)
    )


def merge(a: MeanState, b: MeanState) -> MeanState:
    """The accumulator of both: sums added."""
    return MeanState(a.total + b.total, a.count + b.count)


def compute(state: MeanState) -> jax.Array:
    """``total / count``, and 0 where nothing was counted (Keras' divide_no_nan)."""
    safe = jnp.where(state.count > 0, state.count, 1.0)
    return jnp.where(state.count > 0, state.total / safe, 0.0)


def _per_sample(values):
    values = values.astype(jnp.float32)
    if values.ndim <= 1:
        return values
    return jnp.mean(values, axis=tuple(range(1, values.ndim)))


def binary_accuracy(y_true, y_pred, threshold: float = 0.5):
    """Per-sample share of ``y_true == (y_pred > threshold)`` over the last axis."""
    y_true, y_pred = losses._align(y_true, y_pred)
    hits = y_true == (y_pred > threshold).astype(y_pred.dtype)
    return _per_sample(jnp.mean(hits.astype(jnp.float32), axis=-1))


def categorical_accuracy(y_true, y_pred):
    """1 where ``argmax(y_true) == argmax(y_pred)``, else 0."""
    hits = jnp.argmax(y_true, axis=-1) == jnp.argmax(y_pred, axis=-1)
    return _per_sample(hits)


def _labels(y_true, y_pred):
    labels = jnp.asarray(y_true)
    if labels.ndim == jnp.ndim(y_pred):
        labels = labels[..., 0]
    return labels.astype(jnp.int32)


def sparse_categorical_accuracy(y_true, y_pred):
    """1 where the integer label equals ``argmax(y_pred)``, else 0."""
    return _per_sample(_labels(y_true, y_pred) == jnp.argmax(y_pred, axis=-1))


def _in_top_k(labels, y_pred, k):
    label_score = jnp.take_along_axis(y_pred, labels[..., None], axis=-1)
    # As Keras' in_top_k: the label is in the top k if fewer than k scores beat it.
    return jnp.sum(y_pred > label_score, axis=-1) < k


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5):
    """1 where the one-hot label is among the ``k`` highest predictions."""
    labels = jnp.argmax(y_true, axis=-1).astype(jnp.int32)
    return _per_sample(_in_top_k(labels, y_pred, k))


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5):
    """1 where the integer label is among the ``k`` highest predictions."""
    return _per_sample(_in_top_k(_labels(y_true, y_pred), y_pred, k))


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


def names() -> list[str]:
    """Every metric name ``resolve`` accepts (loss names included), sorted."""
    return sorted(set(_METRICS) | set(_AUTO) | set(losses.names()))


def _kind(y_true: Any, y_pred: Any) -> str:
    """Keras 3: binary if y_pred's last dim is 1, sparse if labels lack the class axis."""
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(pred_shape) <= 1 or pred_shape[-1] == 1:
        return "binary"
    if len(true_shape) < len(pred_shape) or true_shape[-1] == 1:
        return "sparse"
    return "categorical"


def resolve(identifier: Any, y_true: Any, y_pred: Any, *,
            argname: str = "metrics") -> MetricFn:
    """Returns the metric function for a name or callable, given the data's shapes.

    Args:
      identifier: a metric or loss name, or a callable ``(y_true, y_pred) ->
        (batch,)``. ``"accuracy"`` / ``"acc"`` (and ``"crossentropy"`` / ``"ce"``)
        pick the binary, sparse or categorical form from the shapes, as Keras 3.
      y_true, y_pred: arrays or ``jax.ShapeDtypeStruct``s; only shapes are read.
      argname: the argument name for error messages. Defaults to `"metrics"`.

    Raises:
      ValueError: for an unknown name. TypeError: for anything else.
    """
    if isinstance(identifier, str):
        name = identifier.lower()
        if name in ("accuracy", "acc"):
            return _ACCURACY[_kind(y_true, y_pred)]
        if name in ("crossentropy", "ce"):
            return losses.get(_CROSSENTROPY[_kind(y_true, y_pred)])
        if name in _METRICS:
            return _METRICS[name]
        if name in losses.names():
            return losses.get(name)
    elif callable(identifier):
        return identifier
    what = (
        f"a metric name (one of {', '.join(repr(n) for n in names())}) or a callable "
        "(y_true, y_pred) -> per-sample values"
    )
    if isinstance(identifier, str):
        raise ValueError(errors.expected(argname, what, identifier))
    raise TypeError(errors.expected(argname, what, identifier))


def name_of(identifier: Any) -> str:
    """The log key of a metric: the name the user gave, or a callable's ``__name__``."""
    return losses.name_of(identifier)
