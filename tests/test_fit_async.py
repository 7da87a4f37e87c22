"""fit_async / fit_dataset_async: the event loop keeps running, the results are fit's.

The responsiveness tests train a model heavy enough that its compile and its
steps take a second or two on a 2-core CPU, beside an asyncio ticker that sleeps
15 ms in a loop and records the gaps between its wake-ups. Their bounds are
generous (no gap of a second, ten ticks a second), so that a loaded machine
passes and code that compiles or waits for the device on the event loop's
thread (its ticker would run once or twice in the whole fit, with a gap as long
as the compile) fails. Timing
targets live in benchmarks/latency.py, not here.
"""

import asyncio
import contextlib
import gc
import itertools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

TICK_S = 0.015
_COMPILE_S: list[float] = []  # the seconds of each train step compile, in order


def _on_event(event, duration, **kwargs):
    compile = event == "/jax/core/compile/backend_compile_duration"
    if compile and kwargs.get("fun_name") == "jit(train_block)":
        _COMPILE_S.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)
SIZES = [64, 512, 512, 10]  # an MLP with two 512-wide hidden layers
HEAVY_ROWS, HEAVY_BATCH, HEAVY_EPOCHS = 4096, 128, 3  # 32 steps an epoch


def mlp_apply(params, x):
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "w": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
            "b": jnp.zeros((b,), jnp.float32),
        }
        for a, b in itertools.pairwise(SIZES)
    ]


def heavy_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(HEAVY_ROWS, SIZES[0])).astype(np.float32)
    y = rng.normal(size=(HEAVY_ROWS, SIZES[-1])).astype(np.float32)
    return x, y


