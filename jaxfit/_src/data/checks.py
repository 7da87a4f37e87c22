"""Label checks before the first step: what the chosen losses and metrics need of y.

Run on the host once over whole arrays (``fit``, ``evaluate``, validation data),
and per batch in the feeder thread for streams. Each loss or metric function that
reads ``y`` as labels declares a *kind*:

- ``"sparse"``: integer class indices in ``[0, C)``, shaped like the model's output
  without its class axis (a trailing axis of 1 allowed), where ``C`` is the
  output's last dimension;
- ``"categorical"``: one row of ``C`` per sample (one-hot or probabilities), shaped
  like the output;
- ``"binary"``: 0/1 labels or probabilities in ``[0, 1]``, shaped like the output;
- ``"elementwise"`` (regression losses): shaped like the output. Wherever "shaped
  like the output" is asked, a missing or extra trailing axis of 1 is allowed, as
  Keras aligns ``(N,)`` with ``(N, 1)``.

Every error names the argument (``y``, ``validation_data.y``, ``dataset batch 3:
y``) and the output's leaf path, says what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src.core import losses, metrics

_KINDS: dict[Callable[..., Any], str] = {
    losses.sparse_categorical_crossentropy: "sparse",
    losses.sparse_categorical_crossentropy_from_logits: "sparse",
    metrics.sparse_categorical_accuracy: "sparse",
    metrics.sparse_top_k_categorical_accuracy: "sparse",
    losses.categorical_crossentropy: "categorical",
    losses.categorical_crossentropy_from_logits: "categorical",
    metrics.categorical_accuracy: "categorical",
    metrics.top_k_categorical_accuracy: "categorical",
    losses.binary_crossentropy: "binary",
    losses.binary_crossentropy_from_logits: "binary",
    metrics.binary_accuracy: "binary",
    losses.mean_squared_error: "elementwise",
    losses.mean_absolute_error: "elementwise",
    losses.huber: "elementwise",
    losses.log_cosh: "elementwise",
    losses.hinge: "elementwise",
    losses.squared_hinge: "elementwise",
    losses.kl_divergence: "elementwise",
}


def _shape(shape: tuple) -> str:
    """``(N, 3)``: a shape with its batch axis written N."""
    return "(" + ", ".join(["N", *map(str, shape)]) + (",)" if not shape else ")")


def _aligned(feature: tuple, pred_feature: tuple) -> bool:
    """Keras' alignment: equal, or equal but for a trailing axis of 1."""
    return (
        feature == pred_feature
        or feature + (1,) == pred_feature
        or feature == pred_feature + (1,)
    )


def kind_of(fn: Callable[..., Any]) -> str | None:
    """The label kind a built-in loss or metric needs; ``None`` for the others.

    A loss or metric object says its kind (``label_kind``), or wraps a built-in
    function (``fn``, or its class's ``_fn``) whose kind it has.
    """
    kind = getattr(fn, "label_kind", None)
    if isinstance(kind, str):
        return kind
    inner = getattr(fn, "fn", None) or getattr(type(fn), "_fn", None)
    if callable(inner) and inner is not fn:
        return kind_of(inner)
    try:
        return _KINDS.get(fn)
    except TypeError:  # an unhashable callable: not a built-in
        return None


def _name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "name", None)  # a loss or metric object's log name
    return name if isinstance(name, str) else getattr(fn, "__name__", type(fn).__name__)


def _summary(labels: Any) -> tuple[float, float, bool]:
    """``(min, max, every value is a whole number)``, on the host for numpy arrays,
    reduced on the device (three scalars fetched) for ``jax.Array``s."""
    if labels.size == 0:
        return 0.0, 0.0, True
    if isinstance(labels, jax.Array):
        whole = (
            jnp.all(labels == jnp.round(labels))
            if jnp.issubdtype(labels.dtype, jnp.floating)
            else True
        )
        low, high, whole = jax.device_get((jnp.min(labels), jnp.max(labels), whole))
        return float(low), float(high), bool(whole)
    whole = not np.issubdtype(labels.dtype, np.floating) or bool(
        np.all(labels == np.round(labels))
    )
    return float(np.min(labels)), float(np.max(labels)), whole


def _first_where(labels: Any, bad: Callable[[np.ndarray], np.ndarray]) -> str:
    """``"row 12 holds 5"``: the first offending sample, for the message."""
    host = np.asarray(labels)
    flat = host.reshape(host.shape[0], -1) if host.ndim else host.reshape(1, 1)
    rows = np.nonzero(np.any(bad(flat), axis=1))[0]
    if not rows.size:
        return ""
    row = int(rows[0])
    values = flat[row][bad(flat[row][None])[0]]
    value = values[0].item() if values.size else flat[row][0].item()
    return f" (row {row} holds {value!r})"


