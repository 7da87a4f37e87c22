"""Metrics: accumulators, per-sample accuracies, Keras' automatic accuracy."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfit

metrics = jaxfit.metrics
LABELS = np.array([0, 2, 1, 2, 1])
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]
SCORES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1],
                   [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], np.float32)
BIN_TRUE = np.array([[1.0], [0.0], [1.0], [0.0], [1.0]], np.float32)
BIN_PROBS = np.array([[0.9], [0.6], [0.4], [0.1], [0.51]], np.float32)

ACCURACY_CASES = [
    ("categorical_accuracy", ONE_HOT, SCORES, [1, 1, 0, 0, 0]),
    ("sparse_categorical_accuracy", LABELS, SCORES, [1, 1, 0, 0, 0]),
    ("sparse_categorical_accuracy", LABELS[:, None], SCORES, [1, 1, 0, 0, 0]),
    ("binary_accuracy", BIN_TRUE, BIN_PROBS, [1, 0, 0, 1, 1]),
    ("accuracy", ONE_HOT, SCORES, [1, 1, 0, 0, 0]),
    ("accuracy", LABELS, SCORES, [1, 1, 0, 0, 0]),
    ("acc", BIN_TRUE, BIN_PROBS, [1, 0, 0, 1, 1]),
]


@pytest.mark.parametrize("name,y_true,y_pred,expected", ACCURACY_CASES)
def test_accuracies_per_sample(name, y_true, y_pred, expected):
    fn = metrics.resolve(name, y_true, y_pred)
    out = jax.jit(fn)(y_true, y_pred)
    assert out.dtype == jnp.float32 and out.shape == (5,)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("k,expected", [(1, [1, 1, 0, 0, 0]), (2, [1, 1, 1, 1, 1])])
def test_top_k_accuracies(k, expected):
    np.testing.assert_array_equal(
        metrics.top_k_categorical_accuracy(ONE_HOT, SCORES, k=k), expected)
    np.testing.assert_array_equal(
        metrics.sparse_top_k_categorical_accuracy(LABELS, SCORES, k=k), expected)


@pytest.mark.parametrize("y_true,y_pred,expected", [
    ((5, 1), (5, 1), metrics.binary_accuracy),
    ((5,), (5,), metrics.binary_accuracy),
    ((5,), (5, 3), metrics.sparse_categorical_accuracy),
    ((5, 1), (5, 3), metrics.sparse_categorical_accuracy),
    ((5, 3), (5, 3), metrics.categorical_accuracy),
])
def test_accuracy_resolves_from_shapes_as_keras(y_true, y_pred, expected):
    spec = lambda s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    assert metrics.resolve("accuracy", spec(y_true), spec(y_pred)) is expected


def test_mean_state_accumulates_weighted_means_on_device():
    @jax.jit
    def run(values, weights):
        state = metrics.update(metrics.empty(), values[:3], weights[:3])
        other = metrics.update(metrics.empty(), values[3:], weights[3:])
        return metrics.compute(metrics.merge(state, other))

    values = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
    np.testing.assert_allclose(run(values, weights), (1 + 6 + 4) / 4)
    assert float(metrics.compute(metrics.empty())) == 0.0


@pytest.mark.parametrize("bad,error", [("acuracy", ValueError), (7, TypeError)])
def test_resolve_errors_name_the_argument_and_value(bad, error):
    with pytest.raises(error) as info:
        metrics.resolve(bad, ONE_HOT, SCORES)
    assert "metrics" in str(info.value) and repr(bad) in str(info.value)


KERAS_METRICS = [
    ("categorical_accuracy", ONE_HOT, SCORES),
    ("sparse_categorical_accuracy", LABELS, SCORES),
    ("binary_accuracy", BIN_TRUE, BIN_PROBS),
    ("top_k_categorical_accuracy", ONE_HOT, SCORES),
    ("sparse_top_k_categorical_accuracy", LABELS, SCORES),
]


@pytest.mark.parametrize("name,y_true,y_pred", KERAS_METRICS)
def test_metrics_match_keras_functions(name, y_true, y_pred):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
    if keras.backend.backend() != "jax":
        pytest.skip("keras is not on the JAX backend")
    kwargs = {"k": 2} if "top_k" in name else {}
    expected = np.asarray(getattr(keras.metrics, name)(y_true, y_pred, **kwargs))
    got = getattr(metrics, name)(y_true, y_pred, **kwargs)
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=1e-6)