def batches_of(x, y, batch_size):
    return [
        (x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]


@contextlib.contextmanager
def _heap_frozen():
    """The objects earlier tests left are moved out of the collector's reach.

    A full collection walks every live object: deep into the suite (half a
    million of them) it holds the interpreter for 0.3-0.5 s, one gap in the
    ticker that is the collector's, not jaxfit's (seen in CI). Frozen, the
    collector walks only what the fit itself allocates.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _trainer(seed=0, lr=0.05):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(lr),
        loss="mse",
        metrics=["mae"],
        seed=seed,
    )


async def _fit_async(trainer, call, x, y, batch_size, **kwargs):
    if call == "fit":
        return await trainer.fit_async(x, y, batch_size=batch_size, **kwargs)
    return await trainer.fit_dataset_async(batches_of(x, y, batch_size), **kwargs)


def _fit_sync(trainer, call, x, y, batch_size, **kwargs):
    if call == "fit":
        return trainer.fit(x, y, batch_size=batch_size, **kwargs)
    return trainer.fit_dataset(batches_of(x, y, batch_size), **kwargs)


class Recorder(jaxfit.callbacks.Callback):
    """Records each hook and the thread it ran on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _record(self, hook):
        self.calls.append((hook, threading.get_ident()))

    def on_train_begin(self, logs=None):
        self._record("on_train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._record("on_epoch_begin")

    def on_train_batch_begin(self, batch, logs=None):
        self._record("on_train_batch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self._record("on_train_batch_end")

    def on_yield(self, epoch, batch, logs=None):
        self._record("on_yield")

    def on_test_batch_end(self, batch, logs=None):
        self._record("on_test_batch_end")

    def on_epoch_end(self, epoch, logs=None):
        self._record("on_epoch_end")

    def on_train_end(self, logs=None):
        self._record("on_train_end")

    def hooks(self):
        return [hook for hook, _ in self.calls]


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
def test_the_event_loop_keeps_running_through_compile_and_training(call):
    x, y = heavy_data()
    trainer = jaxfit.Trainer(  # fresh: its train step compiles inside the fit
        mlp_apply, mlp_params(), optimizer=optax.adam(1e-3), loss="mse"
    )
    compiled = len(_COMPILE_S)
    gaps = []

    async def main():
        done = asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker starts before the fit
        start = time.perf_counter()
        history = await _fit_async(
            trainer, call, x, y, HEAVY_BATCH, epochs=HEAVY_EPOCHS, verbose=0
        )
        elapsed = time.perf_counter() - start
        done.set()
        await task
        return history, elapsed

    with _heap_frozen():
        history, elapsed = asyncio.run(main())
    assert history.epoch == list(range(HEAVY_EPOCHS))
    assert int(trainer.state.step) == HEAVY_EPOCHS * HEAVY_ROWS // HEAVY_BATCH
    assert len(_COMPILE_S) > compiled, "the train step compiled inside the fit"
    compile_s = max(_COMPILE_S[compiled:])
    summary = (
        f"{len(gaps)} ticks in {elapsed:.2f} s, max gap {max(gaps):.3f} s, "
        f"compile {compile_s:.2f} s"
    )
    assert len(gaps) >= max(15, 10 * elapsed), summary
    # no gap near the compile's length (a compile on the event loop's thread
    # would be one gap at least that long), and none of a second
    assert max(gaps) < max(0.25, compile_s / 2), summary
    assert max(gaps) < 1.0, summary


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
def test_the_history_and_params_are_those_of_fit(call):
    kwargs = dict(epochs=3, verbose=0)  # yield_every="auto", on the real clock
    if call == "fit":
        kwargs["validation_split"] = 0.25
    else:
        kwargs["validation_data"] = regression_data(n=8, seed=2)
    x, y = regression_data(n=40)
    expected_trainer, trainer = _trainer(seed=3), _trainer(seed=3)
    expected = _fit_sync(expected_trainer, call, x, y, 8, **kwargs)
    history = asyncio.run(_fit_async(trainer, call, x, y, 8, **kwargs))
    assert history is trainer.history
    assert history.epoch == expected.epoch
    assert history.params == expected.params
    assert list(history.history) == list(expected.history)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, err_msg=key)
    assert int(trainer.state.step) == int(expected_trainer.state.step)
    for got, want in zip(
        jax.tree.leaves(trainer.params), jax.tree.leaves(expected_trainer.params)
    ):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "call,where", [("fit", "main thread"), ("fit_dataset", "another thread")]
)
def test_callbacks_run_on_the_event_loops_thread(call, where):
    x, y = regression_data(n=40)
    trainer = _trainer()
    recorder = Recorder()
    loop_thread = []

    async def main():
        loop_thread.append(threading.get_ident())
        validation = (
            dict(validation_split=0.25)
            if call == "fit"
            else dict(validation_data=regression_data(n=8, seed=2))
        )
        await _fit_async(
            trainer,
            call,
            x,
            y,
            4,
            epochs=2,
            yield_every="batch",
            callbacks=[recorder],
            verbose=0,
            **validation,
        )

    if where == "main thread":
        asyncio.run(main())
    else:
        errors = []

        def run():
            try:
                asyncio.run(main())
            except BaseException as error:  # noqa: BLE001 - raised below
                errors.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
        if errors:
            raise errors[0]
        assert loop_thread[0] != threading.get_ident()
    hooks = set(recorder.hooks())
    assert hooks >= {
        "on_train_begin",
        "on_epoch_begin",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_yield",
        "on_test_batch_end",
        "on_epoch_end",
        "on_train_end",
    }
    threads = {(hook, ident) for hook, ident in recorder.calls}
    assert threads == {(hook, loop_thread[0]) for hook in hooks}


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
def test_cancelling_the_task_ends_the_fit_and_the_trainer_fits_again(call):
    x, y = regression_data(n=40)
    trainer = _trainer()
    recorder = Recorder()
    epochs = 1000

    async def main():
        reached = asyncio.Event()

        def on_train_batch_end(batch, logs=None):
            if batch == 3 and len(trainer.history.epoch) == 1:  # epoch 1, batch 3
                reached.set()

        task = asyncio.create_task(
            _fit_async(
                trainer,
                call,
                x,
                y,
                4,
                epochs=epochs,
                yield_every="batch",
                callbacks=[recorder, {"on_train_batch_end": on_train_batch_end}],
                verbose=0,
            )
        )
        await asyncio.wait_for(reached.wait(), timeout=60)
        assert trainer.session.running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert not trainer.session.running  # at once, not later
        hooks = recorder.hooks()
        assert hooks.count("on_train_begin") == hooks.count("on_train_end") == 1
        assert hooks[-1] == "on_train_end"
        assert trainer.history.epoch == [0]
        assert 14 <= int(trainer.state.step) < 10 * epochs
        # the trainer fits again, from where the cancelled fit left its state
        step = int(trainer.state.step)
        again = await _fit_async(trainer, call, x, y, 4, epochs=2, verbose=0)
        assert again.epoch == [0, 1]
        assert int(trainer.state.step) == step + 20
        return step

    step = asyncio.run(main())
    assert not trainer.session.running
    history = _fit_sync(trainer, call, x, y, 4, epochs=1, verbose=0)
    assert history.epoch == [0]
    assert int(trainer.state.step) == step + 30


def _gated_trainer():
    """A trainer whose model's first trace (inside fit_async's set-up, on a worker
    thread) waits for ``gate``; ``entered`` says it has begun."""
    entered, gate = threading.Event(), threading.Event()
    traces = itertools.count()

    def apply(params, x):
        if next(traces) == 0:
            entered.set()
            gate.wait(timeout=30)
        return linear_apply(params, x)

    trainer = jaxfit.Trainer(
        apply, linear_params(), optimizer=optax.sgd(0.01), loss="mse"
    )
    return trainer, entered, gate


def _open_later(gate):
    """Sets ``gate`` in half a second: a cancel that waits for the set-up to end
    (and so for the gate) returns then; one that does not returns at once."""
    timer = threading.Timer(0.5, gate.set)
    timer.daemon = True
    timer.start()


@pytest.mark.parametrize("call", ["fit"])
def test_cancelling_before_training_began_leaves_a_trainer_that_fits(call):
    x, y = regression_data(n=40)
    trainer, entered, gate = _gated_trainer()

    async def main():
        task = asyncio.create_task(_fit_async(trainer, call, x, y, 4, verbose=0))
        # the set-up is tracing the model
        assert await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        _open_later(gate)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not trainer.session.running

    try:
        asyncio.run(main())  # its end joins the default executor's threads
    finally:
        gate.set()
    history = _fit_sync(trainer, call, x, y, 4, epochs=2, verbose=0)
    assert history.epoch == [0, 1]
    assert int(trainer.state.step) == 20


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
def test_a_cancelled_call_changes_nothing_after_it_raised(call):
    x, y = regression_data(n=40)
    trainer, entered, gate = _gated_trainer()
    after = {}

    async def main():
        task = asyncio.create_task(_fit_async(trainer, call, x, y, 4, verbose=0))
        # the set-up is tracing the model
        assert await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        _open_later(gate)  # the set-up, if it goes on, goes on half a second later
        with pytest.raises(asyncio.CancelledError):
            await task
        after["history"], after["session"] = trainer.history, trainer.session

    try:
        asyncio.run(main())  # its end joins the default executor's threads
    finally:
        gate.set()
    assert trainer.history is after["history"]
    assert trainer.session is after["session"]


@pytest.mark.parametrize("second", ["fit_async", "fit_dataset_async", "fit"])
def test_a_second_fit_while_an_async_one_is_being_set_up_is_refused(second):
    # the first call's plan is being made on a worker thread (the fit has not
    # started yet) when the second comes
    x, y = regression_data(n=40)
    trainer = _trainer()

    async def again():
        if second == "fit":  # a sync fit called on the event loop's thread
            return _fit_sync(trainer, "fit", x, y, 4, epochs=2, verbose=0)
        call = second.removesuffix("_async")
        return await _fit_async(trainer, call, x, y, 4, epochs=2, verbose=0)

    async def main():
        return await asyncio.gather(
            _fit_async(trainer, "fit", x, y, 4, epochs=2, verbose=0),
            again(),
            return_exceptions=True,
        )

    first, refused = asyncio.run(main())
    assert isinstance(refused, RuntimeError), refused
    assert "not re-entrant" in str(refused)
    assert first.epoch == [0, 1]
    assert first is trainer.history
    assert int(trainer.state.step) == 20
    assert not trainer.session.running
    assert _fit_sync(trainer, "fit", x, y, 4, epochs=1, verbose=0).epoch == [0]


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "call,hook", [("fit", "on_train_batch_end"), ("fit_dataset", "on_epoch_end")]
)
def test_an_exception_in_a_callback_propagates(call, hook):
    x, y = regression_data(n=40)
    trainer = _trainer()
    recorder = Recorder()

    def fail(*args, logs=None):
        del args, logs
        raise Boom(hook)

    async def main():
        with pytest.raises(Boom, match=hook):
            await _fit_async(
                trainer,
                call,
                x,
                y,
                4,
                epochs=3,
                yield_every="batch",
                callbacks=[recorder, {hook: fail}],
                verbose=0,
            )
        assert not trainer.session.running
        assert recorder.hooks()[-1] == "on_train_end"
        again = await _fit_async(trainer, call, x, y, 4, epochs=1, verbose=0)
        assert again.epoch == [0]

    asyncio.run(main())


