"""Fused streams: fit_dataset groups consecutive batches into compiled blocks.

Where a block ends is the feeder's grouping (driven directly here): a block
holds up to the yield policy's current length of batches of one padded shape,
at most its slots (the byte budget); it ends early at a new shape bucket, at the
end of the stream or of an epoch (``steps_per_epoch``), before an error, or
after the fill deadline. Wide batches make the byte budget allow only three
batches a block. Through the public API, fused runs equal unfused ones.
"""

import itertools
import threading

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params

import jaxfit
from jaxfit._src.data import feeder, iterables, sources

RNG = np.random.default_rng(0)
WIDE = 85_000  # features: a batch of 8 is ~2.6 MiB, so 3 batches fill a block
# (batch sizes here are multiples of 8: padded to the data axis of 8 devices, the
# same shapes as on one)


def _batches(sizes, width=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(s, width)).astype(np.float32),
            rng.normal(size=(s, 1)).astype(np.float32),
        )
        for s in sizes
    ]


def _trainer(width=3, **kwargs):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(n_in=width),
        optimizer=optax.adam(0.01),
        loss="mse",
        metrics=["mae"],
        **kwargs,
    )


def _ticks():
    counter = itertools.count()
    return lambda: next(counter) * 1000.0  # every block is past the yield interval


def _same_weights(got, want):
    np.testing.assert_allclose(
        np.asarray(got.params["w"]), np.asarray(want.params["w"]), rtol=1e-5, atol=1e-6
    )


