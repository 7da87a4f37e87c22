"""Traceback filtering: a user's error leaves a public call without jaxfit's frames.

As Keras' ``filter_traceback`` and JAX's ``api_boundary``: the frames inside the
jaxfit package are removed, the user's own frames (their callback, apply function,
data generator) are kept, and ``JAXFIT_TRACEBACK_FILTERING=off`` shows everything.
"""

import asyncio
import pathlib
import traceback

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

PACKAGE = pathlib.Path(jaxfit.__file__).resolve().parent
X, Y = regression_data(n=8)


class UserError(Exception):
    pass


def _trainer(apply=linear_apply, **kwargs):
    kwargs = {"optimizer": optax.sgd(0.1), "loss": "mse", **kwargs}
    return jaxfit.Trainer(apply, linear_params(), **kwargs)


def _files(info: pytest.ExceptionInfo) -> list[str]:
    return [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]


def _inside(files: list[str], folder: pathlib.Path = PACKAGE) -> list[str]:
    return [f for f in files if pathlib.Path(f).resolve().is_relative_to(folder)]


@pytest.fixture
def filtering_on(monkeypatch):
    monkeypatch.delenv("JAXFIT_TRACEBACK_FILTERING", raising=False)


def test_a_bad_argument_from_fit_has_no_jaxfit_frame(filtering_on):
    trainer = _trainer()
    with pytest.raises(
        ValueError, match="batch_size: expected a positive integer"
    ) as info:
        trainer.fit(X, Y, batch_size=0, verbose=0)
    files = _files(info)
    assert not _inside(files), files
    assert files == [__file__]  # the call in this test, and nothing below it


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false"])
def test_the_environment_variable_shows_every_frame(monkeypatch, value):
    monkeypatch.setenv("JAXFIT_TRACEBACK_FILTERING", value)
    trainer = _trainer()
    with pytest.raises(ValueError, match="batch_size") as info:
        trainer.fit(X, Y, batch_size=0, verbose=0)
    assert _inside(_files(info), PACKAGE / "_src")


# each public call with a bad argument: (call, error type)
BAD_CALLS = [
    ("Trainer", lambda: _trainer(optimizer="adam"), TypeError),
    ("fit_dataset", lambda: _trainer().fit_dataset(42, verbose=0), TypeError),
    (
        "fit_dataset_async",
        lambda: asyncio.run(_trainer().fit_dataset_async(42, verbose=0)),
        TypeError,
    ),
    (
        "fit_async",
        lambda: asyncio.run(_trainer().fit_async(X, Y, epochs=-1, verbose=0)),
        ValueError,
    ),
    ("evaluate", lambda: _trainer().evaluate(X, Y, batch_size=0), ValueError),
    (
        "evaluate_dataset",
        lambda: _trainer().evaluate_dataset([], batches=0),
        ValueError,
    ),
    ("predict", lambda: _trainer().predict(X, batch_size=-1), ValueError),
    ("compile", lambda: _trainer().compile(loss="msee"), ValueError),
    ("loss setter", lambda: setattr(_trainer(), "loss", 3), TypeError),
    ("state setter", lambda: setattr(_trainer(), "state", {}), TypeError),
    (
        "learning_rate setter",
        lambda: setattr(_trainer(), "learning_rate", 0.1),
        ValueError,
    ),
    (
        "restore",
        lambda: _trainer().restore("/nonexistent/jaxfit-checkpoint"),
        FileNotFoundError,
    ),
    (
        "EarlyStopping",
        lambda: jaxfit.callbacks.EarlyStopping(mode="lowest"),
        ValueError,
    ),
    (
        "ReduceLROnPlateau",
        lambda: jaxfit.callbacks.ReduceLROnPlateau(factor=2.0),
        ValueError,
    ),
    (
        "LambdaCallback",
        lambda: jaxfit.callbacks.LambdaCallback(on_epoch_ends=print),
        ValueError,
    ),
    ("ProgressBar", lambda: jaxfit.callbacks.ProgressBar(verbose=3), ValueError),
    ("losses.get", lambda: jaxfit.losses.get("msee"), ValueError),
    (
        "metrics.resolve",
        lambda: jaxfit.metrics.resolve("acuracy", None, None),
        ValueError,
    ),
]


