"""Loss objects with Keras 3's arguments, names and math.

Each is a callable ``(y_true, y_pred) -> (batch,)``: the per-sample loss before
sample weighting and the batch reduction, which jaxfit applies itself (Keras'
``"sum_over_batch_size"``). So a loss object goes wherever a loss function goes:
``loss=``, a pytree of per-output losses (logged as ``<output>_loss``), or
``metrics=`` (logged under its ``name``). ``LossFunctionWrapper(fn, name=...)``
names a custom per-sample function. Formulas follow ``keras.src.losses.losses``:
label smoothing, the probability clipping to ``[1e-7, 1 - 1e-7]`` and the
renormalisation of categorical probabilities included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxfit._src import errors
from jaxfit._src.core import losses


class Loss:
    """Base of jaxfit's loss objects (as ``keras.losses.Loss``).

    Subclasses implement ``call(y_true, y_pred)``: the per-sample loss with any
    axes past the batch axis still there; ``__call__`` averages those axes.

    Attributes:
      name: the name used when the loss is a metric (as a per-output loss its
        log key stays ``<output>_loss``).
      direction: ``"down"``: lower is better (what ``mode="auto"`` reads).
    """

    name: str = "loss"
    direction = "down"

    def call(self, y_true: Any, y_pred: Any) -> jax.Array:
        """The loss per sample (and per any remaining non-batch position).

        Args:
          y_true: the targets.
          y_pred: the predictions.

        Returns:
          An array with the batch axis first.
        """
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any) -> jax.Array:
        """The per-sample loss, shape ``(batch,)``.

        Args:
          y_true: the targets, batch axis first.
          y_pred: the predictions, batch axis first.

        Returns:
          One float per sample.
        """
        return losses._per_sample(self.call(y_true, y_pred))

    @property
    def __name__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LossFunctionWrapper(Loss):
    """A per-sample function as a named loss (``keras.losses.LossFunctionWrapper``).

    Args:
      fn: ``(y_true, y_pred, **kwargs) -> (batch,)``.
      name: the name. Defaults to `None` (``fn.__name__``).
      **kwargs: keyword arguments passed to ``fn``.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, **kwargs: Any):
        if not callable(fn):
            raise TypeError(errors.expected("fn", "a callable (y_true, y_pred)", fn))
        self.fn, self.kwargs = fn, dict(kwargs)
        self.name = name or losses.name_of(fn)

    def call(self, y_true: Any, y_pred: Any) -> jax.Array:
        return self.fn(y_true, y_pred, **self.kwargs)


def _smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(errors.expected("label_smoothing", "a float in [0, 1]", value))
    if not 0.0 <= value <= 1.0:
        raise ValueError(errors.expected("label_smoothing", "a float in [0, 1]", value))
    return float(value)


