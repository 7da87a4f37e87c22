"""Randomness at inference: a fresh key per predict/eval batch and per call,
derived from the seed; the training rng untouched; the same rows get the same
noise on one device or on every device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit


def mc_dropout(params, x, *, rng, train):
    """Dropout that stays on at inference (MC dropout)."""
    del train
    keep = jax.random.bernoulli(rng, 0.5, x.shape).astype(x.dtype)
    return (x * keep) @ params["w"]


def make(seed=0, mesh="auto", dropout_in_training=True):
    apply = mc_dropout
    if not dropout_in_training:

        def apply(params, x, *, rng, train):
            if train:
                return x @ params["w"]
            return mc_dropout(params, x, rng=rng, train=train)

    return jaxfit.Trainer(
        apply,
        {"w": jnp.arange(1.0, 9.0).reshape(8, 1)},
        optimizer=optax.sgd(0.01),
        loss="mse",
        seed=seed,
        mesh=mesh,
    )


X = np.ones((16, 8), np.float32)  # identical rows: only the noise tells them apart
Y = np.zeros((16, 1), np.float32)


def test_predict_rows_differ_across_batches_and_calls():
    trainer = make()
    first = trainer.predict(X, batch_size=4)
    second = trainer.predict(X, batch_size=4)
    batches = first.reshape(4, 4)
    assert len({tuple(b) for b in batches}) == 4  # each batch its own noise
    assert not np.array_equal(first, second)  # each call its own keys


def test_same_seed_same_predictions_other_seed_others():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    for _ in range(2):  # the call sequence, not only the first call
        pa, pb = a.predict(X, batch_size=4), b.predict(X, batch_size=4)
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, c.predict(X, batch_size=4))


def test_predict_leaves_the_training_rng_and_fit_alone():
    quiet, busy = make(), make()
    rng_before = np.asarray(busy.state.rng)
    busy.predict(X, batch_size=4)
    busy.evaluate(X, Y, batch_size=4)
    np.testing.assert_array_equal(np.asarray(busy.state.rng), rng_before)
    quiet.fit(X, Y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    busy.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    busy.predict_dataset([X[:4]] * 3)
    busy.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(
        np.asarray(quiet.params["w"]), np.asarray(busy.params["w"])
    )


def test_evaluate_keys_per_batch_and_call_deterministic():
    a, b = make(seed=5), make(seed=5)
    losses = [a.evaluate(X, Y, batch_size=4)["loss"] for _ in range(3)]
    assert len(set(losses)) == 3
    assert [b.evaluate(X, Y, batch_size=4)["loss"] for _ in range(3)] == losses
    # per batch: four batches of identical rows do not all get the same noise
    logs = []
    a.evaluate(
        X,
        Y,
        batch_size=4,
        callbacks=[{"on_test_batch_end": lambda batch, logs_: logs.append(logs_)}],
    )
    assert len({round(entry["loss"], 6) for entry in logs}) > 1


def test_predict_dataset_and_evaluate_dataset_deterministic():
    a, b = make(seed=2), make(seed=2)
    stream = [X[:4], X[4:8], X[8:11]]
    pa, pb = a.predict_dataset(stream), b.predict_dataset(stream)
    np.testing.assert_array_equal(pa, pb)
    assert len({tuple(r) for r in pa[:8].reshape(2, 4)}) == 2
    assert not np.array_equal(pa, a.predict_dataset(stream))
    b.predict_dataset(stream)  # the same calls in the same order
    pairs = [(X[:4], Y[:4]), (X[4:8], Y[4:8])]
    assert a.evaluate_dataset(pairs) == b.evaluate_dataset(pairs)


def test_validation_in_fit_fresh_per_run_and_deterministic():
    a, b = make(dropout_in_training=False), make(dropout_in_training=False)
    kwargs = dict(batch_size=4, epochs=3, verbose=0, validation_data=(X, Y))
    ha, hb = a.fit(X, Y, **kwargs), b.fit(X, Y, **kwargs)
    assert ha.history["val_loss"] == hb.history["val_loss"]
    assert len(set(ha.history["val_loss"])) == 3  # a fresh key chain each epoch


@pytest.mark.parametrize("batch_size", [4, 5])
def test_one_device_and_every_device_give_the_same_noise(batch_size):
    one, every = make(seed=7, mesh=None), make(seed=7)
    x = np.ones((13, 8), np.float32)
    np.testing.assert_array_equal(
        one.predict(x, batch_size=batch_size), every.predict(x, batch_size=batch_size)
    )
    stream = [x[:batch_size], x[batch_size : 2 * batch_size], x[-3:]]
    np.testing.assert_array_equal(
        one.predict_dataset(stream), every.predict_dataset(stream)
    )
    y = np.zeros((13, 1), np.float32)
    np.testing.assert_allclose(
        one.evaluate(x, y, batch_size=batch_size)["loss"],
        every.evaluate(x, y, batch_size=batch_size)["loss"],
        rtol=1e-6,
    )


def test_one_compile_for_many_calls(compiles):
    trainer = make()
    trainer.predict(X, batch_size=4)
    trainer.evaluate(X, Y, batch_size=4)
    compiles.reset()
    for _ in range(3):
        trainer.predict(X[:7], batch_size=4)
        trainer.evaluate(X, Y, batch_size=4)
    assert compiles.count == 0
