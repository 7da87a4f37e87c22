"""fit_dataset / evaluate_dataset: sources, epoch semantics, shapes, feeder thread."""

import asyncio
import threading
import warnings

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=10)
W = np.linspace(0.5, 1.5, 10).astype(np.float32)
BATCHES = [(X[i : i + 4], Y[i : i + 4]) for i in range(0, 10, 4)]  # sizes 4, 4, 2


def _trainer(lr=0.1, **kwargs):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(lr),
        loss="mse",
        metrics=["mae"],
        **kwargs,
    )


class FakeTFData:
    """Duck-typed tf.data.Dataset: only as_numpy_iterator()."""

    def __init__(self, batches):
        self.batches = batches

    def as_numpy_iterator(self):
        return iter(self.batches)


def _generator():
    yield from BATCHES


SOURCES = {
    "list": lambda: BATCHES,
    "generator_function": lambda: _generator,
    "dict_batches": lambda: [{"xs": x, "ys": y} for x, y in BATCHES],
    "fake_tf_data": lambda: FakeTFData(BATCHES),
    "custom_iterable": lambda: type(
        "Iterable", (), {"__iter__": lambda self: iter(BATCHES)}
    )(),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_same_history_as_fit_without_shuffle(source):
    expected = (
        _trainer()
        .fit(
            X,
            Y,
            batch_size=4,
            epochs=3,
            shuffle=False,
            validation_data=(X, Y),
            verbose=0,
        )
        .history
    )
    got = (
        _trainer()
        .fit_dataset(SOURCES[source](), epochs=3, validation_data=(X, Y), verbose=0)
        .history
    )
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)


def test_grain_dataset_source():
    grain = pytest.importorskip("grain", reason="grain is the optional data extra")
    source = (
        grain.MapDataset.source(list(range(10)))
        .batch(4)
        .map(lambda idx: (X[idx], Y[idx]))
    )
    expected = _trainer().fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    got = _trainer().fit_dataset(source, epochs=2, verbose=0)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-6)


def test_from_arrays_builds_a_grain_pipeline_like_fit():
    pytest.importorskip("grain", reason="grain is the optional data extra")
    dataset = jaxfit.data.from_arrays(X, Y, batch_size=4, shuffle=False)
    assert len(dataset) == 3
    expected = _trainer().fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    got = _trainer().fit_dataset(dataset, epochs=2, verbose=0)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-6)
    shuffled = jaxfit.data.from_arrays(X, Y, batch_size=4, shuffle=True, seed=1)
    orders = [np.concatenate([b["xs"][:, 0] for b in shuffled]) for _ in range(2)]
    assert sorted(orders[0].tolist()) == sorted(X[:, 0].tolist())
    assert not np.array_equal(orders[0], orders[1])  # a fresh order each epoch


def test_from_arrays_shuffles_as_fit_does_with_the_same_seed():
    pytest.importorskip("grain", reason="grain is the optional data extra")
    expected = _trainer(seed=3).fit(X, Y, batch_size=4, epochs=3, verbose=0)
    dataset = jaxfit.data.from_arrays(X, Y, batch_size=4, shuffle=True, seed=3)
    got = _trainer(seed=3).fit_dataset(dataset, epochs=3, verbose=0)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-6)


def test_sample_weights_and_class_weights_in_streams():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 1, 0, 1, 1])
    y = labels[:, None].astype(np.float32)

    def make():
        return jaxfit.Trainer(
            linear_apply, linear_params(), optimizer=optax.sgd(0.0), loss="mse"
        )

    w = W[:8]
    batches = [
        {"xs": x[i : i + 3], "ys": y[i : i + 3], "sample_weight": w[i : i + 3]}
        for i in range(0, 8, 3)
    ]
    expected = make().fit(
        x,
        y,
        batch_size=3,
        shuffle=False,
        sample_weight=W[:8],
        class_weight={0: 2.0, 1: 0.5},
        verbose=0,
    )
    got = make().fit_dataset(batches, class_weight={0: 2.0, 1: 0.5}, verbose=0)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-6)


