"""Confusion-count metrics with Keras 3's arguments and math: ``Precision``,
``Recall``, ``AUC``, ``FBetaScore`` and ``F1Score``.

Their states are weighted counts (true/false positives/negatives per threshold
or per class), which add up across batches and devices exactly, so the epoch
value is the metric of the whole epoch (not a mean of batch values), as the
Keras metric after ``update_state`` on every batch. Thresholds, buckets and the
Riemann sums follow ``keras.src.metrics.metrics_utils`` line for line,
including its fast path for evenly spaced thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import metric_base
from jaxfit._src.core.metric_base import MetricState, divide_no_nan, xp

EPSILON = 1e-7
NEG_INF = -1e10
_COUNTS = ("tp", "fp", "tn", "fn")


def _thresholds(thresholds: Any, default: float, argname: str) -> tuple[float, ...]:
    values = [default] if thresholds is None else thresholds
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if thresholds is not None and any(
        not isinstance(t, (int, float)) or not 0 <= t <= 1 for t in values
    ):
        raise ValueError(errors.expected(argname, "thresholds in [0, 1]", thresholds))
    return tuple(float(t) for t in values)


def _evenly(thresholds: Sequence[float]) -> bool:
    """Keras' ``is_evenly_distributed_thresholds``."""
    n = len(thresholds)
    if n < 3:
        return False
    even = np.arange(n, dtype=np.float32) / (n - 1)
    return bool(np.allclose(thresholds, even, atol=EPSILON))


def _filter_top_k(x: jax.Array, k: int) -> jax.Array:
    _, idx = jax.lax.top_k(x, k)
    mask = jnp.sum(jax.nn.one_hot(idx, x.shape[-1], dtype=x.dtype), axis=-2)
    return x * mask + NEG_INF * (1 - mask)


