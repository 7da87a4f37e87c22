"""Yield points, fused blocks and per-batch logs, driven by a fake clock.

The policy's own tests (``YieldPolicy`` / ``parse``) drive it with a fake clock
and a simulated device, the way the train loop drives it: size a block, dispatch
it, wait for the first one (to measure), sync and reset at each yield point.
The fit-level tests go through ``Trainer.fit``'s ``now=``.
"""

import itertools
import math

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit
from jaxfit._src.driver import yield_policy

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


def _still_trainer():
    """A linear model that does not move (sgd(0)): its logs are known in numpy."""
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.0),
        loss="mse",
        metrics=["mae"],
    )


def _fit(yield_every, now=None, n=10, batch_size=4, epochs=2):
    x, y = regression_data(n=n)
    trainer = _still_trainer()
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


def _still():
    return 0.0


def _crawling():
    ticks = itertools.count()
    return lambda: next(ticks) * 1000.0


def _ticking():
    ticks = itertools.count()
    return lambda: next(ticks) * 0.010


# (clock factory, the yield points of each epoch of 10 batches, or None: not pinned)
CLOCKS = {
    # time never passes: steps look instantaneous, so blocks fill up and no yield
    # point comes inside an epoch, only the epoch end's on_yield
    "still": (lambda: _still, [9]),
    # 1000 s pass at every read: every step is longer than the interval, so every
    # block is one step and a yield point (as "batch"), and nothing is left over
    # for the epoch end
    "crawling": (_crawling, list(range(10))),
    # 10 ms a read: somewhere in between (how many depends on how often the loop
    # reads the clock, which is not pinned)
    "ticking": (_ticking, None),
}


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
@pytest.mark.parametrize("clock", list(CLOCKS))
def test_yield_points_follow_the_injected_clock(clock, call):
    make_clock, expected = CLOCKS[clock]
    x, y = regression_data(n=40)
    trainer = _still_trainer()
    recorder = Recorder()
    common = dict(
        epochs=2, yield_every=25, callbacks=[recorder], verbose=0, now=make_clock()
    )
    if call == "fit":
        trainer.fit(x, y, batch_size=4, shuffle=False, **common)
    else:
        batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 40, 4)]
        trainer.fit_dataset(batches, **common)
    events = recorder.events
    cut = events.index(("epoch_end", 0)) + 1
    assert events[-1] == ("epoch_end", 1)
    for epoch, part in enumerate((events[:cut], events[cut:])):
        # every batch is delivered once, in order, begin before end
        batch_events = [e[:2] for e in part if e[0] in ("begin", "end")]
        assert batch_events == [(k, b) for b in range(10) for k in ("begin", "end")]
        # each yield point reports the last batch delivered before it, and comes
        # after the batch hooks of the batches it delivered
        delivered = None
        yields = []
        for event in part:
            if event[0] == "end":
                delivered = event[1]
            elif event[0] == "yield":
                assert event[1] == epoch
                assert event[2] == delivered
                yields.append(event[2])
        assert yields, "the epoch's last batches reach a yield point"
        assert yields[-1] == 9  # nothing is delivered after the last yield point
        assert part[-2:] == [("yield", epoch, 9), ("epoch_end", epoch)]
        assert len(set(yields)) == len(yields)
        if expected is not None:
            assert yields == expected
    assert int(trainer.state.step) == 20


def test_an_infinite_interval_never_yields_inside_an_epoch():
    # parse accepts math.inf ("a number of milliseconds >= 0"), as the old policy
    # did, which then never yielded inside an epoch (as 1e9 does)
    events, _ = _fit(math.inf, n=40)
    kinds = [e[0] for e in events]
    assert kinds[: kinds.index("epoch_end") + 1] == ["begin", "end"] * 10 + [
        "yield",
        "epoch_end",
    ]


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


# -- the policy itself, on a fake clock ---------------------------------------------


class Clock:
    """A fake clock: ``t`` seconds, advanced by hand."""

    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def _policy(yield_every, capacity=64, processes=1):
    clock = Clock()
    policy = yield_policy.parse(yield_every, now=clock, processes=processes)
    policy.capacity = capacity
    return policy, clock


def _measured(yield_every, step_s, capacity=64):
    """A policy whose first block (one step of ``step_s``) was measured."""
    policy, clock = _policy(yield_every, capacity)
    policy.reset()
    policy.dispatched(1)
    clock.t += step_s
    policy.synced()
    return policy, clock


