"""Losses: Keras 3 math, per-sample shapes, names and errors."""

import os

import jax
import numpy as np
import pytest

import jaxfit

RNG = np.random.default_rng(0)
B, C = 4, 3
REG_TRUE = RNG.normal(size=(B, C)).astype(np.float32)
REG_PRED = RNG.normal(size=(B, C)).astype(np.float32)
LABELS = np.array([0, 2, 1, 2])
ONE_HOT = np.eye(C, dtype=np.float32)[LABELS]
LOGITS = RNG.normal(size=(B, C)).astype(np.float32)
PROBS = np.asarray(jax.nn.softmax(LOGITS))
BIN_TRUE = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)
BIN_LOGITS = RNG.normal(size=(B, 1)).astype(np.float32)
BIN_PROBS = np.asarray(jax.nn.sigmoid(BIN_LOGITS))
DIST_TRUE = np.asarray(jax.nn.softmax(RNG.normal(size=(B, C)))).astype(np.float32)


def _clip(p):
    return np.clip(p, 1e-7, 1 - 1e-7)


# (name, y_true, y_pred, numpy reference per sample)
CASES = [
    ("mse", REG_TRUE, REG_PRED, lambda t, p: np.mean((t - p) ** 2, -1)),
    ("mae", REG_TRUE, REG_PRED, lambda t, p: np.mean(np.abs(t - p), -1)),
    ("huber", REG_TRUE, REG_PRED, lambda t, p: np.mean(np.where(
        np.abs(t - p) <= 1, 0.5 * (t - p) ** 2, np.abs(t - p) - 0.5), -1)),
    ("log_cosh", REG_TRUE, REG_PRED, lambda t, p: np.mean(np.log(np.cosh(p - t)), -1)),
    ("hinge", BIN_TRUE, BIN_LOGITS,
     lambda t, p: np.mean(np.maximum(1 - (2 * t - 1) * p, 0), -1)),
    ("squared_hinge", BIN_TRUE, BIN_LOGITS,
     lambda t, p: np.mean(np.maximum(1 - (2 * t - 1) * p, 0) ** 2, -1)),
    ("kld", DIST_TRUE, PROBS, lambda t, p: np.sum(t * np.log(t / p), -1)),
    ("binary_crossentropy", BIN_TRUE, BIN_PROBS, lambda t, p: np.mean(
        -(t * np.log(_clip(p)) + (1 - t) * np.log(1 - _clip(p))), -1)),
    ("binary_crossentropy_from_logits", BIN_TRUE, BIN_LOGITS, lambda t, p: np.mean(
        -(t * np.log(1 / (1 + np.exp(-p))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-p)))),
        -1)),
    ("categorical_crossentropy", ONE_HOT, PROBS,
     lambda t, p: -np.sum(t * np.log(_clip(p)), -1)),
    ("categorical_crossentropy_from_logits", ONE_HOT, LOGITS,
     lambda t, p: -np.sum(t * np.log(np.exp(p) / np.exp(p).sum(-1, keepdims=True)), -1)),
    ("sparse_categorical_crossentropy", LABELS, PROBS,
     lambda t, p: -np.log(_clip(p[np.arange(B), t]))),
    ("sparse_categorical_crossentropy_from_logits", LABELS, LOGITS,
     lambda t, p: -np.log((np.exp(p) / np.exp(p).sum(-1, keepdims=True))[np.arange(B), t])),
]


@pytest.mark.parametrize("name,y_true,y_pred,reference", CASES, ids=[c[0] for c in CASES])
def test_loss_matches_reference_per_sample(name, y_true, y_pred, reference):
    fn = jaxfit.losses.get(name)
    out = jax.jit(fn)(y_true, y_pred)
    assert out.shape == (B,)
    np.testing.assert_allclose(out, reference(y_true, y_pred), rtol=1e-5, atol=1e-6)


def test_probability_and_logit_forms_agree():
    losses = jaxfit.losses
    np.testing.assert_allclose(losses.categorical_crossentropy(ONE_HOT, PROBS),
                               losses.categorical_crossentropy_from_logits(ONE_HOT, LOGITS),
                               rtol=1e-5)
    np.testing.assert_allclose(
        losses.sparse_categorical_crossentropy(LABELS[:, None], PROBS),
        losses.sparse_categorical_crossentropy_from_logits(LABELS, LOGITS), rtol=1e-5)
    np.testing.assert_allclose(losses.binary_crossentropy(BIN_TRUE, BIN_PROBS),
                               losses.binary_crossentropy_from_logits(BIN_TRUE, BIN_LOGITS),
                               rtol=1e-5)


@pytest.mark.parametrize("y_true,y_pred", [
    (REG_TRUE[:, 0], REG_PRED[:, 0]),           # rank 1: no reduction over the batch
    (REG_TRUE[:, 0], REG_PRED[:, :1]),          # y_true one rank short
    (REG_TRUE[:, :, None], REG_PRED[:, :, None]),  # extra axes are averaged
])
def test_loss_shapes_are_aligned_as_keras(y_true, y_pred):
    out = jaxfit.losses.mean_squared_error(y_true, y_pred)
    assert out.shape == (B,)
    expected = np.mean((y_true.reshape(B, -1) - y_pred.reshape(B, -1)) ** 2, -1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_get_accepts_names_case_insensitively_and_callables():
    assert jaxfit.losses.get("MSE") is jaxfit.losses.mean_squared_error
    fn = lambda t, p: t - p  # noqa: E731
    assert jaxfit.losses.get(fn) is fn
    assert "categorical_crossentropy" in jaxfit.losses.names()


@pytest.mark.parametrize("bad,error,parts", [
    ("msee", ValueError, ["loss", "'msee'", "'mse'"]),
    (None, TypeError, ["loss", "None"]),
    (3, TypeError, ["loss", "3 (int)"]),
])
def test_get_errors_name_the_argument_and_value(bad, error, parts):
    with pytest.raises(error) as info:
        jaxfit.losses.get(bad)
    for part in parts:
        assert part in str(info.value)


KERAS_LOSSES = [
    ("mse", "MeanSquaredError", {}), ("mae", "MeanAbsoluteError", {}),
    ("huber", "Huber", {}), ("log_cosh", "LogCosh", {}), ("hinge", "Hinge", {}),
    ("squared_hinge", "SquaredHinge", {}), ("kld", "KLDivergence", {}),
    ("binary_crossentropy", "BinaryCrossentropy", {}),
    ("binary_crossentropy_from_logits", "BinaryCrossentropy", {"from_logits": True}),
    ("categorical_crossentropy", "CategoricalCrossentropy", {}),
    ("categorical_crossentropy_from_logits", "CategoricalCrossentropy",
     {"from_logits": True}),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", {}),
    ("sparse_categorical_crossentropy_from_logits", "SparseCategoricalCrossentropy",
     {"from_logits": True}),
]


@pytest.mark.parametrize("name,keras_name,kwargs", KERAS_LOSSES,
                         ids=[c[0] for c in KERAS_LOSSES])
def test_losses_match_keras_per_sample(name, keras_name, kwargs):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
    if keras.backend.backend() != "jax":
        pytest.skip("keras is not on the JAX backend")
    case = next(c for c in CASES if c[0] == name)
    y_true, y_pred = case[1], case[2]
    keras_loss = getattr(keras.losses, keras_name)(reduction=None, **kwargs)
    expected = np.asarray(keras_loss(y_true, y_pred))
    np.testing.assert_allclose(jaxfit.losses.get(name)(y_true, y_pred), expected,
                               rtol=1e-5, atol=1e-6)
