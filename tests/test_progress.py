"""ProgressBar: verbose=2 lines, verbose=1 tqdm bar refreshed at yield points."""

import io
import itertools

import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=20)


def _trainer():
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.1),
        loss="mse",
        metrics=["mae"],
    )


def test_verbose_2_prints_one_line_per_epoch_with_validation(capsys):
    _trainer().fit(X, Y, batch_size=4, epochs=2, validation_split=0.2, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 - ") and "ms/step" in lines[0]
    for key in ("loss:", "mae:", "val_loss:", "val_mae:"):
        assert key in lines[1]


def test_auto_verbose_is_2_when_output_is_not_a_tty(capsys):
    _trainer().fit(X, Y, batch_size=4, epochs=1)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/1 - ") and out.count("\n") == 1


def test_verbose_1_bar_shows_steps_and_logs_at_yield_points():
    stream = io.StringIO()
    ticks = itertools.count()
    bar = jaxfit.callbacks.ProgressBar(
        verbose=1, stream=stream, now=lambda: next(ticks) * 0.01
    )
    _trainer().fit(
        X,
        Y,
        batch_size=4,
        epochs=2,
        yield_every="batch",
        verbose=0,
        validation_split=0.2,
        callbacks=[bar],
    )
    text = stream.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "4/4" in text  # 16 training samples in batches of 4
    assert "loss=" in text and "samples/s=" in text and "val_loss=" in text


def test_a_stream_of_unknown_length_shows_a_counter():
    stream = io.StringIO()
    batches = [(X[i : i + 4], Y[i : i + 4]) for i in range(0, 20, 4)]
    bar = jaxfit.callbacks.ProgressBar(verbose=1, stream=stream)
    _trainer().fit_dataset(
        lambda: iter(batches), epochs=1, yield_every="batch", verbose=0, callbacks=[bar]
    )
    assert "5step" in stream.getvalue().replace(" ", "")
    assert "5/5" not in stream.getvalue()


def test_a_sized_stream_shows_its_total():
    # tfjs takes the total from dataset.size; jaxfit from len(dataset)
    stream = io.StringIO()
    batches = [(X[i : i + 4], Y[i : i + 4]) for i in range(0, 20, 4)]
    bar = jaxfit.callbacks.ProgressBar(verbose=1, stream=stream)
    _trainer().fit_dataset(
        batches, epochs=1, yield_every="batch", verbose=0, callbacks=[bar]
    )
    assert "5/5" in stream.getvalue()


def test_progress_bar_rejects_a_bad_verbose():
    with pytest.raises(ValueError, match="verbose"):
        jaxfit.callbacks.ProgressBar(verbose=3)
