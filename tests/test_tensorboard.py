"""TensorBoard event files, read back with a minimal TFRecord reader."""

import pathlib
import struct

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

event_pb2 = pytest.importorskip(
    "tensorboardX.proto.event_pb2",
    reason="TensorBoard is the optional tensorboard extra",
)

X, Y = regression_data(n=16)


def read_events(directory: pathlib.Path) -> list:
    """Every Event in the event files of ``directory`` (TFRecord framing)."""
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            events.append(event_pb2.Event.FromString(payload))
            offset += 12 + length + 4
    return events


def scalars(directory: pathlib.Path) -> dict:
    out: dict = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_epoch_and_batch_scalars_learning_rate_and_histograms(tmp_path):
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.05),
        loss="mse",
        metrics=["mae"],
    )
    tb = jaxfit.callbacks.TensorBoard(tmp_path, histogram_freq=1, update_freq="batch")
    history = trainer.fit(
        X, Y, batch_size=4, epochs=2, validation_split=0.25, callbacks=[tb], verbose=0
    )
    train, validation = scalars(tmp_path / "train"), scalars(tmp_path / "validation")
    for key in ("loss", "mae", "learning_rate"):
        steps, values = zip(*train[f"epoch_{key}"])
        assert steps == (0, 1)
        np.testing.assert_allclose(values, history.history[key], rtol=1e-6)
    np.testing.assert_allclose(
        [v for _, v in validation["epoch_loss"]], history.history["val_loss"], rtol=1e-6
    )
    assert [step for step, _ in train["batch_loss"]] == list(range(1, 7))  # 3 x 2
    histograms = {
        v.tag
        for e in read_events(tmp_path / "train")
        for v in e.summary.value
        if v.HasField("histo")
    }
    assert histograms == {"w", "b"}


def test_update_freq_every_n_batches(tmp_path):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.05), loss="mse"
    )
    trainer.fit(
        X,
        Y,
        batch_size=2,
        epochs=1,
        verbose=0,
        callbacks=[jaxfit.callbacks.TensorBoard(tmp_path, update_freq=3)],
    )
    assert [s for s, _ in scalars(tmp_path / "train")["batch_loss"]] == [3, 6]


def test_bad_update_freq():
    with pytest.raises(ValueError, match="update_freq"):
        jaxfit.callbacks.TensorBoard(update_freq="sometimes")
