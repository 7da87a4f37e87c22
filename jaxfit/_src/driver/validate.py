"""Argument checks for the training calls, all run before anything compiles.

(``positive_int`` and ``non_negative_int`` live in ``errors`` for every layer.)
"""

from __future__ import annotations

import numbers
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import losses
from jaxfit._src.core import metric_objects as metrics_lib
from jaxfit._src.errors import non_negative_int, positive_int


def validation_split(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= cast(float, value) < 1.0  # a Real: typeshed has no float <= Real
    ):
        raise ValueError(
            errors.expected("validation_split", "a float in [0, 1)", value)
        )


def validation_data(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise ValueError(
            errors.expected(
                "validation_data", "a tuple (x, y) or (x, y, sample_weight)", value
            )
        )


def producer_timeout(value: Any) -> None:
    """Seconds to wait for a stream's batch: a positive number, or ``None``."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not cast(float, value) > 0  # refuses NaN too
    ):
        raise ValueError(
            errors.expected(
                "producer_timeout",
                "a positive number of seconds, or None (wait as long as it takes)",
                value,
            )
        )


def unused_without_validation(args: Any, *names: str, needs: str) -> None:
    """A validation control set (away from its default) in a call that does not
    validate cannot act: refused, naming it (a control that cannot act is an
    error). ``needs``: what would make the call validate."""
    for name in names:
        value = getattr(args, name)
        if value != type(args).__dataclass_fields__[name].default:
            raise ValueError(
                errors.expected(
                    name,
                    f"it only with {needs} (it shapes validation alone)",
                    errors.Description(
                        f"{name}={value!r} without "
                        + ("either" if " or " in needs else "it")
                    ),
                    f"Pass {needs}, or leave {name} out.",
                )
            )


def validation_freq(value: Any) -> None:
    if isinstance(value, (list, tuple, set)):
        for item in value:
            positive_int("validation_freq", item)
        return
    positive_int("validation_freq", value)


def verbose(value: Any) -> None:
    if value not in ("auto", 0, 1, 2) or isinstance(value, bool):
        raise ValueError(errors.expected("verbose", "one of 'auto', 0, 1, 2", value))


def class_weight(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, numbers.Integral)
        and cast(int, k) >= 0
        and isinstance(v, numbers.Real)
        for k, v in value.items()
    ):
        raise ValueError(
            errors.expected(
                "class_weight",
                "a dict mapping class indices (int >= 0) to weights",
                value,
            )
        )


def epochs(epochs_value: Any, initial_epoch: Any) -> None:
    non_negative_int("epochs", epochs_value)
    non_negative_int("initial_epoch", initial_epoch)


def arrays(tree: Any, argname: str, trainable: bool) -> None:
    """Every leaf an array of numbers; trainable ones (params) floating point.

    Raises at construction, naming the leaf path, instead of an error from inside
    ``jax.grad`` at the first step.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = argname + jax.tree_util.keystr(path)
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            try:
                dtype = np.asarray(leaf).dtype
            except Exception:  # noqa: BLE001 - whatever numpy makes of it
                dtype = np.dtype(object)
        if (
            dtype.kind in "OUSV"
            and not jnp.issubdtype(dtype, jnp.inexact)
            and not (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))
        ):
            raise TypeError(
                errors.expected(
                    where,
                    "an array of numbers",
                    leaf,
                    "Keep strings and other Python objects out of the params and state "
                    "(close over them in apply_fn).",
                )
            )
        if trainable and not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                errors.expected(
                    where,
                    "a floating-point array (params are what the optimizer trains)",
                    leaf,
                    "Make it a float array (e.g. jnp.float32), or pass non-trainable "
                    "values (counters, integer tables) as Trainer(..., state=...) to an "
                    "apply_fn that declares `state`.",
                )
            )


def optimizer(optimizer: Any) -> None:
    if optimizer is not None and not (
        hasattr(optimizer, "init") and hasattr(optimizer, "update")
    ):
        raise TypeError(
            errors.expected(
                "optimizer",
                "an optax.GradientTransformation, e.g. optax.adam(1e-3)",
                optimizer,
            )
        )


def names(loss: Any, metrics: Any, weighted_metrics: Any) -> None:
    """Unknown loss or metric names fail at construction, before any data is seen."""

    def leaves(tree):
        return jax.tree.leaves(
            tree, is_leaf=lambda v: isinstance(v, str) or callable(v)
        )

    for leaf in leaves(loss):
        losses.get(leaf, argname="loss")
    probe = jax.ShapeDtypeStruct((1, 2), jnp.float32)
    for argname, spec in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
        for leaf in leaves(spec):
            metrics_lib.resolve(leaf, probe, probe, argname=argname)
