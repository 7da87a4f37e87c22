"""ProgressBar in a population fit: each value shows the best member and the spread."""

import io
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit

RATES = [0.0, 0.05, 0.2, 0.5]
# "<key>: <best> (best #<member>) <mean>±<std>" in the verbose=2 lines
LINE_VALUE = r"{key}: (\S+) \(best #(\d+)\) (\S+)±(\S+)"


def _data(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)


def init(key):
    return {"w": jax.random.normal(key, (3, 2)) * 0.1, "b": jnp.zeros(2)}


def apply(params, x):
    return x @ params["w"] + params["b"]


def _population():
    return jaxfit.Trainer(
        apply,
        init,
        optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
        loss="sparse_categorical_crossentropy_from_logits",
        metrics=["accuracy"],
        seed=1,
        population=len(RATES),
        hyperparams={"learning_rate": RATES},
    )


def _fit(bar, epochs=3, callbacks=(), **kwargs):
    x, y = _data()
    return _population().fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        validation_split=0.25,
        verbose=0,
        callbacks=[*callbacks, bar],
        **kwargs,
    )


def _expected(key, values, spec=".4f"):
    """The best (max for accuracy, else min), its member, mean and std of the
    members still training (not NaN), formatted as the bar does."""
    kept = np.flatnonzero(~np.isnan(values))
    pick = np.argmax if key.removeprefix("val_").endswith("accuracy") else np.argmin
    best = int(kept[pick(values[kept])])
    return (
        f"{values[best]:{spec}}",
        str(best),
        f"{np.mean(values[kept]):{spec}}",
        f"{np.std(values[kept]):{spec}}",
    )


def _check_lines(text, history):
    lines = text.strip().splitlines()
    assert len(lines) == len(history.epoch)
    for line, epoch in zip(lines, history.epoch):
        assert line.startswith(f"Epoch {epoch + 1}/")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            values = history.history[key][epoch]
            found = re.search(r"(?:^| )" + LINE_VALUE.format(key=key), line)
            assert found is not None, (key, line)
            assert found.groups() == _expected(key, values), (key, line)


def test_verbose_2_lines_show_the_best_member_and_the_spread():
    out = io.StringIO()
    bar = jaxfit.callbacks.ProgressBar(verbose=2, stream=out, now=lambda: 0.0)
    history = _fit(bar)
    _check_lines(out.getvalue(), history)
    last = history.history["loss"][-1]
    assert np.ptp(last) > 1e-3  # the members differ: the spread is not trivial
    # the member with rate 0 does not learn: the best loss is another's
    assert "(best #0)" not in out.getvalue().split(" - loss: ")[-1].split(" - ")[0]
    # a setting is not scored: the members' range
    assert all(
        " - learning_rate: 0.0000..0.5000 - " in line
        for line in out.getvalue().splitlines()
    )


def test_a_stopped_member_is_left_out_of_the_best_and_the_spread():
    out = io.StringIO()
    bar = jaxfit.callbacks.ProgressBar(verbose=2, stream=out, now=lambda: 0.0)
    stop = jaxfit.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e-3)
    history = _fit(bar, epochs=4, callbacks=[stop])
    assert len(history.members[0].epoch) == 2  # rate 0: no improvement, stopped
    assert np.isnan(history.history["loss"][3][0])
    assert not np.isnan(history.history["loss"][3][1:]).any()
    _check_lines(out.getvalue(), history)
    assert "nan" not in out.getvalue()


def test_verbose_1_bar_shows_the_best_and_the_spread():
    out = io.StringIO()
    ticks = itertools.count()
    bar = jaxfit.callbacks.ProgressBar(
        verbose=1, stream=out, now=lambda: next(ticks) * 0.01
    )
    history = _fit(bar, epochs=2, yield_every="batch")
    text = out.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "4/4" in text
    assert "samples/s=" in text
    best, member, mean, std = _expected(
        "val_accuracy", history.history["val_accuracy"][-1], ".4g"
    )
    assert f"val_accuracy={best} (best #{member}) {mean}±{std}" in text
    best, member, mean, std = _expected("loss", history.history["loss"][-1], ".4g")
    assert f"loss={best} (best #{member}) {mean}±{std}" in text


def test_all_members_stopped_reads_nan_and_scalars_stay_as_they_are():
    out = io.StringIO()
    bar = jaxfit.callbacks.ProgressBar(verbose=2, stream=out, now=lambda: 0.0)
    bar.set_params({"epochs": 1, "steps": 2, "population": 2})
    bar.on_epoch_begin(0)
    logs = {"loss": np.array([np.nan, np.nan]), "accuracy": np.array([0.5, 0.75])}
    bar.on_epoch_end(0, {**logs, "learning_rate": 0.01, "lr": np.array([0.1, 0.1])})
    assert out.getvalue() == (
        "Epoch 1/1 - 0.00s 0ms/step - loss: nan - "
        "accuracy: 0.7500 (best #1) 0.6250±0.1250 - learning_rate: 0.0100 - "
        "lr: 0.1000\n"
    )


class _Ascii(io.StringIO):
    encoding = "ascii"


def test_a_stream_that_cannot_write_plus_minus_gets_plus_dash():
    out = _Ascii()
    bar = jaxfit.callbacks.ProgressBar(verbose=2, stream=out, now=lambda: 0.0)
    bar.set_params({"epochs": 1})
    bar.on_epoch_begin(0)
    bar.on_epoch_end(0, {"val_loss": np.array([0.5, 0.25, np.inf])})
    assert out.getvalue() == "Epoch 1/1 - 0.00s - val_loss: 0.2500 (best #1) inf+-nan\n"