def test_a_generator_function_is_called_afresh_each_epoch():
    calls = []

    def batches():
        calls.append(1)
        yield from BATCHES

    history = _trainer().fit_dataset(batches, epochs=3, initial_epoch=1, verbose=0)
    assert len(calls) == 2 and history.epoch == [1, 2]


def test_a_one_shot_iterator_for_several_epochs_fails_before_training(compiles):
    trainer = _trainer()
    consumed = []

    def generator():
        for batch in BATCHES:
            consumed.append(1)
            yield batch

    with pytest.raises(ValueError) as info:
        trainer.fit_dataset(generator(), epochs=3, verbose=0)
    message = str(info.value)
    assert (
        "one-shot" in message
        and "epoch 1" in message
        and "generator function" in message
    )
    assert int(trainer.state.step) == 0 and compiles.count == 0 and not consumed
    # one epoch of it is fine (tfjs), and so is steps_per_epoch
    assert _trainer().fit_dataset(_generator(), epochs=1, verbose=0).epoch == [0]
    assert _trainer().fit_dataset(
        _generator(), epochs=3, initial_epoch=2, verbose=0
    ).epoch == [2]


def test_steps_per_epoch_continues_one_iterator_across_epochs():
    def endless():
        while True:
            yield from BATCHES

    seen = []
    history = _trainer(lr=0.0).fit_dataset(
        endless(),
        epochs=3,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[{"on_train_batch_end": lambda b, logs: seen.append(logs["loss"])}],
    )
    r = (X @ np.asarray(linear_params()["w"]) - Y)[:, 0] ** 2
    per_batch = [r[0:4].mean(), r[4:8].mean(), r[8:10].mean()]
    np.testing.assert_allclose(seen, [per_batch[i % 3] for i in range(6)], rtol=1e-5)
    assert history.params["steps"] == 2 and history.epoch == [0, 1, 2]


def test_running_out_of_data_warns_as_tfjs_and_stops():
    with pytest.warns(
        UserWarning, match=r"ran out of data.*\(in this case, 8 batches\)"
    ):
        history = _trainer().fit_dataset(
            iter(BATCHES * 2), epochs=4, steps_per_epoch=2, verbose=0
        )
    assert history.epoch == [0, 1, 2]  # 6 batches: 2 + 2 + 2, then none for epoch 3


def test_varying_batch_sizes_compile_a_bounded_number_of_shapes(compiles):
    sizes = [4, 4, 2, 3, 1, 4]
    batches = [(np.resize(X, (s, 3)), np.resize(Y, (s, 1))) for s in sizes]
    trainer = _trainer()
    trainer.fit_dataset(batches, epochs=1, verbose=0)
    compiles.reset()
    history = trainer.fit_dataset(batches, epochs=2, verbose=0)
    assert compiles.count == 0
    assert np.isfinite(history.history["loss"]).all()


def test_a_mismatched_batch_is_named_by_its_index():
    batches = BATCHES[:2] + [(np.ones((2, 4), np.float32), Y[:2])]
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"batch 2 .*\(4,\).*batch 0 had .*\(3,\)"):
        trainer.fit_dataset(batches, verbose=0)
    assert int(trainer.state.step) == 2


def test_a_malformed_first_batch_fails_before_any_step(compiles):
    trainer = _trainer()
    with pytest.raises(ValueError, match="dataset batch 0"):
        trainer.fit_dataset([{"inputs": X, "ys": Y}], verbose=0)
    with pytest.raises(TypeError, match="dataset"):
        trainer.fit_dataset(42, verbose=0)
    with pytest.raises(ValueError, match="validation_batches"):
        trainer.fit_dataset(BATCHES, validation_batches=0, verbose=0)
    assert compiles.count == 0 and int(trainer.state.step) == 0


class Broken(Exception):
    pass


def test_a_producer_error_leaves_state_at_step_k_and_no_live_thread():
    def batches():
        for i, batch in enumerate(BATCHES * 3):
            if i == 5:
                raise Broken("disk on fire")
            yield batch

    before = set(threading.enumerate())
    trainer = _trainer()
    with pytest.raises(Broken) as info:
        trainer.fit_dataset(batches, epochs=1, verbose=0, yield_every="batch")
    assert "batch 5" in " ".join(info.value.__notes__)
    assert int(trainer.state.step) == 5
    assert set(threading.enumerate()) <= before
    assert np.isfinite(np.asarray(trainer.params["w"])).all()


