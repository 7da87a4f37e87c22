"""Metrics: per-sample accuracies, Keras' shape-picked accuracy, accumulators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_keras

from jaxfit import losses, metrics

B = 5
LABELS = np.array([0, 2, 1, 2, 1])
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]
SCORES = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.3, 0.6],
        [0.5, 0.4, 0.1],
        [0.2, 0.5, 0.3],
        [0.3, 0.3, 0.4],
    ],
    np.float32,
)
BIN_TRUE = np.array([[1.0], [0.0], [1.0], [0.0], [1.0]], np.float32)
BIN_PROBS = np.array([[0.9], [0.6], [0.4], [0.1], [0.51]], np.float32)
MULTI_TRUE = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0]], np.float32)
MULTI_PROBS = np.array(
    [[0.9, 0.2], [0.6, 0.1], [0.4, 0.8], [0.1, 0.7], [0.3, 0.9]], np.float32
)

# (function name, kwargs, y_true, y_pred, expected per sample)
FUNCTION_CASES = [
    ("categorical_accuracy", {}, ONE_HOT, SCORES, [1, 1, 0, 0, 0]),
    ("sparse_categorical_accuracy", {}, LABELS, SCORES, [1, 1, 0, 0, 0]),
    ("sparse_categorical_accuracy", {}, LABELS[:, None], SCORES, [1, 1, 0, 0, 0]),
    (
        "sparse_categorical_accuracy",
        {},
        LABELS.astype(np.float32),
        SCORES,
        [1, 1, 0, 0, 0],
    ),
    ("binary_accuracy", {}, BIN_TRUE, BIN_PROBS, [1, 0, 0, 1, 1]),
    ("binary_accuracy", {}, BIN_TRUE[:, 0], BIN_PROBS[:, 0], [1, 0, 0, 1, 1]),
    ("binary_accuracy", {}, BIN_TRUE[:, 0], BIN_PROBS, [1, 0, 0, 1, 1]),
    ("binary_accuracy", {"threshold": 0.95}, BIN_TRUE, BIN_PROBS, [0, 1, 0, 1, 0]),
    ("binary_accuracy", {}, MULTI_TRUE, MULTI_PROBS, [1, 0.5, 0.5, 1, 0]),
    ("top_k_categorical_accuracy", {"k": 1}, ONE_HOT, SCORES, [1, 1, 0, 0, 0]),
    ("top_k_categorical_accuracy", {"k": 2}, ONE_HOT, SCORES, [1, 1, 1, 1, 1]),
    ("top_k_categorical_accuracy", {}, ONE_HOT, SCORES, [1, 1, 1, 1, 1]),
    ("sparse_top_k_categorical_accuracy", {"k": 1}, LABELS, SCORES, [1, 1, 0, 0, 0]),
    (
        "sparse_top_k_categorical_accuracy",
        {"k": 2},
        LABELS[:, None],
        SCORES,
        [1, 1, 1, 1, 1],
    ),
    (
        "sparse_top_k_categorical_accuracy",
        {"k": 1},
        LABELS,
        np.where(ONE_HOT > 0, np.nan, SCORES),
        [0, 0, 0, 0, 0],
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "y_true", "y_pred", "expected"), FUNCTION_CASES
)
def test_accuracy_functions_per_sample(name, kwargs, y_true, y_pred, expected):
    fn = getattr(metrics, name)
    out = jax.jit(lambda t, p: fn(t, p, **kwargs))(y_true, y_pred)
    assert out.dtype == jnp.float32 and out.shape == (B,)
    np.testing.assert_allclose(out, expected)


def test_extra_axes_are_averaged_per_sample():
    t = np.stack([ONE_HOT, ONE_HOT], 1)
    p = np.stack([SCORES, ONE_HOT], 1)
    np.testing.assert_allclose(
        metrics.categorical_accuracy(t, p), [1, 1, 0.5, 0.5, 0.5]
    )


def _spec(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


# (identifier, y_true, y_pred, expected function)
RESOLVE_CASES = [
    ("accuracy", _spec((B, 1)), _spec((B, 1)), metrics.binary_accuracy),
    ("accuracy", _spec((B,)), _spec((B,)), metrics.binary_accuracy),
    ("acc", BIN_TRUE, BIN_PROBS, metrics.binary_accuracy),
    (
        "accuracy",
        _spec((B,), jnp.int32),
        _spec((B, 3)),
        metrics.sparse_categorical_accuracy,
    ),
    ("accuracy", LABELS, SCORES, metrics.sparse_categorical_accuracy),
    ("ACC", _spec((B, 1)), _spec((B, 3)), metrics.sparse_categorical_accuracy),
    ("accuracy", _spec((B, 3)), _spec((B, 3)), metrics.categorical_accuracy),
    ("Accuracy", ONE_HOT, SCORES, metrics.categorical_accuracy),
    ("crossentropy", BIN_TRUE, BIN_PROBS, losses.binary_crossentropy),
    ("ce", LABELS, SCORES, losses.sparse_categorical_crossentropy),
    ("crossentropy", ONE_HOT, SCORES, losses.categorical_crossentropy),
    ("binary_accuracy", ONE_HOT, SCORES, metrics.binary_accuracy),
    (
        "sparse_top_k_categorical_accuracy",
        LABELS,
        SCORES,
        metrics.sparse_top_k_categorical_accuracy,
    ),
    ("mse", ONE_HOT, SCORES, losses.mean_squared_error),
    ("MAE", ONE_HOT, SCORES, losses.mean_absolute_error),
    ("binary_crossentropy", BIN_TRUE, BIN_PROBS, losses.binary_crossentropy),
]


@pytest.mark.parametrize(("identifier", "y_true", "y_pred", "expected"), RESOLVE_CASES)
def test_resolve_picks_functions_as_keras(identifier, y_true, y_pred, expected):
    assert metrics.resolve(identifier, y_true, y_pred) is expected


def test_resolve_passes_callables_through_and_names_cover_losses():
    def fn(t, p):
        return t

    assert metrics.resolve(fn, ONE_HOT, SCORES) is fn
    assert metrics.names() == sorted(metrics.names())
    assert set(losses.names()) <= set(metrics.names())
    assert {"accuracy", "acc", "categorical_accuracy"} <= set(metrics.names())


@pytest.mark.parametrize(
    ("bad", "argname", "error", "parts"),
    [
        (
            "acuracy",
            "metrics",
            ValueError,
            [
                "metrics: expected a metric name (one of ",
                "'accuracy'",
                "got 'acuracy' (str).",
            ],
        ),
        (7, "metrics", TypeError, ["metrics: expected", "got 7 (int)."]),
        (
            None,
            "weighted_metrics",
            TypeError,
            ["weighted_metrics: expected", "got None (NoneType)."],
        ),
    ],
)
def test_resolve_errors_name_the_argument_and_value(bad, argname, error, parts):
    with pytest.raises(error) as info:
        metrics.resolve(bad, ONE_HOT, SCORES, argname=argname)
    for part in parts:
        assert part in str(info.value)


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("acc", "acc"),
        (metrics.binary_accuracy, "binary_accuracy"),
    ],
)
def test_name_of(identifier, expected):
    assert metrics.name_of(identifier) == expected


def test_empty_is_float32_zeros():
    state = metrics.empty()
    assert isinstance(state, metrics.MeanState)
    for leaf in state:
        assert leaf.shape == () and leaf.dtype == jnp.float32 and float(leaf) == 0.0


# (batches of (values, weights), expected mean)
ACCUMULATOR_CASES = [
    ([([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])], 2.0),
    ([([1.0, 2.0, 3.0], [1.0, 0.0, 2.0]), ([4.0], [1.0])], (1 + 6 + 4) / 4),
    ([([1.0, 2.0], [0.5, 0.5]), ([5.0, 7.0], [0.0, 0.0])], 1.5),
    ([([3.0, 4.0], [0.0, 0.0])], 0.0),  # nothing counted: 0, not nan
    ([], 0.0),
]


@pytest.mark.parametrize(("batches", "expected"), ACCUMULATOR_CASES)
def test_update_and_compute_give_the_weighted_mean_under_jit(batches, expected):
    update, compute = jax.jit(metrics.update), jax.jit(metrics.compute)
    state = metrics.empty()
    for values, weights in batches:
        state = update(state, np.float32(values), np.float32(weights))
    out = compute(state)
    assert out.dtype == jnp.float32 and out.shape == ()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(("batches", "expected"), ACCUMULATOR_CASES)
def test_merge_of_separate_accumulators_equals_one_pass(batches, expected):
    @jax.jit
    def run(batches):
        states = [metrics.update(metrics.empty(), v, w) for v, w in batches]
        merged = metrics.empty()
        for state in states:
            merged = metrics.merge(merged, state)
        return metrics.compute(merged)

    batches = [(np.float32(v), np.float32(w)) for v, w in batches]
    np.testing.assert_allclose(run(batches), expected, rtol=1e-6)


def test_compute_has_no_nan_gradient_at_zero_count():
    grad = jax.grad(
        lambda w: metrics.compute(metrics.update(metrics.empty(), jnp.ones(2), w))
    )(jnp.zeros(2))
    assert np.all(np.isfinite(grad))


def _keras():
    return import_keras()


@pytest.mark.parametrize(
    ("name", "kwargs", "y_true", "y_pred", "expected"), FUNCTION_CASES
)
def test_accuracies_match_keras_functions(name, kwargs, y_true, y_pred, expected):
    keras = _keras()
    got = getattr(metrics, name)(y_true, y_pred, **kwargs)
    keras_out = np.asarray(getattr(keras.metrics, name)(y_true, y_pred, **kwargs))
    np.testing.assert_allclose(got, keras_out.reshape(B, -1).mean(-1), rtol=1e-6)


# Rank-1 y_pred is left out: jaxfit reads it as (batch, 1), i.e. binary, where
# Keras would take the batch size for the class count.
KERAS_RESOLVE_CASES = [
    c
    for c in RESOLVE_CASES
    if c[0].lower() in ("accuracy", "acc") and len(c[2].shape) > 1
]


@pytest.mark.parametrize(
    ("identifier", "y_true", "y_pred", "expected"), KERAS_RESOLVE_CASES
)
def test_accuracy_resolution_matches_keras_get_metric(
    identifier, y_true, y_pred, expected
):
    _keras()
    compile_utils = pytest.importorskip("keras.src.trainers.compile_utils")
    keras_metric = compile_utils.get_metric(identifier, y_true, y_pred)
    keras_names = {
        "BinaryAccuracy": "binary_accuracy",
        "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
        "CategoricalAccuracy": "categorical_accuracy",
    }
    assert keras_names[type(keras_metric).__name__] == expected.__name__