def _labelled(count, rows, seed):
    """``count`` batches of ``rows`` samples with 3-class integer labels."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(size=(rows, 3)).astype(np.float32),
            rng.integers(0, 3, size=rows).astype(np.int32),
        )
        for _ in range(count)
    ]


class Blocks(jaxfit.callbacks.Callback):
    """Records each yield point's last batch (per epoch) and every batch's logs."""

    def __init__(self):
        super().__init__()
        self.ends, self.logs = [], []

    def on_yield(self, epoch, batch, logs=None):
        self.ends.append((epoch, batch))

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def _fit(dataset, width=3, yield_every=20, **kwargs):
    trainer, blocks = _trainer(width), Blocks()
    trainer.fit_dataset(
        dataset,
        verbose=0,
        callbacks=[blocks],
        yield_every=yield_every,
        now=_ticks(),
        **kwargs,
    )
    return trainer, blocks


def _grouping(batches, capacity=64, steps=None, period=None):
    """The number of batches in each block the feeder makes of ``batches``."""
    blocks = feeder.Feeder(
        iter(batches),
        iterables.Batcher("dataset", None),
        lambda block: block,
        size=capacity,
        steps=steps,
        period=period,
    )
    return [real for _, real in blocks]


def test_a_new_shape_bucket_and_the_end_of_the_stream_end_a_block():
    # padded to the largest size so far: 8, 8, 8 | 16, 16, then 4 padded to 16 | end
    assert _grouping(_batches([8, 8, 8, 16, 16, 4])) == [3, 3]


def test_blocks_hold_what_the_byte_budget_allows():
    source = sources.StreamSource(
        _batches([8] * 7, WIDE), "dataset", put=lambda b, n: b, multiple=1
    )
    assert source.capacity(True) == 3 and source.capacity(False) == 1
    assert _grouping(_batches([8] * 7, WIDE), capacity=3) == [3, 3, 1]


def test_blocks_follow_the_policy_length_read_as_each_one_fills():
    # read after each batch joins a group: 1 | 1 | 2 2 | 5 5 5 5 5
    lengths = iter([1, 1, 2, 2, 2, 5, 5, 5, 5])
    assert _grouping(_batches([4] * 9), steps=lambda: next(lengths, 5)) == [1, 1, 2, 5]


def test_steps_per_epoch_cuts_blocks_at_each_epoch_end():
    assert _grouping(_batches([8] * 8), capacity=3, period=4) == [3, 1, 3, 1]
    batches = _batches([8] * 8, WIDE)
    trainer, _ = _fit(lambda: iter(batches), WIDE, epochs=2, steps_per_epoch=4)
    # the second epoch went on with the same iterator: batches 4..7, as unfused
    unfused = _trainer(WIDE)
    unfused.fit_dataset(
        lambda: iter(batches),
        epochs=2,
        steps_per_epoch=4,
        verbose=0,
        yield_every="batch",
    )
    _same_weights(trainer, unfused)


def test_batches_of_no_rows_are_not_steps():
    sizes = [0, 4, 0, 4, 4, 0]
    assert _grouping(_batches(sizes)) == [3]
    assert _grouping(_batches(sizes), period=2) == [2, 1]


def test_per_batch_logs_and_weights_equal_the_unfused_run():
    weights = [RNG.uniform(0.5, 2.0, size=s).astype(np.float32) for s in [8] * 9 + [5]]
    batches = [(x, y, w) for (x, y), w in zip(_batches([8] * 9 + [5]), weights)]
    fused, fused_logs = _trainer(), Blocks()
    history = fused.fit_dataset(
        batches,
        epochs=2,
        verbose=0,
        callbacks=[fused_logs],
        validation_data=batches[:3],
    )
    unfused, unfused_logs = _trainer(), Blocks()
    expected = unfused.fit_dataset(
        batches,
        epochs=2,
        verbose=0,
        callbacks=[unfused_logs],
        yield_every="batch",
        validation_data=batches[:3],
    )
    assert len(fused_logs.logs) == len(unfused_logs.logs) == 20
    for got, want in zip(fused_logs.logs, unfused_logs.logs):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-6)
    for key in expected.history:
        np.testing.assert_allclose(
            history.history[key], expected.history[key], rtol=2e-5, err_msg=key
        )
    _same_weights(fused, unfused)


def test_class_weights_in_fused_blocks_equal_the_unfused_run():
    batches = _labelled(7, 6, seed=1)

    def trainer():
        return jaxfit.Trainer(
            linear_apply,
            linear_params(n_out=3),
            optimizer=optax.sgd(0.1),
            loss="sparse_categorical_crossentropy_from_logits",
        )

    weights = {0: 1.0, 1: 3.0, 2: 0.5}
    fused = trainer()
    fused.fit_dataset(batches, class_weight=weights, epochs=2, verbose=0)
    unfused = trainer()
    unfused.fit_dataset(
        batches, class_weight=weights, epochs=2, verbose=0, yield_every="batch"
    )
    _same_weights(fused, unfused)


class Broken(Exception):
    pass


def test_a_producer_error_inside_a_would_be_block_trains_the_batches_before_it():
    batches = _batches([4] * 9)

    def stream():
        for index, batch in enumerate(batches):
            if index == 5:
                raise Broken("disk on fire")
            yield batch

    before = set(threading.enumerate())
    trainer, blocks = _trainer(), Blocks()
    with pytest.raises(Broken) as info:
        trainer.fit_dataset(stream, verbose=0, callbacks=[blocks])
    assert "batch 5" in " ".join(info.value.__notes__)
    assert int(trainer.state.step) == 5 and len(blocks.logs) == 5
    assert set(threading.enumerate()) <= before
    unfused = _trainer()
    unfused.fit_dataset(batches[:5], verbose=0, yield_every="batch")
    _same_weights(trainer, unfused)


def test_a_bad_label_inside_a_would_be_block_is_named_after_the_batches_before_it():
    batches = _labelled(6, 4, seed=2)
    batches[3][1][2] = 7  # class 7 of a 3-class model
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(n_out=3),
        optimizer=optax.sgd(0.1),
        loss="sparse_categorical_crossentropy_from_logits",
    )
    with pytest.raises(
        ValueError,
        match=r"dataset batch 3: y: expected class indices "
        r"in \[0, 3\)",
    ):
        trainer.fit_dataset(batches, verbose=0)
    assert int(trainer.state.step) == 3


def test_a_stream_compiles_one_program_per_padded_shape_and_a_second_fit_none(
    compiles,
):
    # two shape buckets (8, then 16); blocks of any length share a program
    batches = _batches([8] * 5 + [16] * 4 + [3])
    trainer = _trainer()
    trainer.fit_dataset(batches, epochs=2, validation_data=batches[:4], verbose=0)
    assert compiles.named("train_block") == 2
    assert compiles.named("eval_block") == 1  # the validation batches: one bucket
    compiles.reset()
    trainer.fit_dataset(batches, epochs=2, validation_data=batches[:4], verbose=0)
    trainer.evaluate_dataset(batches[:4])
    assert compiles.count == 0


def test_one_train_program_runs_a_long_stream_in_blocks_of_any_length(compiles):
    trainer = _trainer(WIDE)
    trainer.fit_dataset(_batches([8] * 8, WIDE), epochs=2, verbose=0)
    assert compiles.named("train_block") == 1
    compiles.reset()
    trainer.fit_dataset(_batches([8] * 8, WIDE, seed=1), epochs=1, verbose=0)
    assert compiles.count == 0


def test_evaluate_dataset_fused_equals_batch_by_batch():
    batches = _batches([5] * 11 + [2])
    trainer = _trainer()
    seen = []
    logs = trainer.evaluate_dataset(
        batches,
        callbacks=[{"on_test_batch_end": lambda batch, logs: seen.append(dict(logs))}],
    )
    assert len(seen) == 12
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    expected = trainer.evaluate(x, y, batch_size=5)
    for key in expected:
        np.testing.assert_allclose(logs[key], expected[key], rtol=1e-5, err_msg=key)


def test_yield_every_batch_runs_one_batch_per_block():
    _, blocks = _fit(_batches([4] * 3), yield_every="batch")
    assert blocks.ends == [(0, 0), (0, 1), (0, 2)]
