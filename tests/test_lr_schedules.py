"""Learning-rate control by its effect on params, for a constant, a scheduled and a
non-injected rate; the LR sequences of Keras 3's callbacks side by side."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import import_keras, linear_apply, linear_params, regression_data
from runner_helpers import run_cli, write_config

import jaxfit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

X, Y = regression_data(n=16)
STEPS = 4  # per epoch: 16 samples, batch 4
SCHEDULE = optax.exponential_decay(0.05, transition_steps=4, decay_rate=0.5)


def _rate(kind):
    return {"constant": 0.05, "scheduled": SCHEDULE}[kind]


def _optimizer(kind):
    if kind == "plain":
        return optax.adam(SCHEDULE)
    return optax.inject_hyperparams(optax.adam)(learning_rate=_rate(kind))


def _fit(optimizer, callbacks=(), epochs=3, before=None):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optimizer, loss="mse"
    )
    if before is not None:
        before(trainer)
    history = trainer.fit(
        X, Y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    return trainer, history.history


def _close(a, b, rtol=1e-6):
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-7)


def _differ(a, b):
    assert not all(
        np.allclose(u, v, rtol=1e-4)
        for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))
    )


def _reduce_once():
    """Reduces by 0.5 at the end of epoch 1 (nothing counts as an improvement
    after epoch 0), once (the cooldown outlasts the fit)."""
    return jaxfit.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=1, min_delta=1e9, cooldown=10
    )


def _times(kind, factor):
    """The rate of ``kind`` times ``factor(epoch)``, as one injected schedule."""
    base = _rate(kind)
    rate = base if callable(base) else (lambda c: base)
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=lambda c: rate(c) * factor(c // STEPS)
    )


@pytest.mark.parametrize("kind", ["constant", "scheduled"])
def test_reduce_lr_on_plateau_scales_the_rate_from_the_epoch_it_acts(kind):
    reduced, logs = _fit(_optimizer(kind), [_reduce_once()])
    half = lambda epoch: jnp.where(epoch >= 2, 0.5, 1.0)  # noqa: E731
    reference, _ = _fit(_times(kind, half))
    _close(reduced, reference)
    _differ(reduced, _fit(_optimizer(kind))[0])
    rate = _rate(kind)
    applied = [
        (rate(STEPS * e + STEPS - 1) if callable(rate) else rate) * float(half(e))
        for e in range(3)
    ]  # the rate of each epoch's last step, as applied
    np.testing.assert_allclose(logs["learning_rate"], applied, rtol=1e-6)


@pytest.mark.parametrize("kind", ["constant", "scheduled"])
def test_learning_rate_scheduler_takes_over(kind):
    schedule = lambda epoch: 0.03 / (epoch + 1)  # noqa: E731
    taken, logs = _fit(
        _optimizer(kind), [jaxfit.callbacks.LearningRateScheduler(schedule)]
    )
    reference, _ = _fit(_times("constant", lambda e: schedule(e) / 0.05))
    _close(taken, reference)
    _differ(taken, _fit(_optimizer(kind))[0])
    np.testing.assert_allclose(logs["learning_rate"], [0.03, 0.015, 0.01], rtol=1e-6)


@pytest.mark.parametrize("kind", ["constant", "scheduled"])
def test_setting_the_rate_takes_over(kind):
    def before(trainer):
        trainer.learning_rate = 0.02

    taken, logs = _fit(_optimizer(kind), before=before)
    constant, _ = _fit(optax.inject_hyperparams(optax.adam)(learning_rate=0.02))
    _close(taken, constant)
    _differ(taken, _fit(_optimizer(kind))[0])
    np.testing.assert_allclose(logs["learning_rate"], [0.02] * 3, rtol=1e-6)
    assert taken.learning_rate == pytest.approx(0.02)


@pytest.mark.parametrize("kind", ["constant", "scheduled", "plain"])
def test_without_control_the_optimizer_runs_as_given(kind):
    trainer, logs = _fit(_optimizer(kind))
    plain = optax.adam(SCHEDULE if kind != "constant" else 0.05)
    _close(trainer, _fit(plain)[0], rtol=1e-5)  # a traced rate rounds apart
    if kind == "plain":
        assert "learning_rate" not in logs and trainer.learning_rate is None
    else:
        rate = _rate(kind)
        expected = [rate(STEPS * e + 3) if callable(rate) else rate for e in range(3)]
        np.testing.assert_allclose(logs["learning_rate"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "callback",
    [
        lambda: jaxfit.callbacks.LearningRateScheduler(lambda epoch, lr: lr),
        _reduce_once,
    ],
)
def test_a_plain_scheduled_optimizer_is_refused_at_fit_start(callback, compiles):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=_optimizer("plain"), loss="mse"
    )
    compiled = compiles.count  # building the trainer may compile its eager ops
    with pytest.raises(ValueError) as info:
        trainer.fit(X, Y, verbose=0, callbacks=[callback()])
    message = str(info.value)
    assert "\n" not in message and "inject_hyperparams" in message
    assert message.startswith(type(callback()).__name__ + ":")
    assert int(trainer.state.step) == 0 and compiles.count == compiled
    with pytest.raises(ValueError, match="learning_rate: expected an optimizer"):
        trainer.learning_rate = 0.1


def test_the_scale_is_saved_and_restored(tmp_path):
    reduced, _ = _fit(_optimizer("scheduled"), [_reduce_once()])
    reduced.save(tmp_path / "ckpt")
    restored = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=_optimizer("scheduled"), loss="mse"
    )
    restored.restore(tmp_path / "ckpt")
    assert restored.learning_rate == pytest.approx(reduced.learning_rate)
    for trainer in (reduced, restored):
        trainer.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    _close(restored, reduced, rtol=0)
    assert restored.learning_rate == pytest.approx(0.5 * float(SCHEDULE(15)))


def test_no_recompile_when_the_scale_or_rate_changes(compiles):
    counts = []
    _fit(
        _optimizer("scheduled"),
        [
            jaxfit.callbacks.ReduceLROnPlateau(
                monitor="loss", factor=0.5, patience=0, min_delta=1e9
            ),
            {"on_epoch_end": lambda e, logs: counts.append(compiles.count)},
        ],
        epochs=4,
    )
    assert counts[1:] == [counts[0]] * 3


# -- Keras 3's sequences on the same monitored values --------------------------------

LOSSES = [1.0, 0.9, 0.9, 0.895, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]


def _keras_rates(callback, values, begin):
    keras = import_keras()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        if begin:
            callback.on_epoch_begin(epoch)
        else:
            callback.on_epoch_end(epoch, {"loss": value})
        rates.append(float(model.optimizer.learning_rate))
    return rates


def _jaxfit_rates(optimizer, callback, values, begin):
    """Drives jaxfit's callback as ``_keras_rates`` drives Keras' (no steps run
    between epochs, so the scheduled rate is the flat schedule's)."""
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optimizer, loss="mse"
    )
    callback.set_trainer(trainer)
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        if begin:
            callback.on_epoch_begin(epoch)
        else:
            callback.on_epoch_end(epoch, {"loss": value})
        rates.append(trainer.learning_rate)
    return rates


