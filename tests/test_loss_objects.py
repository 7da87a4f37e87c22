"""Loss objects against Keras 3: the epoch loss of jaxfit's evaluate (ragged batches,
with and without sample weights) equals the Keras loss object's value on the same
data; per-output keys stay ``<output>_loss``; named wrappers; refused arguments."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp
import numpy as np
import pytest

import jaxfit
from jaxfit import losses

keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
if keras.backend.backend() != "jax":
    pytest.skip("keras is not on the JAX backend", allow_module_level=True)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

RNG = np.random.default_rng(1)
N, BATCH, C = 29, 8, 3
LOGITS = RNG.normal(size=(N, C)).astype(np.float32)
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
LABELS = RNG.integers(0, C, size=N).astype(np.int32)
ONE_HOT = np.eye(C, dtype=np.float32)[LABELS]
BIN = (RNG.uniform(size=(N, C)) > 0.5).astype(np.float32)
TARGET = RNG.normal(size=(N, C)).astype(np.float32)
WEIGHTS = RNG.uniform(0.0, 2.0, size=N).astype(np.float32)

CASES = [
    ("cce_smooth", lambda m: m.CategoricalCrossentropy(label_smoothing=0.1), PROBS, ONE_HOT),
    ("cce_logits_smooth",
     lambda m: m.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
     LOGITS, ONE_HOT),
    ("bce_smooth", lambda m: m.BinaryCrossentropy(label_smoothing=0.1), PROBS, BIN),
    ("bce_logits", lambda m: m.BinaryCrossentropy(from_logits=True, label_smoothing=0.3),
     LOGITS, BIN),
    ("scce", lambda m: m.SparseCategoricalCrossentropy(), PROBS, LABELS),
    ("scce_logits", lambda m: m.SparseCategoricalCrossentropy(from_logits=True), LOGITS, LABELS),
    ("huber", lambda m: m.Huber(delta=0.5), LOGITS, TARGET),
    ("mse", lambda m: m.MeanSquaredError(), LOGITS, TARGET),
    ("mae", lambda m: m.MeanAbsoluteError(), LOGITS, TARGET),
    ("log_cosh", lambda m: m.LogCosh(), LOGITS, TARGET),
    ("kld", lambda m: m.KLDivergence(), PROBS, np.abs(TARGET) / 3),
    ("hinge", lambda m: m.Hinge(), LOGITS, BIN),
    ("squared_hinge", lambda m: m.SquaredHinge(), LOGITS, BIN),
]  # fmt: skip


def identity(params, x):
    return x + 0.0 * params["b"]


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize(("case", "make", "p", "y"), CASES, ids=[c[0] for c in CASES])
def test_epoch_loss_equals_keras(case, make, p, y, weighted):
    w = WEIGHTS if weighted else None
    expected = float(make(keras.losses)(y, p, sample_weight=w))
    trainer = jaxfit.Trainer(identity, {"b": jnp.zeros(())}, loss=make(losses))
    logs = trainer.evaluate(p, y, batch_size=BATCH, sample_weight=w)
    np.testing.assert_allclose(logs["loss"], expected, rtol=2e-5, atol=1e-6)


def test_a_loss_object_keeps_the_output_key_and_is_a_metric_under_its_name():
    two = lambda params, x: {"a": x + params["b"], "b": x + params["b"]}  # noqa: E731
    trainer = jaxfit.Trainer(
        two,
        {"b": jnp.zeros(())},
        loss={"a": losses.Huber(delta=0.5), "b": losses.MeanSquaredError()},
        metrics={"a": [losses.CategoricalCrossentropy(label_smoothing=0.1)]},
    )
    logs = trainer.evaluate(
        LOGITS, {"a": TARGET, "b": TARGET}, batch_size=BATCH
    )  # the smoothed cross-entropy of nonsense labels is still a number
    assert list(logs) == ["loss", "a_loss", "b_loss", "a_categorical_crossentropy"]
    huber = float(keras.losses.Huber(delta=0.5)(TARGET, LOGITS))
    np.testing.assert_allclose(logs["a_loss"], huber, rtol=2e-5)


def test_loss_function_wrapper_names_a_custom_loss():
    wrapped = losses.LossFunctionWrapper(
        lambda t, p, scale: scale * jnp.mean((t - p) ** 2, axis=-1),
        name="scaled",
        scale=2.0,
    )
    assert losses.name_of(wrapped) == "scaled"
    trainer = jaxfit.Trainer(
        identity, {"b": jnp.zeros(())}, loss="mse", metrics=[wrapped]
    )
    logs = trainer.evaluate(LOGITS, TARGET, batch_size=BATCH)
    np.testing.assert_allclose(logs["scaled"], 2.0 * logs["loss"], rtol=1e-6)


def test_refused_arguments_name_themselves():
    with pytest.raises(ValueError, match="ignore_class: expected None"):
        losses.SparseCategoricalCrossentropy(ignore_class=0)
    with pytest.raises(ValueError, match="label_smoothing: expected a float in"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta: expected a float > 0"):
        losses.Huber(delta=0.0)