@pytest.mark.parametrize("name,call,error", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_every_public_call_hides_its_frames(filtering_on, name, call, error):
    with pytest.raises(error) as info:
        call()
    files = _files(info)
    assert not _inside(files), (name, files)


def test_an_error_in_a_user_callback_keeps_the_callback_frame(filtering_on):
    def on_epoch_end(epoch, logs):
        raise UserError(f"epoch {epoch}")

    trainer = _trainer()
    with pytest.raises(UserError, match="epoch 0") as info:
        trainer.fit(X, Y, verbose=0, callbacks=[{"on_epoch_end": on_epoch_end}])
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-1] == "on_epoch_end"  # the raising frame is the user's own
    assert not _inside(_files(info))


def test_an_error_in_a_callback_subclass_keeps_its_frames(filtering_on):
    class Failing(jaxfit.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.check(batch)

        def check(self, batch):
            raise UserError(f"batch {batch}")

    with pytest.raises(UserError) as info:
        _trainer().fit(
            X, Y, batch_size=4, yield_every="batch", verbose=0, callbacks=[Failing()]
        )
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-2:] == ["on_train_batch_end", "check"]
    assert not _inside(_files(info))


def test_an_error_in_the_apply_function_keeps_its_frame(filtering_on):
    def apply(params, x, *, train):
        if train:
            raise UserError("from apply")
        return linear_apply(params, x)

    with pytest.raises(UserError, match="from apply") as info:
        _trainer(apply).fit(X, Y, verbose=0)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-1] == "apply"
    assert not _inside(_files(info))


def test_an_error_in_a_data_generator_keeps_its_frame(filtering_on):
    def batches():
        yield X[:4], Y[:4]
        raise UserError("from the generator")

    with pytest.raises(UserError, match="from the generator") as info:
        _trainer().fit_dataset(batches, verbose=0)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-1] == "batches"
    assert not _inside(_files(info))


def test_a_jaxfit_bug_keeps_its_whole_traceback(filtering_on, monkeypatch):
    """An error type jaxfit never raises for the user, raised inside the package,
    is a bug: its frames are what a bug report needs."""
    from jaxfit._src.driver import plans

    namespace = {}
    source = "def fit_plan(*args, **kwargs):\n    raise AssertionError('a bug')\n"
    code = compile(source, plans.__file__, "exec")  # code "inside" jaxfit
    exec(code, namespace)
    monkeypatch.setattr(plans, "fit_plan", namespace["fit_plan"])
    with pytest.raises(AssertionError, match="a bug") as info:
        _trainer().fit(X, Y, verbose=0)
    assert _inside(_files(info), PACKAGE / "_src")


def test_filtering_keeps_the_message_notes_and_causes(filtering_on):
    def apply(params, x):
        try:
            {}["missing"]
        except KeyError as error:
            wrapped = UserError("wrapped")
            wrapped.add_note("a note of mine")
            raise wrapped from error
        return x

    with pytest.raises(UserError) as info:
        _trainer(apply).predict(X)
    assert str(info.value) == "wrapped"
    assert isinstance(info.value.__cause__, KeyError)
    assert "a note of mine" in info.value.__notes__


def test_the_trainer_works_after_a_filtered_error(filtering_on):
    trainer = _trainer()
    with pytest.raises(ValueError):
        trainer.fit(X, Y, batch_size=0, verbose=0)
    history = trainer.fit(X, Y, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert trainer.evaluate(X, Y)["loss"] >= 0
    assert jnp.asarray(trainer.predict(X)).shape == Y.shape
