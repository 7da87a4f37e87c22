"""The callback mechanism, LambdaCallback, dict hooks, History and EarlyStopping."""

import types

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=10)


def _trainer(lr=0.0):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(lr),
        loss="mse",
        metrics=["mae"],
    )


class Recorder(jaxfit.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *args: calls.append((name, *args[:-1]))
        return object.__getattribute__(self, name)


def test_hook_sequence_of_fit_with_validation():
    recorder = Recorder()
    _trainer().fit(
        X,
        Y,
        batch_size=4,
        epochs=1,
        validation_split=0.2,
        validation_batch_size=1,
        yield_every="epoch",
        callbacks=[recorder],
        verbose=0,
    )
    names = [c[0] for c in recorder.calls]
    assert names == (
        ["on_train_begin", "on_epoch_begin"]
        + ["on_train_batch_begin", "on_train_batch_end"] * 2
        + ["on_yield", "on_test_begin"]
        + ["on_test_batch_begin", "on_test_batch_end"] * 2
        + ["on_test_end", "on_epoch_end", "on_train_end"]
    )


def test_callbacks_see_the_trainer_and_run_params():
    seen = {}

    class Probe(jaxfit.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["trainer"] = self.trainer
            seen["params"] = dict(self.params)

    trainer = _trainer()
    trainer.fit(X, Y, batch_size=4, epochs=2, callbacks=[Probe()], verbose=0)
    assert seen["trainer"] is trainer
    assert seen["params"] == {
        "verbose": 0,
        "epochs": 2,
        "steps": 3,
        "batch_size": 4,
        "do_validation": False,
    }


def test_dict_hooks_and_lambda_callback_and_batch_aliases():
    events = []
    lam = jaxfit.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: events.append(("lambda", e, sorted(logs))),
        on_yield=lambda e, b, logs: events.append(("yield", e, b)),
    )
    hooks = {"on_batch_end": lambda b, logs: events.append(("batch", b))}
    _trainer().fit(
        X,
        Y,
        batch_size=5,
        epochs=1,
        callbacks=[lam, hooks],
        yield_every="epoch",
        verbose=0,
    )
    assert events == [
        ("batch", 0),
        ("batch", 1),
        ("yield", 0, 1),
        ("lambda", 0, ["loss", "mae"]),
    ]


def test_each_callback_gets_its_own_copy_of_the_logs():
    def vandal(epoch, logs):
        logs["loss"] = -1.0

    seen = []
    history = _trainer().fit(
        X,
        Y,
        callbacks=[
            {"on_epoch_end": vandal},
            {"on_epoch_end": lambda e, logs: seen.append(logs["loss"])},
        ],
        verbose=0,
    )
    assert seen[0] > 0 and history.history["loss"][0] > 0


def test_evaluate_and_predict_hooks():
    recorder = Recorder()
    trainer = _trainer()
    trainer.evaluate(X, Y, batch_size=4, callbacks=[recorder])
    trainer.predict(X, callbacks=[recorder])
    assert [c[0] for c in recorder.calls] == (
        ["on_test_begin"]
        + ["on_test_batch_begin", "on_test_batch_end"] * 3
        + ["on_test_end", "on_predict_begin"]
        + ["on_predict_batch_begin", "on_predict_batch_end"]  # one batch of 10
        + ["on_predict_end"]
    )


# EarlyStopping, driven with scripted monitor values (Keras' own test style).
EARLY_STOPPING_CASES = [
    # (kwargs, monitored values per epoch, epochs run, stopped_epoch, best_epoch)
    (dict(patience=0), [3, 2, 2.5, 1], 3, 2, 1),
    (dict(patience=2), [3, 2, 2.5, 2.2, 1], 4, 3, 1),
    (dict(patience=1, min_delta=0.6), [3, 2.5, 2.0, 1.0], 2, 1, 0),
    (
        dict(patience=1, mode="max", monitor="val_accuracy"),
        [0.5, 0.6, 0.55, 0.5],
        3,
        2,
        1,
    ),
    (dict(patience=1, monitor="val_accuracy"), [0.5, 0.6, 0.55, 0.5], 3, 2, 1),
    # an improvement never counts towards patience, even short of the baseline
    (dict(patience=2, baseline=1.0), [3, 2, 1.5, 0.5], 4, 0, 3),
    (dict(patience=2, baseline=1.0), [3, 3.5, 4], 2, 1, 0),
    (dict(patience=0, start_from_epoch=2), [3, 4, 5, 6, 7], 4, 3, 2),
]


class _FakeTrainer:
    def __init__(self):
        self.stop_training = False
        self.params = {"w": np.zeros(1)}


@pytest.mark.parametrize("kwargs,values,ran,stopped,best", EARLY_STOPPING_CASES)
def test_early_stopping_follows_keras(kwargs, values, ran, stopped, best):
    kwargs = dict(kwargs)
    monitor = kwargs.setdefault("monitor", "val_loss")
    callback = jaxfit.callbacks.EarlyStopping(**kwargs)
    trainer = _FakeTrainer()
    callback.set_trainer(trainer)
    callback.on_train_begin({})
    epochs_run = 0
    for epoch, value in enumerate(values):
        epochs_run += 1
        callback.on_epoch_end(epoch, {monitor: value})
        if trainer.stop_training:
            break
    assert (epochs_run, callback.stopped_epoch, callback.best_epoch) == (
        ran,
        stopped,
        best,
    )


def test_early_stopping_in_fit_restores_best_weights():
    x, y = regression_data(n=16)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.05), loss="mse"
    )
    snapshots = []
    # a scripted monitor that gets worse after epoch 1
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0, 5.0])

    class Score(jaxfit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(np.asarray(self.trainer.params["w"]).copy())

    class Inject(jaxfit.callbacks.Callback):
        pass

    stop = jaxfit.callbacks.EarlyStopping(
        monitor="score", mode="min", patience=2, restore_best_weights=True
    )
    original = stop.on_epoch_end
    stop.on_epoch_end = types.MethodType(
        lambda self, epoch, logs: original(epoch, {**logs, "score": next(scores)}), stop
    )
    history = trainer.fit(
        x, y, batch_size=4, epochs=10, callbacks=[Score(), stop], verbose=0
    )
    assert history.epoch == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.asarray(trainer.params["w"]), snapshots[1])


def test_early_stopping_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        jaxfit.callbacks.EarlyStopping(mode="upward")
