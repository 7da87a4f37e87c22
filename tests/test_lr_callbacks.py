"""Learning-rate control between epochs, without recompiling."""

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=16)


def _trainer(lr=0.1, injected=True):
    optimizer = (
        optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
        if injected
        else optax.sgd(lr)
    )
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optimizer, loss="mse"
    )


def test_learning_rate_scheduler_values_are_in_the_history(compiles):
    trainer = _trainer()
    counts = []
    scheduler = jaxfit.callbacks.LearningRateScheduler(
        lambda epoch, lr: 0.1 * 0.5**epoch
    )
    history = trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=4,
        verbose=0,
        callbacks=[
            scheduler,
            {"on_epoch_end": lambda e, logs: counts.append(compiles.count)},
        ],
    )
    np.testing.assert_allclose(
        history.history["learning_rate"], [0.1, 0.05, 0.025, 0.0125], rtol=1e-6
    )
    assert counts[1:] == [counts[0]] * 3  # no recompilation when the rate changes
    assert trainer.learning_rate == pytest.approx(0.0125)


def test_scheduler_with_one_argument_and_a_manual_set():
    trainer = _trainer()
    trainer.learning_rate = 0.2
    history = trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[
            jaxfit.callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
        ],
    )
    np.testing.assert_allclose(
        history.history["learning_rate"], [0.01, 0.02], rtol=1e-6
    )


def test_reduce_lr_on_plateau_lowers_the_rate_on_a_flat_loss(compiles):
    trainer = _trainer(lr=1e-7)  # the loss barely moves: a plateau
    counts = []
    reduce = jaxfit.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=1, cooldown=1, min_lr=2e-8
    )
    history = trainer.fit(
        X,
        Y,
        batch_size=4,
        epochs=6,
        verbose=0,
        callbacks=[
            reduce,
            {"on_epoch_end": lambda e, logs: counts.append(compiles.count)},
        ],
    )
    # The logged rate is the one the epoch ran with (as Keras). Epoch 0 sets the
    # best; 1 reduces; Keras re-reads the cooldown after decrementing it, so with
    # cooldown=1 epochs 2 and 3 reduce again; then the min_lr floor holds.
    np.testing.assert_allclose(
        history.history["learning_rate"],
        [1e-7, 1e-7, 5e-8, 2.5e-8, 2e-8, 2e-8],
        rtol=1e-5,
    )
    assert counts[1:] == [counts[0]] * 5


def test_learning_rate_is_part_of_the_state():
    trainer = _trainer()
    saved = trainer.state
    trainer.learning_rate = 0.5
    assert trainer.learning_rate == pytest.approx(0.5)
    trainer.state = saved
    assert trainer.learning_rate == pytest.approx(0.1)


@pytest.mark.parametrize(
    "callback",
    [
        jaxfit.callbacks.LearningRateScheduler(lambda epoch, lr: lr),
        jaxfit.callbacks.ReduceLROnPlateau(),
    ],
)
def test_an_optimizer_without_an_injected_rate_gets_a_clear_error(callback, compiles):
    trainer = _trainer(injected=False)
    with pytest.raises(ValueError) as info:
        trainer.fit(X, Y, verbose=0, callbacks=[callback])
    message = str(info.value)
    assert type(callback).__name__ in message and "inject_hyperparams" in message
    assert int(trainer.state.step) == 0 and compiles.count == 0
    assert trainer.learning_rate is None


def test_reduce_lr_on_plateau_rejects_a_factor_of_one():
    with pytest.raises(ValueError, match="factor"):
        jaxfit.callbacks.ReduceLROnPlateau(factor=1.0)