def check_output(
    kinds: Iterable[tuple[str, str]], labels: Any, pred_shape: tuple, where: str
) -> None:
    """Checks one output's labels against what its losses and metrics need.

    Args:
      kinds: ``(kind, function name)`` for each loss / metric of this output that
        has a kind.
      labels: the output's ``y`` leaf (numpy or ``jax.Array``), with its batch axis.
      pred_shape: the model output's shape for this leaf, batch axis included.
      where: the argument and leaf for messages, e.g. ``"y"`` or ``"y['cls']"``.
    """
    abstract = isinstance(labels, jax.ShapeDtypeStruct)  # shapes only, no values
    feature, pred = tuple(labels.shape)[1:], tuple(pred_shape)[1:]
    for kind, name in kinds:
        if kind == "sparse":
            _sparse_shape(feature, pred, name, where)
            if not abstract:
                _sparse_values(labels, pred[-1], name, where)
        elif kind == "categorical":
            _categorical_shape(feature, pred, name, where)
        elif not _aligned(feature, pred):  # binary and elementwise
            raise ValueError(
                f"{where}: expected labels shaped like the model's output "
                f"{_shape(pred)} for {name}, got shape {_shape(feature)}."
            )
        if kind == "binary" and not abstract:
            low, high, _ = _summary(labels)
            if low < 0 or high > 1:
                raise ValueError(
                    f"{where}: expected 0/1 labels or probabilities in [0, 1] for "
                    f"{name}, got values from {low:g} to {high:g}"
                    f"{_first_where(labels, lambda a: (a < 0) | (a > 1))}."
                )


def _sparse_shape(feature: tuple, pred: tuple, name: str, where: str) -> None:
    """Class indices: the output's shape without its class axis (or with a 1)."""
    if pred and feature in (pred[:-1], pred[:-1] + (1,)):
        return
    hint = (
        " One-hot labels? Use categorical_crossentropy (or keep the sparse loss "
        "and pass integer class indices)."
        if feature == pred
        else ""
    )
    raise ValueError(
        f"{where}: expected integer class indices of shape {_shape(pred[:-1])} or "
        f"{_shape(pred[:-1] + (1,))} for {name} (the model outputs {_shape(pred)}), "
        f"got labels of shape {_shape(feature)}.{hint}"
    )


def _sparse_values(labels: Any, classes: int, name: str, where: str) -> None:
    """Class indices: whole numbers in ``[0, classes)``."""
    low, high, whole = _summary(labels)
    if not whole:
        raise ValueError(
            f"{where}: expected integer class indices for {name}, got non-integer "
            f"values{_first_where(labels, lambda a: a != np.round(a))}. Sparse losses "
            "take class indices; for probabilities use categorical_crossentropy."
        )
    if low < 0 or high >= classes:
        raise ValueError(
            f"{where}: expected class indices in [0, {classes}) for {name} (the model "
            f"outputs {classes} classes), got values from {low:g} to {high:g}"
            f"{_first_where(labels, lambda a: (a < 0) | (a >= classes))}."
        )


def _categorical_shape(feature: tuple, pred: tuple, name: str, where: str) -> None:
    """One row of C per sample: the output's shape."""
    if feature == pred:
        return
    hint = (
        " Integer class indices? Use sparse_categorical_crossentropy (or one-hot "
        "encode y)."
        if pred and feature in (pred[:-1], pred[:-1] + (1,))
        else ""
    )
    raise ValueError(
        f"{where}: expected one row of {pred[-1] if pred else 1} per sample, shape "
        f"{_shape(pred)}, for {name} (the model's output shape), got labels of shape "
        f"{_shape(feature)}.{hint}"
    )


def check_labels(objective: Any, y: Any, y_pred: Any, argname: str) -> None:
    """Checks every output's labels in ``y`` for ``objective``'s losses and metrics.

    Args:
      objective: the ``step.Objective`` (losses and metrics per output leaf).
      y: the labels pytree (whole arrays, or one batch).
      y_pred: the model output's shapes, structured like ``y``.
      argname: ``"y"``, ``"validation_data.y"``, ``"dataset batch 3: y"``...
    """
    paths = [
        jax.tree_util.keystr(path)
        for path, _ in jax.tree_util.tree_flatten_with_path(y)[0]
    ]
    y_leaves = jax.tree.leaves(y)
    pred_leaves = jax.tree.leaves(y_pred)
    for leaf, (path, labels, pred) in enumerate(zip(paths, y_leaves, pred_leaves)):
        fns = [objective.loss_fns[leaf]] + [
            fn for _, index, fn, _ in objective.metric_fns if index == leaf
        ]
        kinds = [(kind, _name(fn)) for fn in fns if (kind := kind_of(fn)) is not None]
        # the loss first, then the metrics: messages name what the user chose first
        check_output(
            list(dict.fromkeys(kinds)), labels, tuple(pred.shape), argname + path
        )


def check_class_weight(
    class_weight: dict[int, float], y: Any, where: str = "y"
) -> None:
    """Every class present in ``y`` (``where`` in messages) must have a weight
    (Keras requires it)."""
    leaves = jax.tree.leaves(y)
    if len(leaves) != 1:
        return  # refused elsewhere: class_weight needs a single output
    labels = np.asarray(leaves[0])
    if labels.ndim > 1 and labels.shape[-1] != 1:
        labels = np.argmax(labels, axis=-1)
    present = {int(c) for c in np.unique(np.round(labels))}
    missing = sorted(present - {int(k) for k in class_weight})
    if missing:
        raise ValueError(
            f"class_weight: expected a weight for every class present in {where}, got "
            f"{dict(class_weight)!r} (no weight for class"
            f"{'es' if len(missing) > 1 else ''} "
            f"{', '.join(str(c) for c in missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}). Add them (weight 1.0 keeps a "
            "class as is)."
        )
