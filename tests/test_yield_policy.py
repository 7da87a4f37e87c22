"""Yield points, fused blocks and per-batch logs, driven by a fake clock."""

import itertools

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

POLICIES = ["batch", "epoch", "never", "auto", 0, 50, 1e9]


class Recorder(jaxfit.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("end", batch, logs["loss"], logs["mae"]))

    def on_yield(self, epoch, batch, logs=None):
        self.events.append(("yield", epoch, batch))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch))


def _fit(yield_every, now=None, n=10, batch_size=4, epochs=2):
    x, y = regression_data(n=n)
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.0),
        loss="mse",
        metrics=["mae"],
    )
    recorder = Recorder()
    trainer.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        yield_every=yield_every,
        callbacks=[recorder],
        verbose=0,
        now=now,
    )
    r = (x @ np.asarray(trainer.params["w"]) - y)[:, 0]
    return recorder.events, r


@pytest.mark.parametrize("yield_every", POLICIES)
def test_every_batch_gets_its_own_logs_in_order(yield_every):
    events, r = _fit(yield_every)
    batch_events = [e for e in events if e[0] in ("begin", "end")]
    expected_batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert [e[:2] for e in batch_events] == [
        (kind, b) for _ in range(2) for b in range(3) for kind in ("begin", "end")
    ]
    ends = [e for e in batch_events if e[0] == "end"]
    for event, rows in zip(ends, expected_batches * 2):
        np.testing.assert_allclose(event[2], np.mean(r[rows] ** 2), rtol=1e-5)
        np.testing.assert_allclose(event[3], np.mean(np.abs(r[rows])), rtol=1e-5)


def test_batch_policy_yields_after_every_batch():
    events, _ = _fit("batch")
    yields = [e for e in events if e[0] == "yield"]
    assert yields == [("yield", e, b) for e in range(2) for b in range(3)]
    # each batch end is delivered before its yield
    assert events[:3] == [("begin", 0), events[1], ("yield", 0, 0)]


@pytest.mark.parametrize("yield_every", ["epoch", "never", 1e9])
def test_no_yields_inside_an_epoch(yield_every):
    events, _ = _fit(yield_every, n=40)
    kinds = [e[0] for e in events]
    # all batches of an epoch are delivered together at the epoch end
    first_epoch = kinds[: kinds.index("epoch_end") + 1]
    assert first_epoch == ["begin", "end"] * 10 + ["yield", "epoch_end"]


def test_time_based_policy_uses_the_injected_clock():
    ticks = itertools.count()
    # a fake clock that advances 10 ms every time it is read
    events, _ = _fit(
        25, now=lambda: next(ticks) * 0.010, n=2000, batch_size=1, epochs=1
    )
    yields = [e for e in events if e[0] == "yield"]
    ends = [e for e in events if e[0] == "end"]
    assert len(ends) == 2000
    # fused blocks of up to 256 steps (8 here); the clock says 25 ms have passed
    # every 3rd read
    assert 1 < len(yields) < 8
    # every yield reports the last batch delivered so far
    for i, event in enumerate(events):
        if event[0] == "yield":
            previous_end = [e for e in events[:i] if e[0] == "end"][-1]
            assert event[2] == previous_end[1]


def test_stop_training_ends_fit_at_the_next_yield():
    x, y = regression_data(n=40)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.01), loss="mse"
    )
    ends = []

    def on_batch_end(batch, logs):
        ends.append(batch)
        if batch == 2:
            trainer.stop_training = True

    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        yield_every="batch",
        callbacks=[{"on_batch_end": on_batch_end}],
        verbose=0,
    )
    assert ends == [0, 1, 2]
    assert history.epoch == [0]
    assert int(trainer.state.step) == 3


def test_hot_loop_makes_no_implicit_transfers():
    x, y = regression_data(n=30)
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(0.01),
        loss="mse",
        metrics=["mae"],
    )
    trainer.fit(x, y, batch_size=4, epochs=1, validation_split=0.2, verbose=0)
    with jax.transfer_guard("disallow"):
        history = trainer.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            validation_split=0.2,
            verbose=0,
            callbacks=[Recorder()],
            yield_every="batch",
        )
    assert len(history.history["val_loss"]) == 2
