"""train_on_batch / test_on_batch / predict_on_batch: fit's, evaluate's and
predict's numbers on one batch, Keras 3's return values, no recompiling."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import optax
import pytest
from conftest import import_keras, linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=6)


def make(metrics=("mae",), mesh="auto"):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.1),
        loss="mse",
        metrics=list(metrics),
        mesh=mesh,
    )


def test_train_on_batch_is_fit_on_that_batch():
    one, fitted = make(), make()
    loss, mae = one.train_on_batch(X, Y)
    history = fitted.fit(X, Y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(loss, history.history["loss"][0], rtol=1e-6)
    np.testing.assert_allclose(mae, history.history["mae"][0], rtol=1e-6)
    for name in ("w", "b"):
        np.testing.assert_allclose(one.params[name], fitted.params[name], rtol=1e-6)
    assert int(one.state.step) == 1


def test_return_forms():
    trainer = make(metrics=())
    assert isinstance(trainer.train_on_batch(X, Y), float)
    logs = make().train_on_batch(X, Y, return_dict=True)
    assert list(logs) == ["loss", "mae"]
    assert isinstance(make().test_on_batch(X, Y), list)


def test_test_and_predict_on_batch_equal_evaluate_and_predict():
    trainer = make()
    logs = trainer.test_on_batch(X, Y, return_dict=True)
    assert logs == pytest.approx(trainer.evaluate(X, Y, batch_size=6), rel=1e-6)
    weights = np.arange(1.0, 7.0, dtype=np.float32)
    weighted = trainer.test_on_batch(X, Y, sample_weight=weights, return_dict=True)
    assert weighted["loss"] == pytest.approx(
        trainer.evaluate(X, Y, batch_size=6, sample_weight=weights)["loss"], rel=1e-6
    )
    np.testing.assert_allclose(
        trainer.predict_on_batch(X[:4]), trainer.predict(X[:4]), rtol=1e-6
    )
    assert trainer.predict_on_batch(X[:4]).shape == (4, 1)


def test_class_weight_as_fit():
    x = X
    y = np.array([0, 1, 1, 0, 1, 0], np.int32)

    def apply(params, x):
        return x @ params["w"]

    def trainer():
        return jaxfit.Trainer(
            apply,
            {"w": np.zeros((3, 2), np.float32)},
            optimizer=optax.sgd(0.1),
            loss="sparse_categorical_crossentropy_from_logits",
        )

    weights = {0: 1.0, 1: 3.0}
    one, fitted = trainer(), trainer()
    loss = one.train_on_batch(x, y, class_weight=weights)
    history = fitted.fit(
        x, y, batch_size=6, shuffle=False, class_weight=weights, verbose=0
    )
    np.testing.assert_allclose(loss, history.history["loss"][0], rtol=1e-6)
    np.testing.assert_allclose(one.params["w"], fitted.params["w"], rtol=1e-6)


def test_smaller_batches_compile_nothing_new(compiles):
    trainer = make()
    trainer.train_on_batch(X, Y)
    trainer.test_on_batch(X, Y)
    trainer.predict_on_batch(X)
    compiles.reset()
    for n in (5, 3, 6):
        trainer.train_on_batch(X[:n], Y[:n])
        trainer.test_on_batch(X[:n], Y[:n])
        trainer.predict_on_batch(X[:n])
    assert compiles.count == 0


def test_padding_does_not_change_the_numbers():
    padded, plain = make(), make()
    padded.train_on_batch(X, Y)  # later batches are padded to 6 rows
    plain.train_on_batch(X, Y)
    a = padded.train_on_batch(X[:3], Y[:3], return_dict=True)
    fresh = make(mesh=None)
    fresh.train_on_batch(X, Y)
    b = fresh.train_on_batch(X[:3], Y[:3], return_dict=True)
    assert a == pytest.approx(b, rel=1e-6)
    np.testing.assert_allclose(padded.params["w"], fresh.params["w"], rtol=1e-6)


def test_bad_input_named():
    trainer = make()
    with pytest.raises(ValueError, match="x"):
        trainer.train_on_batch(X[:0], Y[:0])
    with pytest.raises(ValueError, match="y"):
        trainer.train_on_batch(X, Y[:4])
    with pytest.raises(ValueError, match="x"):
        trainer.predict_on_batch(np.ones((2, 7), np.float32))


@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")
def test_train_on_batch_matches_keras():
    keras = import_keras()
    params = linear_params()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([np.asarray(params["w"]), np.asarray(params["b"])])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    trainer = make()
    for _ in range(2):  # Keras 3 resets its metrics at each call: the batch's own
        ours = trainer.train_on_batch(X, Y)
        theirs = model.train_on_batch(X, Y)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(
        trainer.test_on_batch(X, Y), model.test_on_batch(X, Y), rtol=1e-5
    )
    assert model.train_on_batch(X, Y, return_dict=True).keys() == (
        trainer.train_on_batch(X, Y, return_dict=True).keys()
    )
    np.testing.assert_allclose(
        trainer.predict_on_batch(X), model.predict_on_batch(X), rtol=1e-5
    )
