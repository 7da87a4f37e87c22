"""Losses: Keras 3 math against numpy references, per-sample shapes, names, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_keras

from jaxfit import losses

RNG = np.random.default_rng(0)
B, C = 4, 3
REG_TRUE = RNG.normal(size=(B, C)).astype(np.float32)
REG_PRED = RNG.normal(size=(B, C)).astype(np.float32)
LABELS = np.array([0, 2, 1, 2])
ONE_HOT = np.eye(C, dtype=np.float32)[LABELS]
LOGITS = RNG.normal(size=(B, C)).astype(np.float32)
PROBS = np.asarray(jax.nn.softmax(LOGITS))
BIN_TRUE = RNG.integers(0, 2, size=(B, C)).astype(np.float32)
BIN_LOGITS = RNG.normal(size=(B, C)).astype(np.float32)
BIN_PROBS = np.asarray(jax.nn.sigmoid(BIN_LOGITS))
SIGN_TRUE = 2.0 * BIN_TRUE - 1.0
DIST_TRUE = np.asarray(jax.nn.softmax(RNG.normal(size=(B, C)))).astype(np.float32)


def _clip(p):
    return np.clip(p, 1e-7, 1 - 1e-7)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _pick(p, t):
    return np.take_along_axis(p, np.asarray(t)[..., None], -1)[..., 0]


def _huber(t, p, d=1.0):
    x = np.abs(t - p)
    return np.mean(np.where(x <= d, 0.5 * x**2, d * x - 0.5 * d**2), -1)


def _hinge(t, p):
    return np.mean(np.maximum(1 - t * p, 0), -1)


def _bce(t, p):
    return np.mean(-(t * np.log(_clip(p)) + (1 - t) * np.log(1 - _clip(p))), -1)


def _cce(t, p):
    return -np.sum(t * np.log(_clip(p / p.sum(-1, keepdims=True))), -1)


# (id, function name, kwargs, y_true, y_pred, numpy reference per sample)
CASES = [
    (
        "mse",
        "mean_squared_error",
        {},
        REG_TRUE,
        REG_PRED,
        lambda t, p: np.mean((t - p) ** 2, -1),
    ),
    (
        "mae",
        "mean_absolute_error",
        {},
        REG_TRUE,
        REG_PRED,
        lambda t, p: np.mean(np.abs(t - p), -1),
    ),
    ("huber", "huber", {}, REG_TRUE, REG_PRED, _huber),
    (
        "huber_delta",
        "huber",
        {"delta": 0.5},
        REG_TRUE,
        REG_PRED,
        lambda t, p: _huber(t, p, 0.5),
    ),
    (
        "log_cosh",
        "log_cosh",
        {},
        REG_TRUE,
        REG_PRED,
        lambda t, p: np.mean(np.log(np.cosh(p - t)), -1),
    ),
    ("hinge_01", "hinge", {}, BIN_TRUE, BIN_LOGITS, lambda t, p: _hinge(2 * t - 1, p)),
    ("hinge_pm1", "hinge", {}, SIGN_TRUE, BIN_LOGITS, _hinge),
    ("hinge_other", "hinge", {}, REG_TRUE, REG_PRED, _hinge),
    (
        "squared_hinge_01",
        "squared_hinge",
        {},
        BIN_TRUE,
        BIN_LOGITS,
        lambda t, p: np.mean(np.maximum(1 - (2 * t - 1) * p, 0) ** 2, -1),
    ),
    (
        "kl_divergence",
        "kl_divergence",
        {},
        DIST_TRUE,
        PROBS,
        lambda t, p: np.sum(t * np.log(t / p), -1),
    ),
    (
        "kl_divergence_clipped",
        "kl_divergence",
        {},
        ONE_HOT,
        PROBS,
        lambda t, p: np.sum(_clip(t) * np.log(_clip(t) / p), -1),
    ),
    ("binary_crossentropy", "binary_crossentropy", {}, BIN_TRUE, BIN_PROBS, _bce),
    (
        "binary_crossentropy_from_logits",
        "binary_crossentropy_from_logits",
        {},
        BIN_TRUE,
        BIN_LOGITS,
        lambda t, p: np.mean(np.logaddexp(0, p) - t * p, -1),
    ),
    ("categorical_crossentropy", "categorical_crossentropy", {}, ONE_HOT, PROBS, _cce),
    (
        "categorical_crossentropy_unnormalised",
        "categorical_crossentropy",
        {},
        DIST_TRUE,
        3.0 * PROBS,
        _cce,
    ),
    (
        "categorical_crossentropy_from_logits",
        "categorical_crossentropy_from_logits",
        {},
        ONE_HOT,
        LOGITS,
        lambda t, p: -np.sum(t * np.log(_softmax(p)), -1),
    ),
    (
        "sparse_categorical_crossentropy",
        "sparse_categorical_crossentropy",
        {},
        LABELS,
        PROBS,
        lambda t, p: -np.log(_pick(_clip(p), t)),
    ),
    (
        "sparse_categorical_crossentropy_from_logits",
        "sparse_categorical_crossentropy_from_logits",
        {},
        LABELS,
        LOGITS,
        lambda t, p: -np.log(_pick(_softmax(p), t)),
    ),
]
CASE_IDS = [c[0] for c in CASES]
SPARSE = (
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy_from_logits",
)


def _fn(name, kwargs):
    fn = getattr(losses, name)
    return lambda t, p: fn(t, p, **kwargs)


@pytest.mark.parametrize(
    ("case_id", "name", "kwargs", "y_true", "y_pred", "ref"), CASES, ids=CASE_IDS
)
def test_loss_matches_numpy_reference_per_sample(
    case_id, name, kwargs, y_true, y_pred, ref
):
    out = jax.jit(_fn(name, kwargs))(y_true, y_pred)
    assert out.shape == (B,) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref(y_true, y_pred), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("case_id", "name", "kwargs", "y_true", "y_pred", "ref"), CASES, ids=CASE_IDS
)
def test_extra_axes_are_averaged_per_sample(case_id, name, kwargs, y_true, y_pred, ref):
    y_pred2 = y_pred[::-1]
    t = np.stack([y_true, y_true], 1)
    p = np.stack([y_pred, y_pred2], 1)
    expected = (ref(y_true, y_pred) + ref(y_true, y_pred2)) / 2
    out = _fn(name, kwargs)(t, p)
    assert out.shape == (B,)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


DENSE_CASES = [c for c in CASES if c[1] not in SPARSE]


@pytest.mark.parametrize(
    ("case_id", "name", "kwargs", "y_true", "y_pred", "ref"),
    DENSE_CASES,
    ids=[c[0] for c in DENSE_CASES],
)
@pytest.mark.parametrize("layout", ["rank1", "true_rank_short", "true_rank1_pred_col"])
def test_rank1_and_short_y_true_are_aligned_as_keras(
    case_id, name, kwargs, y_true, y_pred, ref, layout
):
    col_true, col_pred = y_true[:, :1], y_pred[:, :1]  # the (B, 1) layout
    t, p = {
        "rank1": (col_true[:, 0], col_pred[:, 0]),  # no reduction over the batch
        "true_rank_short": (col_true[:, 0], col_pred),
        "true_rank1_pred_col": (col_true, col_pred[:, 0]),
    }[layout]
    out = jax.jit(_fn(name, kwargs))(t, p)
    assert out.shape == (B,)
    np.testing.assert_allclose(out, ref(col_true, col_pred), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize(
    "labels",
    [LABELS, LABELS[:, None], LABELS.astype(np.float32)],
    ids=["rank1", "column", "float"],
)
def test_sparse_labels_accept_rank1_column_and_float(name, labels):
    y_pred = PROBS if "logits" not in name else LOGITS
    expected = getattr(losses, name)(LABELS, y_pred)
    np.testing.assert_allclose(
        getattr(losses, name)(labels, y_pred), expected, rtol=1e-6
    )


# (probability form, logits form, y_true, probabilities, logits)
FORMS = [
    (
        "binary_crossentropy",
        "binary_crossentropy_from_logits",
        BIN_TRUE,
        BIN_PROBS,
        BIN_LOGITS,
    ),
    (
        "categorical_crossentropy",
        "categorical_crossentropy_from_logits",
        ONE_HOT,
        PROBS,
        LOGITS,
    ),
    (
        "categorical_crossentropy",
        "categorical_crossentropy_from_logits",
        DIST_TRUE,
        PROBS,
        LOGITS,
    ),
    (
        "sparse_categorical_crossentropy",
        "sparse_categorical_crossentropy_from_logits",
        LABELS,
        PROBS,
        LOGITS,
    ),
]


@pytest.mark.parametrize(
    ("prob_name", "logit_name", "y_true", "probs", "logits"), FORMS
)
def test_probability_and_logits_forms_agree(
    prob_name, logit_name, y_true, probs, logits
):
    np.testing.assert_allclose(
        getattr(losses, prob_name)(y_true, probs),
        getattr(losses, logit_name)(y_true, logits),
        rtol=1e-5,
        atol=1e-6,
    )


def test_sparse_and_categorical_forms_agree():
    for sparse, dense, y_pred in [
        ("sparse_categorical_crossentropy", "categorical_crossentropy", PROBS),
        (
            "sparse_categorical_crossentropy_from_logits",
            "categorical_crossentropy_from_logits",
            LOGITS,
        ),
    ]:
        np.testing.assert_allclose(
            getattr(losses, sparse)(LABELS, y_pred),
            getattr(losses, dense)(ONE_HOT, y_pred),
            rtol=1e-6,
        )


ALIASES = [
    ("mse", "mean_squared_error"),
    ("mean_squared_error", "mean_squared_error"),
    ("mae", "mean_absolute_error"),
    ("mean_absolute_error", "mean_absolute_error"),
    ("huber", "huber"),
    ("huber_loss", "huber"),
    ("hinge", "hinge"),
    ("squared_hinge", "squared_hinge"),
    ("kld", "kl_divergence"),
    ("kl_divergence", "kl_divergence"),
    ("kullback_leibler_divergence", "kl_divergence"),
    ("log_cosh", "log_cosh"),
    ("logcosh", "log_cosh"),
    ("binary_crossentropy", "binary_crossentropy"),
    ("categorical_crossentropy", "categorical_crossentropy"),
    ("sparse_categorical_crossentropy", "sparse_categorical_crossentropy"),
    ("binary_crossentropy_from_logits", "binary_crossentropy_from_logits"),
    ("categorical_crossentropy_from_logits", "categorical_crossentropy_from_logits"),
    (
        "sparse_categorical_crossentropy_from_logits",
        "sparse_categorical_crossentropy_from_logits",
    ),
    ("MSE", "mean_squared_error"),
    ("Binary_CrossEntropy", "binary_crossentropy"),
]


@pytest.mark.parametrize(("alias", "name"), ALIASES)
def test_get_resolves_names_case_insensitively(alias, name):
    assert losses.get(alias) is getattr(losses, name)


def test_names_are_sorted_registry_and_get_passes_callables_through():
    assert losses.names() == sorted({a for a, _ in ALIASES if a.islower()})

    def fn(t, p):
        return t - p

    assert losses.get(fn) is fn


@pytest.mark.parametrize(
    ("bad", "argname", "error", "parts"),
    [
        (
            "msee",
            "loss",
            ValueError,
            [
                "loss: expected a loss name (one of 'binary_crossentropy', ",
                "'mse'",
                "or a callable (y_true, y_pred) -> per-sample loss, got 'msee' (str).",
            ],
        ),
        (
            None,
            "loss",
            TypeError,
            ["loss: expected a loss name", "got None (NoneType)."],
        ),
        (3, "loss", TypeError, ["loss: expected", "got 3 (int)."]),
        ("nope", "loss['out']", ValueError, ["loss['out']: expected", "'nope' (str)"]),
    ],
)
def test_get_errors_name_the_argument_value_and_known_names(bad, argname, error, parts):
    with pytest.raises(error) as info:
        losses.get(bad, argname=argname)
    for part in parts:
        assert part in str(info.value)


class _Callable:
    def __call__(self, y_true, y_pred):
        return y_true


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("mse", "mse"),
        ("MSE", "MSE"),
        (losses.huber, "huber"),
        (_Callable(), "_Callable"),
    ],
)
def test_name_of(identifier, expected):
    assert losses.name_of(identifier) == expected


# (case id, keras class, kwargs)
KERAS_LOSSES = [
    ("mse", "MeanSquaredError", {}),
    ("mae", "MeanAbsoluteError", {}),
    ("huber", "Huber", {}),
    ("huber_delta", "Huber", {"delta": 0.5}),
    ("log_cosh", "LogCosh", {}),
    ("hinge_01", "Hinge", {}),
    ("hinge_pm1", "Hinge", {}),
    ("hinge_other", "Hinge", {}),
    ("squared_hinge_01", "SquaredHinge", {}),
    ("kl_divergence", "KLDivergence", {}),
    ("kl_divergence_clipped", "KLDivergence", {}),
    ("binary_crossentropy", "BinaryCrossentropy", {}),
    ("binary_crossentropy_from_logits", "BinaryCrossentropy", {"from_logits": True}),
    ("categorical_crossentropy", "CategoricalCrossentropy", {}),
    ("categorical_crossentropy_unnormalised", "CategoricalCrossentropy", {}),
    (
        "categorical_crossentropy_from_logits",
        "CategoricalCrossentropy",
        {"from_logits": True},
    ),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", {}),
    (
        "sparse_categorical_crossentropy_from_logits",
        "SparseCategoricalCrossentropy",
        {"from_logits": True},
    ),
]


def _keras():
    return import_keras()


def test_keras_table_covers_every_case():
    assert {c[0] for c in KERAS_LOSSES} == set(CASE_IDS)


@pytest.mark.parametrize(
    ("case_id", "keras_name", "keras_kwargs"),
    KERAS_LOSSES,
    ids=[c[0] for c in KERAS_LOSSES],
)
@pytest.mark.parametrize("layout", ["plain", "extra_axis"])
def test_losses_match_keras_per_sample(case_id, keras_name, keras_kwargs, layout):
    keras = _keras()
    _, name, kwargs, y_true, y_pred, _ = CASES[CASE_IDS.index(case_id)]
    if layout == "extra_axis":  # Keras keeps (B, 2); jaxfit averages it
        y_true = np.stack([y_true, y_true], 1)
        y_pred = np.stack([y_pred, y_pred[::-1]], 1)
    keras_loss = getattr(keras.losses, keras_name)(reduction=None, **keras_kwargs)
    expected = np.asarray(keras_loss(y_true, y_pred)).reshape(B, -1).mean(-1)
    np.testing.assert_allclose(
        _fn(name, kwargs)(y_true, y_pred), expected, rtol=1e-5, atol=1e-6
    )
