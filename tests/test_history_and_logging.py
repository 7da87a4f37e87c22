"""History utilities, CSVLogger and TerminateOnNaN through fit."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=20)


def _trainer(lr=0.05):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(lr),
        loss="mse",
        metrics=["mae"],
    )


def test_history_utilities_round_trip_through_csv(tmp_path):
    history = _trainer().fit(
        X, Y, batch_size=4, epochs=4, validation_split=0.2, validation_freq=2, verbose=0
    )
    assert len(history) == 4
    assert history.to_dict()["epoch"] == [0, 1, 2, 3]
    assert history.epochs_of("val_loss") == [1, 3]
    path = tmp_path / "history.csv"
    history.to_csv(path)
    back = jaxfit.History.from_csv(path)
    assert back.epoch == history.epoch
    assert back.epochs_of("val_loss") == [1, 3]
    for key, values in history.history.items():
        np.testing.assert_allclose(back.history[key], values, rtol=1e-6)
    epoch, value = history.best("val_loss")
    assert value == min(history.history["val_loss"]) and epoch in (1, 3)
    assert history.best("loss", mode="max")[1] == max(history.history["loss"])
    with pytest.raises(ValueError, match="monitor"):
        history.best("val_accuracy")


def test_history_plot_draws_one_line_per_series():
    pytest.importorskip("matplotlib", reason="plotting is the optional plot extra")
    import matplotlib

    matplotlib.use("Agg")
    history = _trainer().fit(
        X, Y, batch_size=4, epochs=3, validation_split=0.2, verbose=0
    )
    figure = history.plot()
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["loss", "val_loss", "mae", "val_mae"]
    figure = history.plot(keys=["loss"])
    assert len(figure.axes[0].get_lines()) == 2
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("separator", [",", ";"])
def test_csv_logger_writes_each_epoch_and_appends(tmp_path, separator):
    path = tmp_path / "log.csv"
    trainer = _trainer()
    logger = jaxfit.callbacks.CSVLogger(path, separator=separator)
    first = trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=2,
        validation_split=0.2,
        validation_freq=2,
        callbacks=[logger],
        verbose=0,
    )
    rows = path.read_text().strip().splitlines()
    assert rows[0].split(separator) == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert len(rows) == 3 and rows[1].endswith(
        separator * 2
    )  # no validation at epoch 0
    second = trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=4,
        initial_epoch=2,
        validation_split=0.2,
        callbacks=[jaxfit.callbacks.CSVLogger(path, separator, append=True)],
        verbose=0,
    )
    back = jaxfit.History.from_csv(path, separator=separator)
    assert back.epoch == [0, 1, 2, 3]
    np.testing.assert_allclose(
        back.history["loss"], first.history["loss"] + second.history["loss"], rtol=1e-6
    )


def test_csv_logger_has_no_validation_twin_of_the_learning_rate(tmp_path):
    path = tmp_path / "log.csv"
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
        loss="mse",
    )
    trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=2,
        validation_split=0.2,
        verbose=0,
        validation_freq=2,
        callbacks=[jaxfit.callbacks.CSVLogger(path)],
    )
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["epoch", "loss", "learning_rate", "val_loss"]


@pytest.mark.parametrize("yield_every", ["batch", "auto"])
def test_terminate_on_nan_stops_where_seen_and_can_restore_finite_weights(yield_every):
    def apply(params, x, *, state):
        out = linear_apply(params, x) * jnp.where(state >= 3, jnp.nan, 1.0)
        return out, state + 1

    trainer = jaxfit.Trainer(
        apply,
        linear_params(),
        optimizer=optax.sgd(0.01),
        loss="mse",
        state=jnp.zeros((), jnp.int32),
    )
    stop = jaxfit.callbacks.TerminateOnNaN(restore_last_finite=True)
    seen = []
    history = trainer.fit(
        X,
        Y,
        batch_size=2,
        epochs=3,
        yield_every=yield_every,
        verbose=0,
        callbacks=[stop, {"on_batch_end": lambda b, logs: seen.append(b)}],
    )
    assert stop.stopped_batch == (0, 3)
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    assert np.isfinite(np.asarray(trainer.params["w"])).all()
    if yield_every == "batch":
        assert seen == [0, 1, 2, 3] and int(trainer.state.step) == 3