def _simulate(policy, clock, step_s, num_steps, host_s=0.0):
    """Drives ``policy`` as the train loop does over ``num_steps`` steps on a fake
    device that runs step ``i`` in ``step_s(i)`` seconds, one block after the
    other, while the host takes ``host_s`` to dispatch a block and otherwise only
    waits at syncs. Returns the blocks' sizes, the steps run at each yield point,
    and the block size the policy asked for after each yield point."""
    policy.reset()
    free = clock.t  # when the device has run everything dispatched
    blocks, yields, asked = [], [], []
    done = 0
    while done < num_steps:
        n = min(policy.block_steps(), num_steps - done)
        clock.t += host_s
        free = max(free, clock.t) + sum(step_s(i) for i in range(done, done + n))
        done += n
        policy.dispatched(n)
        blocks.append(n)
        if policy.measuring():  # the first block: the loop waits for it
            clock.t = max(clock.t, free)
            policy.synced()
        if policy.due():  # a yield point: wait for the device, then start again
            clock.t = max(clock.t, free)
            policy.synced()
            yields.append(done)
            policy.reset()
            asked.append(policy.block_steps())
    return blocks, yields, asked


def _constant(seconds):
    return lambda i: seconds


# (yield_every, every_ms, per_batch)
PARSED = [
    ("auto", 125.0, False),
    ("batch", 0.0, True),
    ("epoch", None, False),
    ("never", None, False),
    (50, 50.0, False),
    (0, 0.0, False),
    (12.5, 12.5, False),
    (np.float64(20.0), 20.0, False),
]
REFUSED = ["sometimes", "", "50", -1, -0.5, math.nan, True, None, [50]]


@pytest.mark.parametrize("yield_every,every_ms,per_batch", PARSED)
@pytest.mark.parametrize("processes", [1, 4])
def test_parse(yield_every, every_ms, per_batch, processes):
    clock = Clock()
    policy = yield_policy.parse(yield_every, now=clock, processes=processes)
    assert policy.every_ms == every_ms
    assert policy.per_batch is per_batch
    assert policy.shared is (processes > 1)
    assert policy.now is clock
    assert policy.step_s is None


@pytest.mark.parametrize("yield_every", REFUSED)
def test_parse_refuses_what_is_not_an_interval(yield_every):
    with pytest.raises(ValueError, match=r"^yield_every: expected one of 'auto'"):
        yield_policy.parse(yield_every)


def test_the_first_block_measures():
    policy, clock = _policy("auto", capacity=64)
    policy.reset()
    assert policy.measuring()
    assert policy.block_steps() == 1
    assert not policy.due()  # no estimate: the first sync only measures
    policy.dispatched(1)
    clock.t += 0.004
    policy.synced()
    assert not policy.measuring()
    assert policy.step_s == pytest.approx(0.004)
    assert policy.sample() == pytest.approx(0.004)
    assert policy.block_steps() == 31  # round(125 / 4)


def test_a_compile_inside_a_call_is_not_a_step():
    policy, clock = _policy("auto")
    policy.reset()
    clock.t += 5.0  # the call compiles its program for 5 s, then dispatches
    policy.dispatched(1, compiled=True)
    clock.t += 0.010  # the step itself
    policy.synced()
    assert policy.step_s == pytest.approx(0.010)
    # without the flag the compile would count as the step's time
    policy, clock = _policy("auto")
    policy.reset()
    clock.t += 5.0
    policy.dispatched(1)
    clock.t += 0.010
    policy.synced()
    assert policy.step_s == pytest.approx(5.010)


def test_fast_steps_fill_blocks_and_yield_about_once_an_interval():
    policy, clock = _measured("auto", 0.001, capacity=16)
    assert policy.block_steps() == 16  # 125 steps would fit: the capacity bounds it
    policy.reset()
    for k in range(1, 12):  # blocks of 16 ms of work: no clock time passes
        policy.dispatched(16)
        # due once the work dispatched since the last yield point is within half
        # a block of the interval
        assert policy.due() == (16 * k + 8 >= 125), k
    blocks, yields, _ = _simulate(policy, clock, _constant(0.001), 1000)
    assert set(blocks[:-1]) == {16}
    assert 6 <= len(yields) <= 8  # about 1000 ms / 125 ms
    for before, after in zip([0, *yields], yields):
        # the device's time between yield points: the interval, +- half a block
        assert 0.125 - 0.008 <= (after - before) * 0.001 <= 0.125 + 0.008


def test_a_fresh_policy_on_fast_steps():
    policy, clock = _policy("auto", capacity=64)
    blocks, yields, _ = _simulate(policy, clock, _constant(0.0005), 2000)
    assert blocks[0] == 1  # measures
    assert set(blocks[1:-1]) == {64}  # then capacity-limited
    assert 6 <= len(yields) <= 9  # about 1000 ms / 125 ms


def test_slow_steps_yield_after_every_block_of_one():
    policy, clock = _policy("auto", capacity=64)
    blocks, yields, _ = _simulate(policy, clock, _constant(0.2), 20)
    assert blocks == [1] * 20
    assert yields == list(range(1, 21))


