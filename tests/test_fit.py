"""fit / evaluate / predict semantics through the public API."""

import asyncio

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit


def _trainer(lr=0.0, metrics=("mae",), seed=0, **kwargs):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(lr),
        loss="mse",
        metrics=list(metrics),
        seed=seed,
        **kwargs,
    )


def _residuals(x, y, params):
    pred = np.asarray(x @ np.asarray(params["w"]) + np.asarray(params["b"]))
    return pred - y


def test_epoch_loss_is_exact_over_ragged_batches_with_lr0():
    x, y = regression_data(n=10)
    trainer = _trainer()
    history = trainer.fit(x, y, batch_size=4, epochs=2, verbose=0)
    r = _residuals(x, y, trainer.params)
    np.testing.assert_allclose(history.history["loss"], [np.mean(r**2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(
        history.history["mae"], [np.mean(np.abs(r))] * 2, rtol=1e-5
    )
    assert history.epoch == [0, 1]
    assert history.params == {
        "verbose": 0,
        "epochs": 2,
        "steps": 3,
        "batch_size": 4,
        "do_validation": False,
    }


def test_sample_weight_uses_sum_over_batch_size_and_weighted_metrics():
    x, y = regression_data(n=10)
    w = np.linspace(0.0, 2.0, 10).astype(np.float32)
    trainer = _trainer(weighted_metrics=["mae"])
    history = trainer.fit(x, y, batch_size=4, sample_weight=w, verbose=0)
    r = _residuals(x, y, trainer.params)[:, 0]
    assert list(history.history) == ["loss", "mae", "weighted_mae"]
    np.testing.assert_allclose(
        history.history["loss"], [np.sum(w * r**2) / 10], rtol=1e-5
    )
    # as Keras: `metrics` ignore sample weights, `weighted_metrics` use them
    np.testing.assert_allclose(history.history["mae"], [np.mean(np.abs(r))], rtol=1e-5)
    np.testing.assert_allclose(
        history.history["weighted_mae"], [np.sum(w * np.abs(r)) / np.sum(w)], rtol=1e-5
    )


def test_class_weight_weights_each_sample_by_its_class():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    y = np.eye(3, dtype=np.float32)[labels]
    params = linear_params(3, 3)
    trainer = jaxfit.Trainer(
        lambda p, x: jax.nn.softmax(linear_apply(p, x)),
        params,
        optimizer=optax.sgd(0.0),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
    )
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    history = trainer.fit(x, y, batch_size=4, class_weight=cw, verbose=0)
    p = np.asarray(jax.nn.softmax(linear_apply(params, x)))
    per_sample = -np.log(np.clip(p[np.arange(9), labels], 1e-7, 1 - 1e-7))
    w = np.array([cw[c] for c in labels])
    np.testing.assert_allclose(
        history.history["loss"], [np.sum(w * per_sample) / 9], rtol=1e-5
    )
    correct = (p.argmax(-1) == labels).astype(np.float64)
    np.testing.assert_allclose(
        history.history["accuracy"], [np.mean(correct)], rtol=1e-6
    )
    np.testing.assert_allclose(
        history.history["weighted_accuracy"],
        [np.sum(w * correct) / np.sum(w)],
        rtol=1e-6,
    )


def test_validation_split_holds_out_the_last_fraction_with_floor():
    x, y = regression_data(n=10)
    trainer = _trainer()
    history = trainer.fit(x, y, batch_size=3, validation_split=0.25, verbose=0)
    r = _residuals(x, y, trainer.params)
    # floor(10 * 0.75) = 7 training samples, the last 3 validate.
    np.testing.assert_allclose(
        history.history["loss"], [np.mean(r[:7] ** 2)], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["val_loss"], [np.mean(r[7:] ** 2)], rtol=1e-5
    )
    assert history.params["steps"] == 3


@pytest.mark.parametrize("with_weights", [False, True])
def test_validation_data_tuples(with_weights):
    x, y = regression_data(n=8)
    vx, vy = regression_data(n=5, seed=3)
    vw = np.array([1, 0, 2, 1, 1], np.float32)
    trainer = _trainer()
    data = (vx, vy, vw) if with_weights else (vx, vy)
    history = trainer.fit(
        x, y, batch_size=4, validation_data=data, validation_batch_size=2, verbose=0
    )
    r = _residuals(vx, vy, trainer.params)[:, 0]
    w = vw if with_weights else np.ones(5)
    np.testing.assert_allclose(
        history.history["val_loss"], [np.sum(w * r**2) / 5], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["val_mae"], [np.mean(np.abs(r))], rtol=1e-5
    )


def test_initial_epoch_numbers_the_epochs_run():
    x, y = regression_data()
    seen = []
    cb = jaxfit.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    history = _trainer().fit(x, y, epochs=5, initial_epoch=2, callbacks=[cb], verbose=0)
    assert seen == [2, 3, 4]
    assert history.epoch == [2, 3, 4]
    assert len(history.history["loss"]) == 3


def test_validation_freq_and_validation_steps():
    x, y = regression_data(n=12)
    vx, vy = regression_data(n=6, seed=2)
    trainer = _trainer()
    history = trainer.fit(
        x,
        y,
        epochs=4,
        validation_data=(vx, vy),
        validation_freq=2,
        validation_steps=1,
        validation_batch_size=2,
        verbose=0,
    )
    assert len(history.history["val_loss"]) == 2
    r = _residuals(vx, vy, trainer.params)
    np.testing.assert_allclose(
        history.history["val_loss"][0], np.mean(r[:2] ** 2), rtol=1e-5
    )
    history = trainer.fit(
        x, y, epochs=3, validation_data=(vx, vy), validation_freq=[1, 3], verbose=0
    )
    assert len(history.history["val_loss"]) == 2


def test_steps_per_epoch_continues_one_stream_across_epochs():
    x, y = regression_data(n=10)
    trainer = _trainer(lr=0.0)
    sizes = []
    cb = {"on_train_batch_end": lambda b, logs: sizes.append(b)}
    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        steps_per_epoch=2,
        shuffle=False,
        callbacks=[cb],
        verbose=0,
    )
    assert sizes == [0, 1] * 3
    r = _residuals(x, y, trainer.params)[:, 0] ** 2
    # epoch 0: batches [0:4], [4:8]; epoch 1: [8:10], [0:4]; epoch 2: [4:8], [8:10]
    expected = [
        r[:8].mean(),
        np.concatenate([r[8:], r[:4]]).mean(),
        np.concatenate([r[4:8], r[8:]]).mean(),
    ]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    assert int(trainer.state.step) == 6


def test_same_seed_gives_same_history_and_params():
    x, y = regression_data(n=20)
    runs = []
    for seed in (0, 0, 1):
        trainer = _trainer(lr=0.05, seed=seed)
        history = trainer.fit(x, y, batch_size=3, epochs=3, verbose=0)
        runs.append((history.history["loss"], np.asarray(trainer.params["w"])))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_training_reduces_the_loss_and_evaluate_matches_history():
    x, y = regression_data(n=64)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    trainer = _trainer(lr=0.1)
    history = trainer.fit(x, y, batch_size=8, epochs=20, verbose=0)
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
    result = trainer.evaluate(x, y, batch_size=5)
    r = _residuals(x, y, trainer.params)
    assert set(result) == {"loss", "mae"}
    np.testing.assert_allclose(result["loss"], np.mean(r**2), rtol=1e-4, atol=1e-7)


def test_predict_returns_every_sample_in_order_for_pytrees():
    def apply(params, x):
        h = x["a"] @ params["w"] + params["b"]
        return {"out": h, "twice": [2 * h]}

    x = {"a": np.arange(21, dtype=np.float32).reshape(7, 3)}
    trainer = jaxfit.Trainer(
        apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )
    out = trainer.predict(x, batch_size=3)
    expected = x["a"] @ np.asarray(trainer.params["w"])
    np.testing.assert_allclose(out["out"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["twice"][0], 2 * expected, rtol=1e-6)


def test_multi_output_losses_weights_and_metrics_are_named_per_output():
    def apply(params, x):
        h = linear_apply(params, x)
        return {"a": h, "b": 3.0 * h}

    x, y = regression_data(n=10)
    ys = {"a": y, "b": 2 * y}
    trainer = jaxfit.Trainer(
        apply,
        linear_params(),
        optimizer=optax.sgd(0.0),
        loss={"a": "mse", "b": "mae"},
        loss_weights={"a": 1.0, "b": 0.5},
        metrics=["mae"],
    )
    history = trainer.fit(x, ys, batch_size=4, verbose=0)
    assert set(history.history) == {"loss", "a_loss", "b_loss", "a_mae", "b_mae"}
    r = _residuals(x, y, trainer.params)
    a_loss = np.mean(r**2)
    b_loss = np.mean(np.abs(3 * (r + y) - 2 * y))
    np.testing.assert_allclose(history.history["a_loss"], [a_loss], rtol=1e-5)
    np.testing.assert_allclose(history.history["b_loss"], [b_loss], rtol=1e-5)
    np.testing.assert_allclose(
        history.history["loss"], [a_loss + 0.5 * b_loss], rtol=1e-5
    )


def test_model_state_and_rng_are_threaded_through_train_steps():
    def apply(params, x, *, train, rng, state):
        noise = jax.random.uniform(rng, ())
        new_state = {
            "steps": state["steps"] + jnp.where(train, 1, 0),
            "noise": jnp.where(train, state["noise"] + noise, state["noise"]),
        }
        return linear_apply(params, x), new_state

    x, y = regression_data(n=10)
    init = {"steps": jnp.zeros((), jnp.int32), "noise": jnp.zeros((), jnp.float32)}

    def run(seed):
        trainer = jaxfit.Trainer(
            apply,
            linear_params(),
            optimizer=optax.sgd(0.01),
            loss="mse",
            state=init,
            seed=seed,
        )
        trainer.fit(x, y, batch_size=4, epochs=2, validation_split=0.2, verbose=0)
        trainer.evaluate(x, y)
        return trainer.state

    state = run(0)
    assert int(state.model_state["steps"]) == 4  # 8 train samples, 2 batches x 2
    assert int(state.step) == 4
    assert float(state.model_state["noise"]) == float(run(0).model_state["noise"])
    assert float(state.model_state["noise"]) != float(run(1).model_state["noise"])
    assert int(init["steps"]) == 0  # the user's arrays are untouched


def test_dropout_style_rng_changes_every_step():
    keys = []

    def apply(params, x, *, rng, train):
        del train
        keys.append(rng)
        return linear_apply(params, x)

    x, y = regression_data(n=8)
    trainer = jaxfit.Trainer(
        apply, linear_params(), optimizer=optax.sgd(0.01), loss="mse"
    )
    sums = []
    cb = {
        "on_train_batch_end": lambda b, logs: sums.append(
            np.asarray(
                jax.random.key_data(trainer.state.rng)
                if jnp.issubdtype(trainer.state.rng.dtype, jax.dtypes.prng_key)
                else trainer.state.rng
            ).tolist()
        )
    }
    trainer.fit(
        x, y, batch_size=2, epochs=1, yield_every="batch", callbacks=[cb], verbose=0
    )
    assert len({str(s) for s in sums}) == 4


def test_fit_async_lets_other_coroutines_run():
    x, y = regression_data(n=40)
    trainer = _trainer(lr=0.01)
    ticks = []

    async def ticker(done):
        while not done.is_set():
            ticks.append(len(ticks))
            await asyncio.sleep(0)

    async def main():
        done = asyncio.Event()
        task = asyncio.create_task(ticker(done))
        history = await trainer.fit_async(
            x, y, batch_size=4, epochs=2, yield_every="batch", verbose=0
        )
        done.set()
        await task
        return history

    history = asyncio.run(main())
    assert history.epoch == [0, 1]
    assert len(ticks) >= 10  # the ticker ran between the 20 batches


def test_second_fit_continues_from_the_trained_state():
    x, y = regression_data(n=10)
    trainer = _trainer(lr=0.05)
    before = trainer.params
    trainer.fit(x, y, epochs=2, verbose=0)
    first = np.asarray(trainer.params["w"])
    trainer.fit(x, y, epochs=1, verbose=0)
    assert int(trainer.state.step) == 3 * 1  # one batch of 10 per epoch
    assert not np.allclose(first, np.asarray(trainer.params["w"]))
    np.testing.assert_array_equal(np.asarray(before["w"]), linear_params()["w"])


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = regression_data()
    _trainer().fit(x, y, epochs=2, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "loss:" in lines[0]


def test_jaxfit_code_is_clean_under_strict_dtype_promotion():
    x, y = regression_data(n=10)
    with jax.numpy_dtype_promotion("strict"):
        trainer = _trainer(lr=0.1)
        history = trainer.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            validation_split=0.2,
            sample_weight=np.ones(10, np.float32),
            verbose=0,
        )
        trainer.evaluate(x, y)
        trainer.predict(x)
    assert np.isfinite(history.history["val_loss"]).all()


def test_log_keys_keep_keras_order():
    x, y = regression_data()
    history = _trainer(metrics=("mae", "mse")).fit(
        x, y, validation_split=0.3, verbose=0
    )
    assert list(history.history) == [
        "loss",
        "mae",
        "mse",
        "val_loss",
        "val_mae",
        "val_mse",
    ]


def test_per_output_sample_weights_for_multi_output_models():
    def apply(params, x):
        h = linear_apply(params, x)
        return {"a": h, "b": h}

    x, y = regression_data(n=10)
    wa = np.linspace(0.0, 1.0, 10).astype(np.float32)
    wb = np.linspace(2.0, 1.0, 10).astype(np.float32)
    trainer = jaxfit.Trainer(
        apply,
        linear_params(),
        optimizer=optax.sgd(0.0),
        loss="mse",
        weighted_metrics=["mae"],
    )
    history = trainer.fit(
        x, {"a": y, "b": y}, batch_size=4, sample_weight={"a": wa, "b": wb}, verbose=0
    )
    r = _residuals(x, y, trainer.params)[:, 0]
    np.testing.assert_allclose(
        history.history["a_loss"], [np.sum(wa * r**2) / 10], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["b_loss"], [np.sum(wb * r**2) / 10], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["loss"], [np.sum((wa + wb) * r**2) / 10], rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["b_mae"], [np.sum(wb * np.abs(r)) / np.sum(wb)], rtol=1e-5
    )
