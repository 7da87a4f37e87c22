"""Fused runs equal the unfused one, for any sequence of batch sizes.

Property-style: seeded random sequences of batch sizes (0..9 rows, 5-20 batches)
with 0-row batches in the middle, at the end and, in one case, first; in half of
them a late batch of 9 rows is larger than all before it and opens a new padded
shape bucket (on 1 device and on 8). Trained with ``yield_every="auto"``, ``50``
and ``"epoch"`` (fused blocks), each run must give what ``yield_every="batch"``
(one step per compiled call) gives: the final params, ``history.history``, every
``on_train_batch_end`` (index, loss, metric) and every ``on_epoch_end`` log.

A 0-row batch is skipped, the same in every mode: it is no step (no batch hooks;
batch indices count only the non-empty batches), it does not count toward
``steps_per_epoch``, and a run equals the run on the same stream with the empty
batches removed. adam's momentum makes a step wrongly taken on an empty batch, or
a dropped batch, move the params (``sgd(0.0)`` would hide both).

Compiles dominate the runtime, so one trainer serves every run of this module,
reset to the same initial state before each: its programs are cached per padded
shape, and the runs share them.
"""

import functools
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params

import jaxfit

SEEDS = range(6)
FUSED = ["auto", 50, "epoch"]
MODES = ["batch", *FUSED]
SOURCES = ["list", "generator"]
EPOCHS = 2
RTOL, ATOL = 1e-5, 1e-6