def test_the_estimate_follows_a_change_of_step_time():
    policy, clock = _policy("auto", capacity=64)
    change = 600

    def step_s(i):
        return 0.001 if i < change else 0.040

    blocks, yields, asked = _simulate(policy, clock, step_s, 800)
    starts = np.cumsum([0, *blocks[:-1]])
    fast = [n for n, s in zip(blocks[1:], starts[1:]) if s + n <= change]
    assert fast and set(fast[:-1]) == {64}  # capacity-limited while fast
    # after the change: a few syncs adapt it, to round(125 / 40) = 3 steps a block
    after = [a for a, at in zip(asked, yields) if at > change]
    assert 3 in after[:4], after
    settled = after[after.index(3) :]
    assert set(settled) == {3}
    assert set(blocks[-20:-1]) == {3}  # the last one: what was left
    assert policy.step_s == pytest.approx(0.040, rel=0.1)


def test_an_interval_in_milliseconds():
    policy, clock = _policy(50, capacity=64)
    blocks, yields, _ = _simulate(policy, clock, _constant(0.020), 100)
    assert blocks[0] == 1
    assert set(blocks[1:-1]) <= {2, 3}  # about 50 ms of 20 ms steps
    # a yield point after every block but the measuring one (and the last, of one
    # step: the epoch's end takes it)
    assert blocks[-1] == 1
    assert yields == [int(n) for n in np.cumsum(blocks)[1:-1]]


def test_the_batch_policy_yields_after_every_one_step_block():
    policy, _clock = _policy("batch", capacity=64)
    assert not policy.measuring()
    policy.reset()
    for _ in range(5):
        assert policy.block_steps() == 1
        policy.dispatched(1)
        assert policy.due()  # no measurement needed, no time passed
        policy.synced()
        policy.reset()
    assert not policy.measuring()


@pytest.mark.parametrize("yield_every", ["epoch", "never"])
def test_epoch_and_never_run_whole_blocks_and_never_yield(yield_every):
    policy, clock = _policy(yield_every, capacity=32)
    policy.reset()
    for _ in range(5):
        assert not policy.measuring()
        assert policy.block_steps() == 32
        policy.dispatched(32)
        clock.t += 1000.0  # however long it takes
        assert not policy.due()
        policy.synced()
    assert policy.step_s is None
    blocks, yields, _ = _simulate(policy, clock, _constant(0.5), 100)
    assert blocks == [32, 32, 32, 4]
    assert yields == []


def test_the_wall_clock_bounds_a_yield_when_the_host_is_slower():
    policy, clock = _measured(50, 0.001, capacity=8)
    policy.reset()
    # the device needs 8 ms a block, but the host takes 25 ms to dispatch one
    policy.dispatched(8)
    clock.t += 0.025
    assert not policy.due()  # 25 ms (+ half a block) < 50 ms
    policy.dispatched(8)
    clock.t += 0.025
    assert policy.due()  # 50 ms of wall time, although only 16 ms of work
    blocks, yields, _ = _simulate(policy, clock, _constant(0.001), 160, host_s=0.025)
    assert set(blocks) == {8}
    assert yields == list(range(16, 161, 16))  # every other block, not every 6th


def test_several_processes_ignore_the_clock_and_take_the_agreed_estimate():
    policy, clock = _policy(50, capacity=64, processes=4)
    assert policy.shared
    policy.reset()
    policy.dispatched(1)
    clock.t += 0.020
    policy.synced()
    # this process measured 20 ms, kept for agree(); the decisions wait for it
    assert policy.sample() == pytest.approx(0.020)
    assert policy.step_s is None
    assert policy.measuring()
    assert policy.block_steps() == 1
    assert not policy.due()
    policy.agree(0.0)  # no estimate from process 0 yet: ignored
    assert policy.step_s is None
    policy.agree(0.010)  # process 0's, not this process's
    assert policy.step_s == 0.010
    assert not policy.measuring()
    assert policy.block_steps() == 5
    policy.reset()
    policy.dispatched(1)
    clock.t += 100.0  # the clock says far more than an interval: not asked
    assert not policy.due()  # 10 ms of work + 25 ms (half a block) < 50 ms
    policy.dispatched(2)
    assert policy.due()  # 30 ms + 25 ms >= 50 ms: by counts only
    # more samples change this process's sample, never the agreed estimate
    policy.synced()
    assert policy.step_s == 0.010
    assert policy.sample() > 0.020


def test_one_process_agrees_with_nobody():
    policy, _ = _measured(50, 0.020)
    policy.agree(0.5)
    assert policy.step_s == pytest.approx(0.020)


def test_a_still_clock_makes_steps_instantaneous():
    policy, _clock = _measured(25, 0.0, capacity=64)
    assert policy.step_s == 0.0
    assert policy.block_steps() == 64
    policy.reset()
    for _ in range(10):
        policy.dispatched(64)
        assert not policy.due()