def test_a_callback_error_mid_stream_joins_the_feeder_thread():
    before = set(threading.enumerate())

    def explode(batch, logs):
        if batch == 1:
            raise KeyboardInterrupt

    def endless():
        while True:
            yield from BATCHES

    with pytest.raises(KeyboardInterrupt):
        _trainer().fit_dataset(
            endless,
            steps_per_epoch=100,
            yield_every="batch",
            verbose=0,
            callbacks=[{"on_batch_end": explode}],
        )
    assert set(threading.enumerate()) <= before


def test_validation_on_a_stream_honours_validation_batches():
    trainer = _trainer(lr=0.0)
    history = trainer.fit_dataset(
        BATCHES, validation_data=_generator, validation_batches=1, verbose=0
    )
    r = (X @ np.asarray(trainer.params["w"]) - Y)[:, 0] ** 2
    np.testing.assert_allclose(history.history["val_loss"], [r[:4].mean()], rtol=1e-5)
    result = trainer.evaluate_dataset(FakeTFData(BATCHES), batches=2)
    np.testing.assert_allclose(result["loss"], r[:8].mean(), rtol=1e-5)


def test_fit_dataset_async_lets_other_coroutines_run():
    ticks = []

    async def main():
        done = asyncio.Event()

        async def ticker():
            while not done.is_set():
                ticks.append(1)
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        history = await _trainer().fit_dataset_async(
            BATCHES, epochs=3, yield_every="batch", verbose=0
        )
        done.set()
        await task
        return history

    assert asyncio.run(main()).epoch == [0, 1, 2]
    assert len(ticks) >= 5


def test_grain_iter_dataset_and_data_loader_sources():
    grain = pytest.importorskip("grain", reason="grain is the optional data extra")
    expected = _trainer().fit(X, Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    rows = [{"xs": X[i], "ys": Y[i]} for i in range(10)]
    iter_dataset = grain.MapDataset.source(rows).to_iter_dataset().batch(4)
    loader = grain.DataLoader(
        data_source=rows,
        sampler=grain.samplers.SequentialSampler(num_records=10),
        operations=[grain.transforms.Batch(batch_size=4)],
        worker_count=0,
    )
    for source in (iter_dataset, loader):
        got = _trainer().fit_dataset(source, epochs=2, verbose=0)
        np.testing.assert_allclose(
            got.history["loss"], expected.history["loss"], rtol=1e-6
        )


@pytest.mark.parametrize(
    "source,steps",
    [("list", 3), ("generator_function", None), ("custom_iterable", None)],
)
def test_callback_params_steps_come_from_a_sized_dataset(source, steps):
    # tfjs: params.steps is dataset.size when steps_per_epoch is not given
    history = _trainer().fit_dataset(SOURCES[source](), epochs=1, verbose=0)
    assert history.params["steps"] == steps


def test_callback_params_steps_of_a_grain_dataset():
    grain = pytest.importorskip("grain", reason="grain is the optional data extra")
    dataset = jaxfit.data.from_arrays(X, Y, batch_size=4, shuffle=False)
    assert len(dataset) == 3
    history = _trainer().fit_dataset(dataset, epochs=1, verbose=0)
    assert history.params["steps"] == 3
    del grain


def test_evaluate_dataset_warns_when_it_runs_out_before_batches():
    trainer = _trainer()
    with pytest.warns(
        UserWarning,
        match=r"ran out of data during evaluation after 3 "
        r"batches.*\(in this case, 5 batches\)",
    ):
        logs = trainer.evaluate_dataset(BATCHES, batches=5)
    assert logs == pytest.approx(trainer.evaluate(X, Y, batch_size=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.evaluate_dataset(BATCHES, batches=3)  # exactly enough: no warning
        trainer.evaluate_dataset(BATCHES)


def test_validation_batches_beyond_the_stream_warn_too():
    with pytest.warns(UserWarning, match=r"\(in this case, 4 batches\)"):
        history = _trainer().fit_dataset(
            BATCHES, epochs=1, validation_data=BATCHES, validation_batches=4, verbose=0
        )
    assert "val_loss" in history.history
