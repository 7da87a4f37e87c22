"""Losses: per-sample loss functions with Keras 3 math, and a name registry.

Every loss maps ``(y_true, y_pred)`` with a leading batch axis to a vector of
shape ``(batch,)``: the per-sample loss before sample weighting and batch
reduction. As in Keras, a loss is computed over the last axis (e.g. the mean over
the last axis for ``mean_squared_error``); any remaining non-batch axes are then
averaged. A rank-1 ``y_pred`` is treated as ``(batch, 1)``, and a ``y_true`` one
rank short of a ``y_pred`` whose last axis is 1 is expanded (Keras'
``squeeze_or_expand_to_same_rank``). The probability forms of the cross-entropies
clip to ``[1e-7, 1 - 1e-7]`` exactly as Keras does; the ``*_from_logits`` forms
are built on ``optax.losses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from jaxfit._src import errors

EPSILON = 1e-7
LossFn = Callable[[Any, Any], jax.Array]
"""A per-sample loss: ``(y_true, y_pred) -> (batch,)``."""


def _align(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Keras' rank alignment; ``y_true`` cast to ``y_pred``'s float dtype."""
    y_pred = jnp.asarray(y_pred)
    y_true = jnp.asarray(y_true)
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    if not jnp.issubdtype(y_pred.dtype, jnp.floating):
        y_pred = y_pred.astype(jnp.float32)
    return y_true.astype(y_pred.dtype), y_pred


def _per_sample(values: jax.Array) -> jax.Array:
    """Mean over every axis but the batch axis."""
    if values.ndim <= 1:
        return values
    return jnp.mean(values, axis=tuple(range(1, values.ndim)))


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample mean of ``(y_true - y_pred) ** 2`` over the last axis.

    Args:
      y_true: targets, shape ``(batch, ...)``.
      y_pred: predictions, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    return _per_sample(jnp.mean(jnp.square(y_true - y_pred), axis=-1))


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample mean of ``|y_true - y_pred|`` over the last axis.

    Args:
      y_true: targets, shape ``(batch, ...)``.
      y_pred: predictions, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    return _per_sample(jnp.mean(jnp.abs(y_true - y_pred), axis=-1))


def huber(y_true: ArrayLike, y_pred: ArrayLike, delta: float = 1.0) -> jax.Array:
    """Per-sample Huber loss (quadratic within ``delta``, linear outside).

    Args:
      y_true: targets, shape ``(batch, ...)``.
      y_pred: predictions, same shape as ``y_true``.
      delta: where the loss turns from quadratic to linear.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    values = optax.losses.huber_loss(y_pred, y_true, delta=delta)
    return _per_sample(jnp.mean(values, axis=-1))


def log_cosh(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample mean of ``log(cosh(y_pred - y_true))`` over the last axis.

    Args:
      y_true: targets, shape ``(batch, ...)``.
      y_pred: predictions, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    x = y_pred - y_true
    values = (
        x + jnp.logaddexp(-2.0 * x, 0.0).astype(x.dtype) - jnp.log(2.0).astype(x.dtype)
    )
    return _per_sample(jnp.mean(values, axis=-1))


def _hinge_labels(y_true: jax.Array) -> jax.Array:
    """Keras: labels in {0, 1} become {-1, 1}; others are used as given."""
    binary = jnp.all((y_true == 0) | (y_true == 1))
    return jnp.where(binary, 2.0 * y_true - 1.0, y_true).astype(y_true.dtype)


def hinge(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample mean of ``max(1 - y_true * y_pred, 0)``; 0/1 labels map to -1/1.

    Args:
      y_true: labels in ``{-1, 1}`` (or ``{0, 1}``, mapped to ``{-1, 1}``).
      y_pred: scores, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    y_true = _hinge_labels(y_true)
    return _per_sample(jnp.mean(jnp.maximum(1.0 - y_true * y_pred, 0.0), axis=-1))


def squared_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample mean of ``max(1 - y_true * y_pred, 0) ** 2``.

    Args:
      y_true: labels in ``{-1, 1}`` (or ``{0, 1}``, mapped to ``{-1, 1}``).
      y_pred: scores, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    y_true = _hinge_labels(y_true)
    values = jnp.square(jnp.maximum(1.0 - y_true * y_pred, 0.0))
    return _per_sample(jnp.mean(values, axis=-1))


def kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample ``sum(y_true * log(y_true / y_pred))``, both clipped to [1e-7, 1].

    Args:
      y_true: a distribution over the last axis.
      y_pred: a distribution over the last axis.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    y_true = jnp.clip(y_true, EPSILON, 1.0)
    y_pred = jnp.clip(y_pred, EPSILON, 1.0)
    return _per_sample(jnp.sum(y_true * jnp.log(y_true / y_pred), axis=-1))


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample binary cross-entropy of probabilities (Keras clipping).

    Args:
      y_true: labels in ``[0, 1]``, shape ``(batch, ...)``.
      y_pred: probabilities, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    p = jnp.clip(y_pred, EPSILON, 1.0 - EPSILON)
    values = -(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p))
    return _per_sample(jnp.mean(values, axis=-1))


def binary_crossentropy_from_logits(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample binary cross-entropy of logits (``optax.losses``).

    Args:
      y_true: labels in ``[0, 1]``, shape ``(batch, ...)``.
      y_pred: logits, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    values = optax.losses.sigmoid_binary_cross_entropy(y_pred, y_true)
    return _per_sample(jnp.mean(values, axis=-1))


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample cross-entropy of one-hot (or soft) labels and probabilities.

    As Keras: ``y_pred`` is renormalised to sum to one, then clipped.

    Args:
      y_true: one-hot or soft labels, shape ``(batch, ..., classes)``.
      y_pred: probabilities, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    p = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    return _per_sample(-jnp.sum(y_true * jnp.log(p), axis=-1))


def categorical_crossentropy_from_logits(
    y_true: ArrayLike, y_pred: ArrayLike
) -> jax.Array:
    """Per-sample cross-entropy of one-hot (or soft) labels and logits.

    Args:
      y_true: one-hot or soft labels, shape ``(batch, ..., classes)``.
      y_pred: logits, same shape as ``y_true``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    y_true, y_pred = _align(y_true, y_pred)
    return _per_sample(optax.losses.softmax_cross_entropy(y_pred, y_true))