# (call, keyword arguments or data change, error, message)
BAD = [
    ("fit", dict(batch_size=0), ValueError, "batch_size: expected a positive"),
    ("fit", dict(epochs=-1), ValueError, "epochs"),
    ("fit", dict(yield_every="sometimes"), ValueError, "yield_every: expected"),
    ("fit", dict(validation_steps=2), ValueError, "validation_steps"),
    ("fit", dict(epoch=2), TypeError, "epoch"),
    ("fit", dict(rows=5), ValueError, "expected the same number of samples"),
    ("fit_dataset", dict(yield_every=-5), ValueError, "yield_every: expected"),
    ("fit_dataset", dict(validation_batches=2), ValueError, "validation_batches"),
    ("fit_dataset", dict(batch_size=4), TypeError, "batch_size"),
]


@pytest.fixture(scope="module")
def untrained():
    return _trainer()  # shared: no case trains it


@pytest.mark.parametrize("call,kwargs,error,match", BAD)
def test_a_bad_argument_raises_before_training(
    call, kwargs, error, match, untrained, compiles
):
    x, y = regression_data(n=40)
    trainer = untrained
    recorder = Recorder()
    kwargs = dict(kwargs)
    rows = kwargs.pop("rows", None)
    compiles.reset()

    async def main():
        with pytest.raises(error, match=match):
            if call == "fit":
                await trainer.fit_async(
                    x,
                    y[:rows],
                    callbacks=[recorder],
                    verbose=0,
                    **kwargs,
                )
            else:
                await trainer.fit_dataset_async(
                    batches_of(x, y, 4), callbacks=[recorder], verbose=0, **kwargs
                )

    asyncio.run(main())
    assert recorder.calls == []  # not even on_train_begin
    assert compiles.named("train_block") == 0
    assert not trainer.session.running
    assert trainer.history is None
    assert int(trainer.state.step) == 0
