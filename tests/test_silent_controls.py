"""Controls that used to do nothing, now acting as Keras 3's: ModelCheckpoint's
save_best_only without its monitor, mode="auto", History.plot's keys,
TerminateOnNaN(raise_error=True) and Trainer.load with a jaxfit.Model."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit


def _linear(params, x):
    return x @ params["w"] + params["b"]


def _params():
    return {"w": jnp.full((3, 1), 0.1, jnp.float32), "b": jnp.zeros((1,), jnp.float32)}


def _data(n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)


def _trainer(metrics=None):
    return jaxfit.Trainer(
        _linear, _params(), optimizer=optax.sgd(0.1), loss="mse", metrics=metrics
    )


# -- ModelCheckpoint(save_best_only=True) without its monitor: warn and save -------


def test_save_best_only_saves_when_the_monitor_is_missing(tmp_path):
    x, y = _data()
    checkpoint = jaxfit.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt-{epoch}"), monitor="val_loss", save_best_only=True
    )
    with pytest.warns(RuntimeWarning, match="can save the best model only"):
        _trainer().fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            validation_split=0.25,
            validation_freq=2,  # no val_loss in epochs 1 and 3
            callbacks=[checkpoint],
            verbose=0,
        )
    # epoch 1 and 3: warned and saved (Keras 3); epoch 2: the first best
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1", "ckpt-2", "ckpt-3"]


def test_a_val_monitor_without_validation_is_an_error_at_fit_start(tmp_path):
    x, y = _data()
    trainer = _trainer()
    for callback in (
        jaxfit.callbacks.ModelCheckpoint(str(tmp_path / "c"), save_best_only=True),
        jaxfit.callbacks.EarlyStopping(monitor="val_loss"),
    ):
        with pytest.raises(ValueError, match=r"monitor: .*'val_loss'"):
            trainer.fit(x, y, epochs=2, batch_size=8, callbacks=[callback], verbose=0)
    assert not os.listdir(tmp_path)
    assert int(trainer.state.step) == 0
    # without save_best_only the monitor is not read: nothing to refuse
    plain = jaxfit.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}"))
    trainer.fit(x, y, epochs=1, batch_size=8, callbacks=[plain], verbose=0)
    assert os.listdir(tmp_path) == ["ckpt-1"]


# -- mode="auto": Keras 3's rule ---------------------------------------------------

# names jaxfit logs today, compiled as metrics on both sides
SHARED = ["accuracy", "acc", "binary_accuracy", "mae", "mse", "binary_crossentropy"]
# Keras metric names jaxfit has no metric for yet: the rule by name
BY_NAME = ["auc", "precision", "recall", "f1_score", "r2_score"]
MONITORS = ["loss", "val_loss", "val_acc", "score", "learning_rate"] + [
    prefix + name for name in SHARED + BY_NAME for prefix in ("", "val_")
]


def _keras_directions():
    keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
    if keras.backend.backend() != "jax":
        pytest.skip("keras is not on the JAX backend")
    x, y = _data()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, "sigmoid")])
    model.compile("sgd", "mse", metrics=SHARED + BY_NAME)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # builds the metrics
    directions = {}
    for monitor in MONITORS:
        callback = keras.callbacks.EarlyStopping(monitor=monitor)
        callback.set_model(model)
        try:
            callback._set_monitor_op()
        except ValueError:
            directions[monitor] = None
            continue
        up = callback.monitor_op is keras.ops.greater
        directions[monitor] = "max" if up else "min"
    return directions


def _jaxfit_direction(monitor, trainer):
    callback = jaxfit.callbacks.EarlyStopping(monitor=monitor)
    callback.set_trainer(trainer)
    try:
        callback.on_train_begin()
    except ValueError as error:
        assert "mode='max' or mode='min'" in str(error)
        return None
    return "max" if callback.is_improvement(1.0, 0.0) else "min"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_auto_mode_is_keras_rule():
    keras = _keras_directions()
    trainer = _trainer(metrics=SHARED)
    ours = {}
    for monitor in MONITORS:
        name = monitor.removeprefix("val_")
        # the BY_NAME metrics are not the trainer's: no trainer, the name decides
        ours[monitor] = _jaxfit_direction(monitor, None if name in BY_NAME else trainer)
    assert ours == keras
    assert keras["f1_score"] == "max" and keras["score"] is None


def _stop_epochs(mode):
    stop = jaxfit.callbacks.EarlyStopping(monitor="val_f1_score", patience=1, mode=mode)

    class Trainer:
        stop_training = False
        params = None

    stop.set_trainer(Trainer())
    stop.on_train_begin()
    for epoch, value in enumerate([0.5, 0.6, 0.7, 0.65, 0.64]):
        stop.on_epoch_end(epoch, {"val_f1_score": value})
        if stop.trainer.stop_training:
            break
    return stop.best_epoch, stop.stopped_epoch


def test_auto_mode_maximises_f1_score_so_early_stopping_waits():
    # improving until epoch 2, then one epoch of patience (Keras counts it)
    assert _stop_epochs("auto") == _stop_epochs("max") == (2, 3)
    assert _stop_epochs("min") == (0, 1)  # what the old suffix rule did


def test_auto_mode_of_a_per_output_metric_and_loss():
    stop = jaxfit.callbacks.EarlyStopping(monitor="val_out_accuracy")
    trainer = jaxfit.Trainer(
        lambda p, x: {"out": _linear(p, x), "aux": _linear(p, x)},
        _params(),
        optimizer=optax.sgd(0.1),
        loss="mse",
        metrics=["accuracy"],
    )
    stop.set_trainer(trainer)
    stop.on_train_begin()
    assert stop.is_improvement(1.0, 0.0)
    stop = jaxfit.callbacks.EarlyStopping(monitor="out_loss")
    stop.set_trainer(trainer)
    stop.on_train_begin()
    assert stop.is_improvement(0.0, 1.0)


@pytest.mark.parametrize(
    "metric,higher_is_better",
    [
        (jaxfit.metrics.Recall(name="r"), True),
        (jaxfit.metrics.AUC(name="r"), True),
        (jaxfit.metrics.BinaryAccuracy(name="r"), True),
        (jaxfit.losses.Huber(name="r"), False),
    ],
)
def test_auto_mode_of_a_renamed_metric_object_is_its_direction(
    metric, higher_is_better
):
    # Keras reads a metric object's direction whatever its name
    stop = jaxfit.callbacks.EarlyStopping(monitor="r")
    stop.set_trainer(_trainer(metrics=[metric]))
    stop.on_train_begin()
    assert stop.is_improvement(1.0, 0.0) is higher_is_better
    assert stop.is_improvement(0.0, 1.0) is not higher_is_better


# -- History.plot: each series once ------------------------------------------------


def test_plot_draws_each_series_once():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = jaxfit.History()
    history.epoch = [0, 1]
    history.history = {
        "loss": [1.0, 0.5],
        "accuracy": [0.5, 0.7],
        "val_loss": [1.1, 0.6],
        "val_accuracy": [0.4, 0.6],
    }
    for keys, expected in [
        (["accuracy", "val_accuracy"], ["accuracy", "val_accuracy"]),
        (["val_accuracy", "accuracy", "accuracy"], ["accuracy", "val_accuracy"]),
        (["val_loss"], ["val_loss"]),
        (None, ["loss", "val_loss", "accuracy", "val_accuracy"]),
    ]:
        figure = history.plot(keys=keys)
        labels = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
        assert labels == expected
        plt.close(figure)


# -- TerminateOnNaN(raise_error=True) ----------------------------------------------


@pytest.mark.parametrize("yield_every", ["batch", "epoch"])
def test_terminate_on_nan_raises_naming_the_batch(yield_every):
    x, y = _data()
    x[8:12] = np.nan  # batch 2 of 4
    trainer = _trainer()
    ended = []
    watcher = jaxfit.callbacks.LambdaCallback(on_train_end=lambda logs: ended.append(1))
    stop = jaxfit.callbacks.TerminateOnNaN(raise_error=True, restore_last_finite=True)
    with pytest.raises(RuntimeError, match="batch 2 of epoch 0") as raised:
        trainer.fit(
            x,
            y,
            epochs=3,
            batch_size=4,
            shuffle=False,
            yield_every=yield_every,
            callbacks=[stop, watcher],
            verbose=0,
        )
    assert "Loss value: nan" in str(raised.value)
    assert stop.stopped_batch == (0, 2)
    assert ended == [1]  # fit ends its callbacks as for any callback error
    leaves = jax.tree.leaves(trainer.params)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
    if yield_every == "batch":  # the state after batch 1: two finite steps
        assert int(trainer.state.step) == 2
    # the trainer stays usable
    x_ok, y_ok = _data()
    trainer.fit(x_ok, y_ok, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(trainer.evaluate(x_ok, y_ok)["loss"])


def test_terminate_on_nan_keeps_the_nan_state_as_keras():
    x, y = _data()
    x[8:12] = np.nan
    trainer = _trainer()
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        trainer.fit(
            x,
            y,
            epochs=1,
            batch_size=4,
            shuffle=False,
            yield_every="batch",
            callbacks=[jaxfit.callbacks.TerminateOnNaN(raise_error=True)],
            verbose=0,
        )
    assert int(trainer.state.step) == 3  # batches 0, 1 and the NaN batch 2
    assert not np.isfinite(np.asarray(trainer.params["w"])).all()


def test_terminate_on_nan_refuses_a_non_bool():
    with pytest.raises(TypeError, match="raise_error"):
        jaxfit.callbacks.TerminateOnNaN(raise_error="yes")


# -- Trainer.load with a jaxfit.Model ----------------------------------------------


def test_load_with_a_flax_model(tmp_path):
    linen = pytest.importorskip("flax.linen")

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool = False):
            h = linen.BatchNorm(use_running_average=not train, momentum=0.5)(x)
            return linen.Dense(1)(linen.Dense(4)(h))

    x, y = _data()
    trainer = jaxfit.Trainer(
        jaxfit.from_flax(Net(), x[:2]), optimizer=optax.adam(1e-2), loss="mse"
    )
    trainer.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = trainer.save(str(tmp_path / "ckpt"))
    expected = trainer.predict(x)

    loaded = jaxfit.Trainer.load(path, jaxfit.from_flax(Net(), x[:2], seed=5))
    np.testing.assert_array_equal(loaded.predict(x), expected)
    assert int(loaded.state.step) == int(trainer.state.step)

    resumed = jaxfit.Trainer.load(
        path,
        jaxfit.from_flax(Net(), x[:2], seed=5),
        optimizer=optax.adam(1e-2),
        loss="mse",
    )
    np.testing.assert_array_equal(resumed.predict(x), expected)
    trainer.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    resumed.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        resumed.predict(x), trainer.predict(x), rtol=1e-6, atol=1e-6
    )


def test_load_with_an_equinox_model_keeps_its_params_type(tmp_path):
    eqx = pytest.importorskip("equinox")
    x, y = _data()
    mlp = eqx.nn.MLP(3, 1, width_size=4, depth=1, key=jax.random.PRNGKey(0))
    trainer = jaxfit.Trainer(
        jaxfit.from_equinox(mlp), optimizer=optax.sgd(0.1), loss="mse"
    )
    trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = trainer.save(str(tmp_path / "ckpt"))
    other = eqx.nn.MLP(3, 1, width_size=4, depth=1, key=jax.random.PRNGKey(1))
    loaded = jaxfit.Trainer.load(path, jaxfit.from_equinox(other))
    assert type(loaded.params) is type(trainer.params)
    np.testing.assert_array_equal(loaded.predict(x), trainer.predict(x))


def test_load_with_a_model_of_another_shape_names_the_path(tmp_path):
    linen = pytest.importorskip("flax.linen")
    x, _ = _data()
    trainer = jaxfit.Trainer(
        jaxfit.from_flax(linen.Dense(1), x[:2]), optimizer=optax.sgd(0.1), loss="mse"
    )
    path = trainer.save(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match=r"at .bias. it holds \(1,\) float32"):
        jaxfit.Trainer.load(path, jaxfit.from_flax(linen.Dense(2), x[:2]))
