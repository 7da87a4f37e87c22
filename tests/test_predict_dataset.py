"""predict_dataset / predict on a stream: the same outputs as predict on the
arrays, any batch form, ragged batches without recompiling, the predict batch
hooks in Keras' order."""

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=11)


def make():
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )


def batches(form):
    parts = [slice(0, 4), slice(4, 8), slice(8, 11)]  # a ragged last batch
    wrap = {
        "x": lambda s: X[s],
        "tuple1": lambda s: (X[s],),
        "pair": lambda s: (X[s], Y[s]),
        "dict": lambda s: {"xs": X[s], "ys": Y[s]},
    }[form]
    return [wrap(s) for s in parts]


@pytest.mark.parametrize("form", ["x", "tuple1", "pair", "dict"])
def test_stream_outputs_equal_predict(form):
    trainer = make()
    expected = trainer.predict(X, batch_size=4)
    np.testing.assert_allclose(
        trainer.predict_dataset(batches(form)), expected, rtol=1e-6
    )


def test_predict_takes_generators_and_limits():
    trainer = make()
    expected = trainer.predict(X)

    def gen():
        yield from batches("x")

    np.testing.assert_allclose(trainer.predict(gen), expected, rtol=1e-6)
    np.testing.assert_allclose(trainer.predict(gen()), expected, rtol=1e-6)
    limited = trainer.predict_dataset(gen, batches=2)
    np.testing.assert_allclose(limited, expected[:8], rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.predict(gen, batch_size=4)


def test_dict_inputs_and_outputs():
    def apply(params, x):
        return {"out": x["a"] @ params["w"], "twice": 2 * x["a"] @ params["w"]}

    trainer = jaxfit.Trainer(apply, {"w": np.ones((3, 1), np.float32)})
    stream = [{"a": X[:4]}, {"a": X[4:]}]
    out = trainer.predict_dataset(stream)
    np.testing.assert_allclose(out["out"], X @ np.ones((3, 1)), rtol=1e-6)
    np.testing.assert_allclose(out["twice"], 2 * out["out"], rtol=1e-6)


def test_ragged_batches_compile_once_per_bucket(compiles):
    trainer = make()
    trainer.predict_dataset(batches("x"))
    compiles.reset()
    trainer.predict_dataset(batches("x") + [X[:2], X[:1]])
    assert compiles.count == 0


def test_empty_and_bad_streams_are_refused():
    trainer = make()
    with pytest.raises(ValueError, match="dataset"):
        trainer.predict_dataset([])
    with pytest.raises(ValueError, match="dataset batch 0"):
        trainer.predict_dataset([np.ones((4, 7), np.float32)])
    with pytest.raises(ValueError, match="batches"):
        trainer.predict_dataset(batches("x"), batches=0)
    with pytest.raises(ValueError, match="dataset batch 0"):
        trainer.predict_dataset([(X, Y, Y, Y)])


class Recorder(jaxfit.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_predict_begin(self, logs=None):
        self.calls.append(("begin",))

    def on_predict_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_predict_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["outputs"].shape))

    def on_predict_end(self, logs=None):
        self.calls.append(("end",))


@pytest.mark.parametrize("stream", [False, True])
def test_predict_batch_hooks_in_keras_order(stream):
    recorder = Recorder()
    trainer = make()
    if stream:
        out = trainer.predict_dataset(batches("x"), callbacks=[recorder])
    else:
        out = trainer.predict(X, batch_size=4, callbacks=[recorder])
    assert recorder.calls == [
        ("begin",),
        ("batch_begin", 0),
        ("batch_end", 0, (4, 1)),
        ("batch_begin", 1),
        ("batch_end", 1, (4, 1)),
        ("batch_begin", 2),
        ("batch_end", 2, (3, 1)),
        ("end",),
    ]
    np.testing.assert_allclose(out, trainer.predict(X), rtol=1e-6)


def test_hook_outputs_are_the_batch_rows():
    seen = []
    trainer = make()
    trainer.predict(
        X,
        batch_size=4,
        callbacks=[{"on_predict_batch_end": lambda b, logs: seen.append(logs)}],
    )
    np.testing.assert_allclose(
        np.concatenate([logs["outputs"] for logs in seen]), trainer.predict(X)
    )