def _axis(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(errors.expected("axis", "an int", value))
    return value


class _Elementwise(Loss):
    """A loss of one of ``losses``' per-sample functions, with no arguments."""

    _fn: Callable[..., jax.Array]

    def __init__(self, name: str | None = None):
        self.name = name or type(self)._default

    _default = ""

    def __call__(self, y_true: Any, y_pred: Any) -> jax.Array:
        return type(self)._fn(y_true, y_pred)


class MeanSquaredError(_Elementwise):
    """Mean of ``(y_true - y_pred) ** 2`` over the last axis.

    Args:
      name: the name. Defaults to `"mean_squared_error"`.
    """

    _fn = staticmethod(losses.mean_squared_error)
    _default = "mean_squared_error"


class MeanAbsoluteError(_Elementwise):
    """Mean of ``|y_true - y_pred|`` over the last axis.

    Args:
      name: the name. Defaults to `"mean_absolute_error"`.
    """

    _fn = staticmethod(losses.mean_absolute_error)
    _default = "mean_absolute_error"


class LogCosh(_Elementwise):
    """Mean of ``log(cosh(y_pred - y_true))`` over the last axis.

    Args:
      name: the name. Defaults to `"log_cosh"`.
    """

    _fn = staticmethod(losses.log_cosh)
    _default = "log_cosh"


class KLDivergence(_Elementwise):
    """``sum(y_true * log(y_true / y_pred))``, both clipped to ``[1e-7, 1]``.

    Args:
      name: the name. Defaults to `"kl_divergence"`.
    """

    _fn = staticmethod(losses.kl_divergence)
    _default = "kl_divergence"


class Hinge(_Elementwise):
    """Mean of ``max(1 - y_true * y_pred, 0)``; 0/1 labels become -1/1.

    Args:
      name: the name. Defaults to `"hinge"`.
    """

    _fn = staticmethod(losses.hinge)
    _default = "hinge"


class SquaredHinge(_Elementwise):
    """Mean of ``max(1 - y_true * y_pred, 0) ** 2``; 0/1 labels become -1/1.

    Args:
      name: the name. Defaults to `"squared_hinge"`.
    """

    _fn = staticmethod(losses.squared_hinge)
    _default = "squared_hinge"


class Huber(Loss):
    """Quadratic within ``delta`` of the target, linear outside (``keras.losses.Huber``).

    Args:
      delta: where the loss turns linear, > 0. Defaults to `1.0`.
      name: the name. Defaults to `"huber_loss"`.
    """

    label_kind = "elementwise"  # the labels data.checks expects

    def __init__(self, delta: float = 1.0, name: str = "huber_loss"):
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta <= 0:
            raise ValueError(errors.expected("delta", "a float > 0", delta))
        self.delta, self.name = float(delta), name

    def __call__(self, y_true: Any, y_pred: Any) -> jax.Array:
        return losses.huber(y_true, y_pred, delta=self.delta)


def _log_probs(y_pred: jax.Array, from_logits: bool) -> jax.Array:
    """Log-probabilities over the last axis: ``log_softmax`` of logits, or the
    renormalised, clipped log of probabilities (Keras)."""
    if from_logits:
        return jax.nn.log_softmax(y_pred, axis=-1)
    p = y_pred / jnp.sum(y_pred, axis=-1, keepdims=True)
    return jnp.log(jnp.clip(p, losses.EPSILON, 1.0 - losses.EPSILON))


class CategoricalCrossentropy(Loss):
    """Cross-entropy of one-hot (or soft) labels (``keras.losses.CategoricalCrossentropy``).

    Args:
      from_logits: ``y_pred`` holds logits rather than probabilities. Defaults to
        `False`.
      label_smoothing: in ``[0, 1]``; labels become ``y * (1 - s) + s / classes``.
        Defaults to `0.0`.
      axis: the class axis. Defaults to `-1`.
      name: the name. Defaults to `"categorical_crossentropy"`.
    """

    label_kind = "categorical"  # the labels data.checks expects

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        name: str = "categorical_crossentropy",
    ):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _smoothing(label_smoothing)
        self.axis, self.name = _axis(axis), name

    def call(self, y_true: Any, y_pred: Any) -> jax.Array:
        y_true, y_pred = losses._align(y_true, y_pred)
        if self.label_smoothing:  # Keras: the class count is the last axis's
            s = self.label_smoothing
            y_true = y_true * (1.0 - s) + s / y_true.shape[-1]
        y_true = jnp.moveaxis(y_true, self.axis, -1)
        y_pred = jnp.moveaxis(y_pred, self.axis, -1)
        return -jnp.sum(y_true * _log_probs(y_pred, self.from_logits), axis=-1)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy (``keras.losses.BinaryCrossentropy``).

    Args:
      from_logits: ``y_pred`` holds logits rather than probabilities. Defaults to
        `False`.
      label_smoothing: in ``[0, 1]``; labels become ``y * (1 - s) + s / 2``.
        Defaults to `0.0`.
      axis: the axis averaged over. Defaults to `-1`.
      name: the name. Defaults to `"binary_crossentropy"`.
    """

    label_kind = "binary"  # the labels data.checks expects

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        name: str = "binary_crossentropy",
    ):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _smoothing(label_smoothing)
        self.axis, self.name = _axis(axis), name

    def call(self, y_true: Any, y_pred: Any) -> jax.Array:
        y_true, y_pred = losses._align(y_true, y_pred)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            values = -y_true * jax.nn.log_sigmoid(y_pred) - (
                1.0 - y_true
            ) * jax.nn.log_sigmoid(-y_pred)
        else:
            p = jnp.clip(y_pred, losses.EPSILON, 1.0 - losses.EPSILON)
            values = -(y_true * jnp.log(p) + (1.0 - y_true) * jnp.log(1.0 - p))
        return jnp.mean(values, axis=self.axis)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy of integer labels (``keras.losses.SparseCategoricalCrossentropy``).

    Args:
      from_logits: ``y_pred`` holds logits rather than probabilities. Defaults to
        `False`.
      ignore_class: not supported: Keras rescales the batch's loss by its count
        of labels that are not ignored, a per-batch denominator jaxfit's
        per-sample losses cannot carry. Give those samples ``sample_weight`` 0
        instead. Defaults to `None`.
      name: the name. Defaults to `"sparse_categorical_crossentropy"`.
    """

    label_kind = "sparse"  # the labels data.checks expects

    def __init__(
        self,
        from_logits: bool = False,
        ignore_class: int | None = None,
        name: str = "sparse_categorical_crossentropy",
    ):
        if ignore_class is not None:
            raise ValueError(
                errors.expected(
                    "ignore_class",
                    "None (jaxfit does not rescale a batch by its count of "
                    "labels kept)",
                    ignore_class,
                    "Give the samples to ignore sample_weight 0 instead.",
                )
            )
        self.from_logits, self.name = bool(from_logits), name

    def __call__(self, y_true: Any, y_pred: Any) -> jax.Array:
        if self.from_logits:
            return losses.sparse_categorical_crossentropy_from_logits(y_true, y_pred)
        return losses.sparse_categorical_crossentropy(y_true, y_pred)