FLAT = optax.constant_schedule(0.1)  # a schedule, so the scaled path runs


@pytest.mark.parametrize("rate", [0.1, FLAT], ids=["constant", "scheduled"])
@pytest.mark.parametrize(
    "args",
    [
        dict(factor=0.5, patience=2, cooldown=1, min_lr=0.02, min_delta=0.01),
        dict(factor=0.3, patience=1, cooldown=0, min_lr=0.0, min_delta=1e-4),
        dict(factor=0.5, patience=1, cooldown=2, min_lr=0.01, mode="max"),
    ],
)
def test_reduce_lr_on_plateau_sequence_equals_keras(rate, args):
    keras = import_keras()
    expected = _keras_rates(
        keras.callbacks.ReduceLROnPlateau(monitor="loss", **args), LOSSES, False
    )
    got = _jaxfit_rates(
        optax.inject_hyperparams(optax.sgd)(learning_rate=rate),
        jaxfit.callbacks.ReduceLROnPlateau(monitor="loss", **args),
        LOSSES,
        False,
    )
    assert len(set(expected)) > 1  # the sequence does change
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, FLAT], ids=["constant", "scheduled"])
def test_learning_rate_scheduler_sequence_equals_keras(rate):
    keras = import_keras()
    schedule = lambda epoch, lr: lr * 0.5 if epoch % 2 else lr + 0.01  # noqa: E731
    expected = _keras_rates(
        keras.callbacks.LearningRateScheduler(schedule), LOSSES[:6], True
    )
    got = _jaxfit_rates(
        optax.inject_hyperparams(optax.sgd)(learning_rate=rate),
        jaxfit.callbacks.LearningRateScheduler(schedule),
        LOSSES[:6],
        True,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# -- the YAML runner ------------------------------------------------------------------

RUN = """\
name: tiny
model: {name: runner_helpers:linear_model}
data: {name: runner_helpers:tiny_data}
optimizer:
  name: OPTIMIZER
  learning_rate:
    schedule: warmup_cosine
    args: {init_value: 0.0, peak_value: 0.01, warmup_steps: 2, decay_steps: 40}
fit: {batch_size: 16, epochs: 4, verbose: 0}
backup: false
"""
REDUCE = """\
callbacks:
  - name: ReduceLROnPlateau
    args: {monitor: loss, factor: 0.5, patience: 1, min_delta: 1.0e+9, cooldown: 9}
"""


def test_reduce_lr_on_plateau_acts_on_a_runner_schedule(tmp_path):
    def rates(name, text):
        path = write_config(tmp_path, text.replace("OPTIMIZER", "adamw"), name)
        return jaxfit.run(path, str(tmp_path / name[:-5])).history.history

    plain, reduced = rates("a.yaml", RUN), rates("b.yaml", RUN + REDUCE)
    factor = [1.0, 1.0, 0.5, 0.5]  # reduced at the end of epoch 1
    np.testing.assert_allclose(
        reduced["learning_rate"],
        np.multiply(plain["learning_rate"], factor),
        rtol=1e-6,
    )
    assert reduced["loss"][:2] == plain["loss"][:2]
    assert reduced["loss"][3] != plain["loss"][3]


def test_validate_refuses_a_schedule_it_cannot_scale(tmp_path, capsys):
    path = write_config(tmp_path, RUN.replace("OPTIMIZER", "fromage") + REDUCE)
    code, _, err = run_cli(capsys, "validate", path)
    assert code != 0
    assert (
        "callbacks[0].name: ReduceLROnPlateau cannot act on optimizer optax.fromage"
        in err
    )
    valid = write_config(tmp_path, RUN.replace("OPTIMIZER", "fromage"), "ok.yaml")
    assert run_cli(capsys, "validate", valid)[0] == 0  # without the callback


def test_reduce_on_plateau_on_a_val_monitor_without_validation_is_refused():
    # as EarlyStopping: a monitor the fit can never log is refused before a step
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=_optimizer("constant"),
        loss="mse",
    )
    before = jax.tree.map(np.asarray, trainer.params)
    reduce = jaxfit.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1)
    with pytest.raises(ValueError, match="val_loss"):
        trainer.fit(X, Y, batch_size=4, epochs=2, verbose=0, callbacks=[reduce])
    assert int(trainer.state.step) == 0
    for u, v in zip(jax.tree.leaves(before), jax.tree.leaves(trainer.params)):
        np.testing.assert_array_equal(u, v)