def _sizes(seed: int) -> tuple[int, ...]:
    """5-20 batch sizes in 0..9: 0 rows in the middle and last (and first, for
    seed 0); for even seeds a later batch of 9 rows, larger than all before it."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(5, 21))
    sizes = rng.integers(0, 9, size=count)  # 0..8 rows
    sizes[rng.integers(1, count // 2)] = 0
    sizes[-1] = 0
    if seed == 0:
        sizes[0] = 0
    if seed % 2 == 0:
        sizes[rng.integers(count // 2, count - 1)] = 9
    return tuple(int(s) for s in sizes)


def _batches(sizes, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(100 + seed)
    return [
        (
            rng.normal(size=(s, 3)).astype(np.float32),
            rng.normal(size=(s, 1)).astype(np.float32),
        )
        for s in sizes
    ]


def _non_empty(batches):
    return [batch for batch in batches if len(batch[0])]


def _source(batches, source: str) -> Any:
    if source == "list":
        return batches

    def generate():
        yield from batches

    return generate


class Recorder(jaxfit.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begins, self.ends, self.epochs = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.begins.append(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((batch, float(logs["loss"]), float(logs["mae"])))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs)))


class Run(NamedTuple):
    params: dict[str, np.ndarray]
    history: dict[str, list[float]]
    begins: list[int]
    ends: list[tuple[int, float, float]]
    epochs: list[tuple[int, dict[str, float]]]
    steps: int


@functools.cache
def _shared() -> tuple[jaxfit.Trainer, Any]:
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(1e-2),
        loss="mse",
        metrics=["mae"],
        seed=0,
    )
    # host copies: a fit donates the state's device buffers
    return trainer, jax.tree.map(np.asarray, trainer.state)


def _trainer() -> jaxfit.Trainer:
    trainer, initial = _shared()
    trainer.state = initial
    return trainer


def _record(trainer: jaxfit.Trainer, history, recorder: Recorder) -> Run:
    return Run(
        {key: np.asarray(value) for key, value in trainer.params.items()},
        {key: list(values) for key, values in history.history.items()},
        recorder.begins,
        recorder.ends,
        recorder.epochs,
        int(trainer.state.step),
    )


def _fit_dataset(dataset, yield_every, **kwargs) -> Run:
    trainer, recorder = _trainer(), Recorder()
    history = trainer.fit_dataset(
        dataset,
        verbose=0,
        callbacks=[recorder],
        yield_every=yield_every,
        **kwargs,
    )
    return _record(trainer, history, recorder)


@functools.cache
def _sequence_run(seed: int, yield_every, source: str, empties: bool) -> Run:
    batches = _batches(_sizes(seed), seed)
    if not empties:
        batches = _non_empty(batches)
    return _fit_dataset(_source(batches, source), yield_every, epochs=EPOCHS)


def _assert_same_run(got: Run, want: Run) -> None:
    indices = [end[0] for end in got.ends]
    expected_indices = [end[0] for end in want.ends]
    assert got.begins == indices  # a begin hook for every end hook
    assert indices == expected_indices
    steps, expected_steps = got.steps, want.steps  # trainer.state.step
    assert steps == expected_steps
    np.testing.assert_allclose(
        [end[1:] for end in got.ends],
        [end[1:] for end in want.ends],
        rtol=RTOL,
        atol=ATOL,
        err_msg="on_train_batch_end (loss, mae)",
    )
    assert [epoch for epoch, _ in got.epochs] == [epoch for epoch, _ in want.epochs]
    for (epoch, logs), (_, expected) in zip(got.epochs, want.epochs):
        assert logs.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(
                logs[key], expected[key], rtol=RTOL, atol=ATOL, err_msg=f"{epoch} {key}"
            )
    assert got.history.keys() == want.history.keys()
    for key in want.history:
        np.testing.assert_allclose(
            got.history[key], want.history[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    for key in want.params:
        np.testing.assert_allclose(
            got.params[key], want.params[key], rtol=RTOL, atol=ATOL, err_msg=key
        )


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("yield_every", FUSED)
@pytest.mark.parametrize("seed", SEEDS)
def test_fused_fit_dataset_equals_the_unfused_run(seed, yield_every, source):
    got = _sequence_run(seed, yield_every, source, empties=True)
    _assert_same_run(got, _sequence_run(seed, "batch", source, empties=True))


@pytest.mark.parametrize("yield_every", FUSED)
@pytest.mark.parametrize("seed", SEEDS)
def test_fused_fit_dataset_without_empty_batches_equals_the_unfused_run(
    seed, yield_every
):
    got = _sequence_run(seed, yield_every, "list", empties=False)
    _assert_same_run(got, _sequence_run(seed, "batch", "list", empties=False))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("yield_every", MODES)
@pytest.mark.parametrize("seed", SEEDS)
def test_empty_batches_are_skipped(seed, yield_every, source):
    got = _sequence_run(seed, yield_every, source, empties=True)
    non_empty = sum(1 for size in _sizes(seed) if size)
    # no step and no batch hooks for a 0-row batch: indices count the others
    assert [end[0] for end in got.ends] == list(range(non_empty)) * EPOCHS
    assert got.steps == non_empty * EPOCHS
    _assert_same_run(got, _sequence_run(seed, yield_every, source, empties=False))


def _cut_case(seed: int) -> tuple[int, tuple[int, ...]]:
    """``steps_per_epoch`` in 2..9 and a long stream: 3 epochs' worth of non-empty
    batches and 1-5 more (``steps_per_epoch`` divides nothing), plus, for odd
    seeds, 0-row batches at random places and as the ``steps_per_epoch``-th batch
    (an epoch would end on it if it counted)."""
    rng = np.random.default_rng(1000 + seed)
    steps = int(rng.integers(2, 10))
    sizes = list(rng.integers(1, 10, size=3 * steps + int(rng.integers(1, 6))))
    if seed % 2:
        for position in rng.integers(0, len(sizes), size=3):
            sizes.insert(int(position), 0)
        sizes.insert(steps - 1, 0)
    return steps, tuple(int(s) for s in sizes)


CUT_SEEDS = range(4)


@functools.cache
def _cut_run(seed: int, yield_every, empties: bool) -> Run:
    steps, sizes = _cut_case(seed)
    batches = _batches(sizes, seed)
    if not empties:
        batches = _non_empty(batches)
    return _fit_dataset(
        _source(batches, "generator"), yield_every, epochs=3, steps_per_epoch=steps
    )


@pytest.mark.parametrize("yield_every", FUSED)
@pytest.mark.parametrize("seed", CUT_SEEDS)
def test_steps_per_epoch_cuts_equal_the_unfused_run(seed, yield_every):
    steps, _ = _cut_case(seed)
    got = _cut_run(seed, yield_every, empties=True)
    # one iterator across the epochs: each epoch takes the next `steps` batches
    assert [end[0] for end in got.ends] == list(range(steps)) * 3
    _assert_same_run(got, _cut_run(seed, "batch", empties=True))


@pytest.mark.parametrize("yield_every", MODES)
@pytest.mark.parametrize("seed", [s for s in CUT_SEEDS if s % 2])
def test_empty_batches_do_not_count_toward_steps_per_epoch(seed, yield_every):
    _assert_same_run(
        _cut_run(seed, yield_every, empties=True),
        _cut_run(seed, yield_every, empties=False),
    )


# (samples, batch_size, steps_per_epoch, epochs): a ragged last batch, and
# steps_per_epoch larger than one pass (the stream continues, reshuffled)
ARRAY_CASES = [(23, 4, None, 2), (23, 4, 9, 3), (13, 5, 7, 2)]


@functools.cache
def _array_run(case, yield_every) -> Run:
    n, batch_size, steps, epochs = case
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    trainer, recorder = _trainer(), Recorder()
    history = trainer.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps,
        shuffle=True,
        verbose=0,
        callbacks=[recorder],
        yield_every=yield_every,
    )
    return _record(trainer, history, recorder)


@pytest.mark.parametrize("yield_every", FUSED)
@pytest.mark.parametrize("case", ARRAY_CASES)
def test_fused_fit_on_arrays_equals_the_unfused_run(case, yield_every):
    n, batch_size, steps, epochs = case
    got = _array_run(case, yield_every)
    per_epoch = steps or -(-n // batch_size)
    assert got.steps == per_epoch * epochs
    _assert_same_run(got, _array_run(case, "batch"))


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_dataset_skips_empty_batches(seed):
    batches = _batches(_sizes(seed), seed)
    trainer = _trainer()
    logs = trainer.evaluate_dataset(batches)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    params = linear_params()
    error = x @ np.asarray(params["w"]) + np.asarray(params["b"]) - y
    # the mean over every sample of the non-empty batches (each batch weighs by
    # its rows, as evaluate does); empty batches add nothing
    np.testing.assert_allclose(logs["loss"], np.mean(error**2), rtol=RTOL)
    np.testing.assert_allclose(logs["mae"], np.mean(np.abs(error)), rtol=RTOL)
    without = trainer.evaluate_dataset(_non_empty(batches))
    assert without.keys() == logs.keys()
    for key in logs:
        np.testing.assert_allclose(logs[key], without[key], rtol=RTOL, err_msg=key)