def _sparse_labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Integer labels of shape ``y_pred.shape[:-1]`` (a trailing 1-axis is dropped)."""
    y_pred = jnp.asarray(y_pred)
    labels = jnp.asarray(y_true)
    if labels.ndim == y_pred.ndim:
        labels = labels[..., 0]
    return labels.astype(jnp.int32), y_pred


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike) -> jax.Array:
    """Per-sample cross-entropy of integer labels and probabilities (Keras clipping).

    Args:
      y_true: integer labels, shape ``(batch, ...)`` or ``(batch, ..., 1)``.
      y_pred: probabilities, shape ``(batch, ..., classes)``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    labels, y_pred = _sparse_labels(y_true, y_pred)
    p = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
    p = jnp.clip(p, EPSILON, 1.0 - EPSILON)
    picked = jnp.take_along_axis(jnp.log(p), labels[..., None], axis=-1)[..., 0]
    return _per_sample(-picked)


def sparse_categorical_crossentropy_from_logits(
    y_true: ArrayLike, y_pred: ArrayLike
) -> jax.Array:
    """Per-sample cross-entropy of integer labels and logits (``optax.losses``).

    Args:
      y_true: integer labels, shape ``(batch, ...)`` or ``(batch, ..., 1)``.
      y_pred: logits, shape ``(batch, ..., classes)``.

    Returns:
      The per-sample loss, shape ``(batch,)``.
    """
    labels, y_pred = _sparse_labels(y_true, y_pred)
    return _per_sample(
        optax.losses.softmax_cross_entropy_with_integer_labels(y_pred, labels)
    )


_LOSSES: dict[str, LossFn] = {
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error,
    "mean_absolute_error": mean_absolute_error,
    "huber": huber,
    "huber_loss": huber,
    "log_cosh": log_cosh,
    "logcosh": log_cosh,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "kld": kl_divergence,
    "kl_divergence": kl_divergence,
    "kullback_leibler_divergence": kl_divergence,
    "binary_crossentropy": binary_crossentropy,
    "binary_crossentropy_from_logits": binary_crossentropy_from_logits,
    "categorical_crossentropy": categorical_crossentropy,
    "categorical_crossentropy_from_logits": categorical_crossentropy_from_logits,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "sparse_categorical_crossentropy_from_logits": (
        sparse_categorical_crossentropy_from_logits
    ),
}


def names() -> list[str]:
    """The registered loss names (Keras aliases included), sorted.

    Returns:
      The names ``get`` accepts, lowercase and sorted.
    """
    return sorted(_LOSSES)


@errors.filter_traceback
def get(identifier: Any, *, argname: str = "loss") -> LossFn:
    """Returns the loss function for a name (case-insensitive) or a callable.

    Args:
      identifier: a registered name (see ``names()``; case-insensitive) or a
        callable ``(y_true, y_pred) -> (batch,)``, returned as is.
      argname: the argument name used in error messages. Defaults to ``"loss"``.

    Returns:
      The per-sample loss function; a ``ValueError`` for an unknown name and a
      ``TypeError`` for anything else, naming ``argname`` and the known names.
    """
    fn = _LOSSES.get(identifier.lower()) if isinstance(identifier, str) else None
    return registered(
        fn, identifier, argname, "a loss name", names(), "per-sample loss"
    )


def registered(
    fn: Any, identifier: Any, argname: str, kind: str, known: list[str], returns: str
) -> Any:
    """``fn`` (what a registered name resolved to), else a callable ``identifier``
    as is, else the error naming the known names (shared with metrics)."""
    if fn is not None:
        return fn
    if callable(identifier) and not isinstance(identifier, str):
        return identifier
    what = (
        f"{kind} (one of {', '.join(repr(n) for n in known)}) or a callable "
        f"(y_true, y_pred) -> {returns}"
    )
    error = ValueError if isinstance(identifier, str) else TypeError
    raise error(errors.expected(argname, what, identifier))


def name_of(identifier: Any) -> str:
    """The log name of a loss or metric identifier.

    Args:
      identifier: a name or a callable.

    Returns:
      The string itself, a loss or metric object's ``name``, a callable's
      ``__name__``, or else its type's name.
    """
    if isinstance(identifier, str):
        return identifier
    name = getattr(identifier, "name", None)  # a loss or metric object's name
    if isinstance(name, str) and not isinstance(identifier, type):
        return name
    return getattr(identifier, "__name__", type(identifier).__name__)
