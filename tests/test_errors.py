"""Bad input: clear errors before any step runs; failures leave a usable state."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=10)

FIT_CASES = [
    # (kwargs, error type, substrings in the message)
    (dict(batch_size=0), ValueError, ["batch_size", "positive integer", "0"]),
    (dict(batch_size=2.5), ValueError, ["batch_size", "2.5", "float"]),
    (dict(validation_split=1.0), ValueError, ["validation_split", "[0, 1)", "1.0"]),
    (dict(validation_split=-0.1), ValueError, ["validation_split", "-0.1"]),
    (dict(yield_every="sometimes"), ValueError, ["yield_every", "'sometimes'", "str"]),
    (dict(yield_every=-5), ValueError, ["yield_every", "-5"]),
    (dict(epochs=-1), ValueError, ["epochs", "-1"]),
    (dict(verbose=3), ValueError, ["verbose", "3"]),
    (dict(validation_data=(X,)), ValueError, ["validation_data", "(x, y)"]),
    (dict(validation_freq=0), ValueError, ["validation_freq", "0"]),
    (dict(class_weight=[1, 2]), ValueError, ["class_weight", "dict"]),
    (dict(callbacks="nope"), TypeError, ["callbacks", "'nope'"]),
    (dict(callbacks=[{"on_epoch_ends": print}]), ValueError, ["on_epoch_ends"]),
    (
        dict(sample_weight=np.ones(9, np.float32)),
        ValueError,
        ["sample_weight", "9", "10", "same number of samples"],
    ),
    (dict(y=Y[:7]), ValueError, ["y", "7", "10", "same number of samples"]),
    (dict(validation_data=(X, Y[:3])), ValueError, ["validation_data.y", "3"]),
]


def _trainer(**kwargs):
    defaults = dict(optimizer=optax.sgd(0.1), loss="mse", metrics=["mae"])
    defaults.update(kwargs)
    return jaxfit.Trainer(linear_apply, linear_params(), **defaults)


@pytest.mark.parametrize("kwargs,error,parts", FIT_CASES)
def test_bad_fit_arguments_raise_before_any_step(kwargs, error, parts, compiles):
    trainer = _trainer()
    before = trainer.state
    kwargs = dict(kwargs)
    y = kwargs.pop("y", Y)
    kwargs.setdefault("verbose", 0)
    with pytest.raises(error) as info:
        trainer.fit(X, y, **kwargs)
    for part in parts:
        assert part in str(info.value), (part, str(info.value))
    assert trainer.state is before
    assert int(trainer.state.step) == 0
    np.testing.assert_array_equal(
        np.asarray(trainer.params["w"]), np.asarray(linear_params()["w"])
    )
    trainer.fit(X, Y, verbose=0)  # still usable
    assert int(trainer.state.step) == 1


@pytest.mark.parametrize(
    "kwargs,error,parts",
    [
        (dict(loss="msee"), ValueError, ["loss", "'msee'", "mean_squared_error"]),
        (dict(loss=3), TypeError, ["loss", "3", "int"]),
        (dict(metrics=["acuracy"]), ValueError, ["metrics", "'acuracy'"]),
        (dict(optimizer="adam"), TypeError, ["optimizer", "optax", "'adam'"]),
    ],
)
def test_bad_trainer_arguments(kwargs, error, parts):
    with pytest.raises(error) as info:
        _trainer(**kwargs)
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_a_loss_that_reduces_the_batch_is_rejected_before_compiling(compiles):
    trainer = _trainer(loss=lambda y_true, y_pred: jnp.mean((y_true - y_pred) ** 2))
    with pytest.raises(ValueError) as info:
        trainer.fit(X, Y, batch_size=4, verbose=0)
    message = str(info.value)
    assert "loss" in message and "(4,)" in message and "shape ()" in message
    assert compiles.count == 0
    assert int(trainer.state.step) == 0


def test_outputs_not_structured_like_y_are_rejected():
    trainer = _trainer()
    with pytest.raises(ValueError, match="apply_fn"):
        trainer.fit(X, {"a": Y, "b": Y}, verbose=0)


class Boom(Exception):
    pass


@pytest.mark.parametrize("exception", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("yield_every", ["batch", "epoch"])
def test_exception_in_a_callback_leaves_a_consistent_usable_state(
    exception, yield_every
):
    trainer = _trainer(optimizer=optax.adam(0.01))
    calls = []

    def on_batch_end(batch, logs):
        calls.append(batch)
        if len(calls) == 4:
            raise exception()

    ended = []
    with pytest.raises(exception):
        trainer.fit(
            X,
            Y,
            batch_size=2,
            epochs=3,
            yield_every=yield_every,
            verbose=0,
            callbacks=[
                {
                    "on_train_batch_end": on_batch_end,
                    "on_train_end": lambda logs: ended.append(True),
                }
            ],
        )
    assert ended == [True]
    step = int(trainer.state.step)
    assert step == (4 if yield_every == "batch" else 5)
    params = np.asarray(trainer.params["w"])  # not a donated, deleted buffer
    assert np.all(np.isfinite(params))
    history = trainer.fit(X, Y, batch_size=2, epochs=1, verbose=0)
    assert int(trainer.state.step) == step + 5
    assert np.isfinite(history.history["loss"][0])


def test_fit_is_not_reentrant():
    trainer = _trainer()
    errors = []

    def on_epoch_end(epoch, logs):
        try:
            trainer.fit(X, Y, verbose=0)
        except RuntimeError as e:
            errors.append(str(e))

    trainer.fit(X, Y, verbose=0, callbacks=[{"on_epoch_end": on_epoch_end}])
    assert errors and "re-entrant" in errors[0]


def test_a_real_ctrl_c_during_fit_leaves_a_usable_state_and_restores_the_handler():
    import _thread
    import signal

    # Python's own Ctrl-C handler, whatever a library imported earlier left there
    signal.signal(signal.SIGINT, signal.default_int_handler)
    trainer = _trainer(optimizer=optax.adam(0.01))
    count = []

    def on_batch_end(batch, logs):
        count.append(batch)
        if len(count) == 3:
            # SIGINT as the interpreter sees it (through Python's handler), also
            # where a native library installed its own C-level handler
            _thread.interrupt_main(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(
            X,
            Y,
            batch_size=2,
            epochs=2,
            yield_every="batch",
            verbose=0,
            callbacks=[{"on_train_batch_end": on_batch_end}],
        )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert int(trainer.state.step) == 3
    assert np.all(np.isfinite(np.asarray(trainer.params["w"])))
    trainer.fit(X, Y, batch_size=2, epochs=1, verbose=0)
    assert int(trainer.state.step) == 8


def test_a_ctrl_c_that_something_swallowed_still_ends_the_fit():
    import signal

    # Python drops an exception raised inside a garbage-collection callback (jaxlib
    # runs one): a KeyboardInterrupt raised there never reaches the loop. Here a
    # callback swallows it the same way; the fit must still end at the next step.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    trainer = _trainer(optimizer=optax.adam(0.01))
    count = []

    def on_batch_end(batch, logs):
        count.append(batch)
        if len(count) == 3:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # lost, as in a gc callback

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(
            X,
            Y,
            batch_size=2,
            epochs=2,
            yield_every="batch",
            verbose=0,
            callbacks=[{"on_train_batch_end": on_batch_end}],
        )
    assert int(trainer.state.step) == 4  # the step dispatched after it, no more
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
