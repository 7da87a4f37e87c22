"""Cross-check with Keras 3 (JAX backend): same model, weights and data order give
the same per-epoch loss, val_loss and accuracy, with a ragged last batch."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit

keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
if keras.backend.backend() != "jax":
    pytest.skip(
        "keras is not on the JAX backend (set KERAS_BACKEND=jax)",
        allow_module_level=True,
    )

# Keras' own NumPy 2 deprecation noise (Variable.numpy() calls np.array(self)) is
# not ours to fix; a mark wins over `-W error` on the command line.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(70, 5)).astype(np.float32)  # 70 = 4 batches of 16 + 6
LABELS = (X[:, 0] + X[:, 1] > 0).astype(np.int32) + (X[:, 2] > 0.5).astype(np.int32)
Y = np.eye(3, dtype=np.float32)[LABELS]
XV = RNG.normal(size=(23, 5)).astype(np.float32)  # ragged validation batches too
YV = np.eye(3, dtype=np.float32)[(XV[:, 0] + XV[:, 1] > 0).astype(np.int32)]


def apply(params, x):
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    return jax.nn.softmax(hidden @ params["w2"] + params["b2"])


def _keras_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    w1, b1, w2, b2 = model.get_weights()
    params = {
        "w1": jnp.asarray(w1),
        "b1": jnp.asarray(b1),
        "w2": jnp.asarray(w2),
        "b2": jnp.asarray(b2),
    }
    return model, params


CLASS_WEIGHT = {0: 1.0, 1: 2.0, 2: 0.5}
SAMPLE_WEIGHT = RNG.uniform(0.0, 2.0, size=70).astype(np.float32)
CASES = {
    "class_weight": dict(class_weight=CLASS_WEIGHT, validation_data=(XV, YV)),
    "sample_weight": dict(sample_weight=SAMPLE_WEIGHT, validation_data=(XV, YV)),
    # class_weight weights training batches only: the held-out rows are unweighted
    "class_weight_split": dict(class_weight=CLASS_WEIGHT, validation_split=0.2),
    # a sample_weight is split with the data and weights validation too
    "sample_weight_split": dict(sample_weight=SAMPLE_WEIGHT, validation_split=0.2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_history_as_keras(case):
    model, params = _keras_model()
    kwargs = dict(batch_size=16, epochs=3, shuffle=False, verbose=0, **CASES[case])
    expected = model.fit(X, Y, **kwargs).history
    trainer = jaxfit.Trainer(
        apply,
        params,
        optimizer=optax.sgd(0.1),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    got = trainer.fit(X, Y, **kwargs).history
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            got[key], expected[key], rtol=2e-5, atol=1e-6, err_msg=key
        )
    for ours, theirs in zip(
        jax.tree.leaves(trainer.params),
        jax.tree.leaves(
            dict(
                zip(
                    ["b1", "b2", "w1", "w2"],
                    [model.get_weights()[i] for i in (1, 3, 0, 2)],
                )
            )
        ),
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