def _same_rank(y_true: jax.Array, y_pred: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keras' ``squeeze_or_expand_to_same_rank`` of ``(y_pred, y_true)``."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    return y_true, y_pred


def confusion_counts(
    y_true: Any,
    y_pred: Any,
    weights: Any,
    thresholds: Sequence[float],
    top_k: int | None = None,
    class_id: int | None = None,
) -> dict[str, jax.Array]:
    """Weighted tp/fp/tn/fn per threshold (Keras' ``update_confusion_matrix_variables``).

    Args:
      y_true: labels (nonzero is positive), batch axis first.
      y_pred: scores, shaped like ``y_true``.
      weights: per-sample weights, shape ``(batch,)``.
      thresholds: the thresholds; a prediction above one is positive there.
      top_k: keep only the ``k`` highest scores of the last axis. Defaults to `None`.
      class_id: only this class (an index into the last axis). Defaults to `None`.

    Returns:
      ``{"tp", "fp", "tn", "fn"}``, each of shape ``(len(thresholds),)``.
    """
    y_pred = jnp.asarray(y_pred, jnp.float32)
    y_true = jnp.asarray(y_true).astype(jnp.float32)
    y_true, y_pred = _same_rank(y_true, y_pred)
    w = jnp.asarray(weights, jnp.float32).reshape((-1,) + (1,) * (y_pred.ndim - 1))
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        y_true, y_pred = y_true[..., class_id, None], y_pred[..., class_id, None]
        w = w.reshape((-1,) + (1,) * (y_pred.ndim - 1))
    w = jnp.broadcast_to(w, y_pred.shape).reshape(-1)
    labels, preds = y_true.reshape(-1) != 0, y_pred.reshape(-1)
    if _evenly(thresholds):
        return _bucketed(labels, preds, w, thresholds)
    t = jnp.asarray(thresholds, jnp.float32)[:, None]
    positive = preds[None, :] > t

    def count(label: jax.Array, pred: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(label[None, :] & pred, w[None, :], 0.0), axis=1)

    return {
        "tp": count(labels, positive),
        "fp": count(~labels, positive),
        "tn": count(~labels, ~positive),
        "fn": count(labels, ~positive),
    }


def _bucketed(
    labels: jax.Array, preds: jax.Array, w: jax.Array, thresholds: Sequence[float]
) -> dict[str, jax.Array]:
    """Keras' ``_update_confusion_matrix_variables_optimized`` (even thresholds)."""
    n = len(thresholds)
    preds = jnp.clip(preds, 0.0, 1.0)
    true_labels = labels.astype(jnp.float32) * w
    false_labels = (1.0 - labels.astype(jnp.float32)) * w
    buckets = jnp.ceil(preds * (n - 1)) - 1
    if thresholds[0] < 0.0 or thresholds[-1] > 1.0:
        buckets = jnp.maximum(buckets, 0)
    buckets = buckets.astype(jnp.int32)

    def cumulative(values: jax.Array) -> jax.Array:
        summed = jax.ops.segment_sum(values, buckets, num_segments=n)
        return jnp.flip(jnp.cumsum(jnp.flip(summed)))

    tp, fp = cumulative(true_labels), cumulative(false_labels)
    return {
        "tp": tp,
        "fp": fp,
        "tn": jnp.sum(false_labels) - fp,
        "fn": jnp.sum(true_labels) - tp,
    }


def _positive_int(value: Any, argname: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(errors.expected(argname, "a non-negative int or None", value))
    return value


class _Thresholded(metric_base.Metric):
    """Precision and Recall: counts at each threshold, after top_k / class_id."""

    direction = "up"  # higher is better (mode="auto")

    label_kind = "binary"  # 0/1 labels shaped like the output (data.checks)

    def __init__(
        self,
        thresholds: float | Sequence[float] | None = None,
        top_k: int | None = None,
        class_id: int | None = None,
        name: str | None = None,
    ):
        default = 0.5 if top_k is None else NEG_INF
        self.thresholds = _thresholds(thresholds, default, "thresholds")
        self.top_k = _positive_int(top_k, "top_k")
        self.class_id = _positive_int(class_id, "class_id")
        self.name = name or self._default_name
        self.size = None if len(self.thresholds) == 1 else len(self.thresholds)

    _default_name = ""

    def _config(self) -> tuple[Any, ...]:
        return (self.name, self.thresholds, self.top_k, self.class_id)

    def empty(self) -> MetricState:
        return self._zeros((len(self.thresholds),), *_COUNTS)

    def update(self, state, y_true, y_pred, sample_weight):
        counts = confusion_counts(
            y_true, y_pred, sample_weight, self.thresholds, self.top_k, self.class_id
        )
        return self._added(state, **counts)

    def _result(self, value: Any) -> Any:
        return value[0] if self.size is None else value


class Precision(_Thresholded):
    """``tp / (tp + fp)`` at each threshold (``keras.metrics.Precision``).

    Args:
      thresholds: a float or list of floats in ``[0, 1]``; a prediction above
        one counts as positive. Defaults to `None` (0.5, or none with ``top_k``).
      top_k: only the ``k`` highest scores of each sample count. Defaults to `None`.
      class_id: the class (last-axis index) to measure. Defaults to `None`.
      name: the log key. Defaults to `None` (``"precision"``).

    With several thresholds the value is a vector; jaxfit logs it as
    ``precision_0``, ``precision_1``, ...
    """

    _default_name = "precision"

    def compute(self, state: MetricState) -> Any:
        s = state.sums
        return self._result(divide_no_nan(s["tp"], s["tp"] + s["fp"]))


class Recall(_Thresholded):
    """``tp / (tp + fn)`` at each threshold (``keras.metrics.Recall``).

    Args:
      thresholds: a float or list of floats in ``[0, 1]``. Defaults to `None`
        (0.5, or none with ``top_k``).
      top_k: only the ``k`` highest scores of each sample count. Defaults to `None`.
      class_id: the class (last-axis index) to measure. Defaults to `None`.
      name: the log key. Defaults to `None` (``"recall"``).
    """

    _default_name = "recall"

    def compute(self, state: MetricState) -> Any:
        s = state.sums
        return self._result(divide_no_nan(s["tp"], s["tp"] + s["fn"]))


_CURVES = ("ROC", "PR")
_SUMMATIONS = ("interpolation", "minoring", "majoring")


def _choice(value: Any, options: tuple[str, ...], argname: str) -> str:
    match = [
        o for o in options if isinstance(value, str) and value.lower() == o.lower()
    ]
    if not match:
        raise ValueError(errors.expected(argname, f"one of {list(options)}", value))
    return match[0]


class AUC(metric_base.Metric):
    """Area under the ROC or PR curve by a Riemann sum (``keras.metrics.AUC``).

    Args:
      num_thresholds: how many thresholds discretize the curve (> 1). Defaults
        to `200`.
      curve: ``"ROC"`` or ``"PR"``. Defaults to `"ROC"`.
      summation_method: ``"interpolation"``, ``"minoring"`` or ``"majoring"``
        (Keras' meanings). Defaults to `"interpolation"`.
      name: the log key. Defaults to `None` (``"auc"``).
      thresholds: explicit thresholds in ``[0, 1]`` instead of
        ``num_thresholds``. Defaults to `None`.
      from_logits: apply a sigmoid to the predictions first. Defaults to `False`.

    Keras' ``multi_label``, ``num_labels``, ``label_weights`` and the
    ``"PRGAIN"`` curve are not offered: labels and predictions of every shape
    are flattened into one binary problem (Keras' default).
    """

    direction = "up"  # higher is better (mode="auto")

    label_kind = "binary"  # 0/1 labels shaped like the output (data.checks)

    def __init__(
        self,
        num_thresholds: int = 200,
        curve: str = "ROC",
        summation_method: str = "interpolation",
        name: str | None = None,
        thresholds: Sequence[float] | None = None,
        from_logits: bool = False,
    ):
        if thresholds is not None:
            inner = sorted(_thresholds(list(thresholds), 0.5, "thresholds"))
        else:
            if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int):
                raise TypeError(
                    errors.expected("num_thresholds", "an int > 1", num_thresholds)
                )
            if num_thresholds <= 1:
                raise ValueError(
                    errors.expected("num_thresholds", "an int > 1", num_thresholds)
                )
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.thresholds = (0.0 - EPSILON, *inner, 1.0 + EPSILON)
        self.num_thresholds = len(self.thresholds)
        self.curve = _choice(curve, _CURVES, "curve")
        self.summation_method = _choice(
            summation_method, _SUMMATIONS, "summation_method"
        )
        self.from_logits = bool(from_logits)
        self.name = name or "auc"
        # Keras: evenly spaced user thresholds take the bucketed path as well
        self._evenly = thresholds is None or _evenly([0.0, *inner, 1.0])

    def _config(self) -> tuple[Any, ...]:
        return (self.name, self.thresholds, self.curve, self.summation_method,
                self.from_logits)  # fmt: skip

    def empty(self) -> MetricState:
        return self._zeros((self.num_thresholds,), *_COUNTS)

    def update(self, state, y_true, y_pred, sample_weight):
        y_pred = jnp.asarray(y_pred, jnp.float32)
        if self.from_logits:
            y_pred = jax.nn.sigmoid(y_pred)
        if self._evenly:
            y_true, y_pred = _same_rank(jnp.asarray(y_true, jnp.float32), y_pred)
            w = jnp.asarray(sample_weight, jnp.float32)
            w = jnp.broadcast_to(
                w.reshape((-1,) + (1,) * (y_pred.ndim - 1)), y_pred.shape
            ).reshape(-1)
            counts = _bucketed(
                y_true.reshape(-1) != 0, y_pred.reshape(-1), w, self.thresholds
            )
        else:
            counts = confusion_counts(y_true, y_pred, sample_weight, self.thresholds)
        return self._added(state, **counts)

    def compute(self, state: MetricState) -> Any:
        s = state.sums
        tp, fp, tn, fn = s["tp"], s["fp"], s["tn"], s["fn"]
        m = xp(tp, fp, tn, fn)
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _interpolate_pr_auc(m, tp, fp, fn)
        recall = divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, divide_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = m.minimum(y[:-1], y[1:])
        else:
            heights = m.maximum(y[:-1], y[1:])
        return m.sum((x[:-1] - x[1:]) * heights).astype(np.float32)


def _interpolate_pr_auc(m: Any, tp: Any, fp: Any, fn: Any) -> Any:
    """Keras' ``AUC.interpolate_pr_auc`` (Davis & Goadrich 2006)."""
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    slope = divide_no_nan(dtp, m.maximum(dp, 0))
    intercept = tp[1:] - slope * p[1:]
    both = (p[:-1] > 0) & (p[1:] > 0)
    ratio = m.where(both, divide_no_nan(p[:-1], m.maximum(p[1:], 0)), 1.0)
    safe = m.where(ratio > 0, ratio, 1.0)  # log is only read where ratio > 0
    increment = divide_no_nan(
        slope * (dtp + intercept * m.log(safe)), m.maximum(tp[1:] + fn[1:], 0)
    )
    return m.sum(increment).astype(np.float32)


_AVERAGES = (None, "micro", "macro", "weighted")


class FBetaScore(metric_base.Metric):
    """The F-beta score per class or averaged (``keras.metrics.FBetaScore``).

    Args:
      average: ``None`` (one score per class), ``"micro"``, ``"macro"`` or
        ``"weighted"``, as Keras. Defaults to `None`.
      beta: the weight of recall against precision, > 0. Defaults to `1.0`.
      threshold: a float in ``(0, 1]``: predictions above it are positive; `None`
        takes each sample's highest score as its positive. Defaults to `None`.
      name: the log key. Defaults to `"fbeta_score"`.

    Needs ``(batch, classes)`` labels and predictions. With ``average=None`` the
    value is one score per class, logged as ``<name>_0`` ... ``<name>_<C-1>``
    (Keras' result is a vector; ``History`` holds floats).
    """

    direction = "up"  # higher is better (mode="auto")

    label_kind = "binary"  # 0/1 labels shaped like the output (data.checks)

    _default_name = "fbeta_score"

    def __init__(
        self,
        average: str | None = None,
        beta: float = 1.0,
        threshold: float | None = None,
        name: str | None = None,
    ):
        if average not in _AVERAGES:
            raise ValueError(
                errors.expected("average", f"one of {list(_AVERAGES)}", average)
            )
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(errors.expected("beta", "a float > 0", beta))
        if threshold is not None and (
            not isinstance(threshold, float) or not 0.0 < threshold <= 1.0
        ):
            raise ValueError(
                errors.expected("threshold", "a float in (0, 1] or None", threshold)
            )
        self.average, self.beta, self.threshold = average, float(beta), threshold
        self.name = name or self._default_name
        self.classes: int | None = None

    def _config(self) -> tuple[Any, ...]:
        return (self.name, self.average, self.beta, self.threshold, self.classes)

    def build(self, y_true: Any, y_pred: Any) -> FBetaScore:
        if len(y_pred.shape) != 2 or len(y_true.shape) != 2:
            raise ValueError(
                errors.expected(
                    "metrics",
                    f"{type(self).__name__}: labels and predictions of shape "
                    "(batch, classes)",
                    errors.Description(
                        f"y_true of shape {tuple(y_true.shape)} and y_pred of "
                        f"shape {tuple(y_pred.shape)}"
                    ),
                )
            )
        built = type(self).__new__(type(self))
        built.__dict__.update(self.__dict__)
        built.classes = int(y_pred.shape[-1])
        built.size = built.classes if self.average is None else None
        return built

    def _shape(self) -> tuple[int, ...]:
        if self.classes is None:
            raise ValueError(f"{type(self).__name__}: build it on the data first")
        return () if self.average == "micro" else (self.classes,)

    def empty(self) -> MetricState:
        return self._zeros(self._shape(), "tp", "fp", "fn", "support")

    def update(self, state, y_true, y_pred, sample_weight):
        y_pred = jnp.asarray(y_pred, jnp.float32)
        y_true = jnp.asarray(y_true).astype(jnp.float32)
        if self.threshold is None:
            top = jnp.max(y_pred, axis=-1, keepdims=True)
            y_pred = (y_pred >= top) & (jnp.abs(y_pred) > 1e-9)
        else:
            y_pred = y_pred > self.threshold
        y_pred = y_pred.astype(jnp.float32)
        w = jnp.asarray(sample_weight, jnp.float32)[:, None]
        axis = None if self.average == "micro" else 0

        def total(v: jax.Array) -> jax.Array:
            return jnp.sum(v * w, axis=axis)

        return self._added(
            state,
            tp=total(y_pred * y_true),
            fp=total(y_pred * (1 - y_true)),
            fn=total((1 - y_pred) * y_true),
            support=total(y_true),
        )

    def compute(self, state: MetricState) -> Any:
        s = state.sums
        tp, fp, fn, support = s["tp"], s["fp"], s["fn"], s["support"]
        m = xp(tp, fp, fn, support)
        precision = tp / (tp + fp + EPSILON)
        recall = tp / (tp + fn + EPSILON)
        b2 = self.beta**2
        score = precision * recall / (b2 * precision + recall + EPSILON) * (1 + b2)
        if self.average == "weighted":
            score = m.sum(score * support / (m.sum(support) + EPSILON))
        elif self.average is not None:
            score = m.mean(score)
        return m.asarray(score).astype(np.float32)


class F1Score(FBetaScore):
    """The F1 score (``FBetaScore`` with ``beta=1``; ``keras.metrics.F1Score``).

    Args:
      average: ``None``, ``"micro"``, ``"macro"`` or ``"weighted"``. Defaults to
        `None` (one score per class, logged as ``f1_score_0`` ...).
      threshold: a float in ``(0, 1]``, or `None` for each sample's highest
        score. Defaults to `None`.
      name: the log key. Defaults to `"f1_score"`.
    """

    _default_name = "f1_score"

    def __init__(
        self,
        average: str | None = None,
        threshold: float | None = None,
        name: str | None = None,
    ):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name)
