"""A stream cannot hang a session (issue 22, bullet 6): Ctrl-C interrupts a blocked
producer at once and the trainer stays usable; ``producer_timeout`` turns a producer
that gives nothing into a one-line ``TimeoutError`` naming the batch it waited for.

Every wait here is bounded (subprocess and queue timeouts), so a regression fails
instead of hanging the suite.
"""

import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params

import jaxfit

B = (np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32))
TIMEOUT = 0.2  # producer_timeout of the cases below, in seconds

# The child: three Ctrl-Cs while a producer blocks (in the feeder thread, on the
# first batch, inside __next__), each caught and timed, a fit that then trains,
# and a last one, in validation, left uncaught: the process must end with it.
CHILD = r"""
import threading, time
import numpy as np, optax, jaxfit

B = (np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32))
trainer = jaxfit.Trainer(lambda p, x: x @ p["w"], {"w": np.zeros((3, 1), np.float32)},
                         optimizer=optax.sgd(0.1), loss="mse")

def say(text):
    print(text, flush=True)

def sleeps_after(count):
    def batches():
        yield from [B] * count
        say("blocked")
        time.sleep(1e9)
    return batches

class WaitsInNext:  # blocks inside __next__, on an event nobody sets
    def __iter__(self):
        return self
    def __next__(self):
        say("blocked")
        threading.Event().wait()

def interrupted(call):
    try:
        call()
    except KeyboardInterrupt:
        say(f"interrupted {time.monotonic()}")
        return
    say("not interrupted")

trainer.fit_dataset([B] * 2, verbose=0)  # compiled, so every Ctrl-C lands in
trainer.evaluate_dataset([B] * 2)  # a wait, never inside a compilation
interrupted(lambda: trainer.fit_dataset(sleeps_after(3), epochs=2, verbose=0))
interrupted(lambda: trainer.fit_dataset(WaitsInNext(), verbose=0))
interrupted(lambda: trainer.evaluate_dataset(sleeps_after(2)))
step = int(trainer.state.step)
trainer.fit_dataset([B] * 3, verbose=0)
say(f"trained {int(trainer.state.step) - step}")
trainer.fit_dataset([B], validation_data=sleeps_after(1), verbose=0)
say("not interrupted")
"""


def test_ctrl_c_interrupts_a_blocked_producer_at_once(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line.strip()) for line in proc.stdout], daemon=True
    ).start()

    def expect(word, timeout):
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            pytest.fail(
                f"no {word!r} line in {timeout} s; stderr: {proc.stderr.read()}"
            )
        assert line.startswith(word), line
        return line

    def interrupt():
        # well inside the wait, also on a loaded machine (the CI's two test
        # workers on two cores): after "blocked" the main thread still trains
        # the batches before it; a Ctrl-C that lands there is not this test's case
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        return time.monotonic()

    try:
        for _ in range(3):
            expect("blocked", 120)
            sent = interrupt()
            caught = float(expect("interrupted", 10).split()[1])
            assert caught - sent < 1.5
        assert expect("trained", 60) == "trained 3"  # usable after each
        expect("blocked", 60)
        sent = interrupt()
        _, err = proc.communicate(timeout=15)  # ends, not hangs
        assert time.monotonic() - sent < 5  # measured: 0.5 s, the shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err[-2000:]
    assert lines.empty()


class Stall:
    """Batches, then waits on ``release`` (inside the generator) before the next."""

    def __init__(self, count):
        self.count, self.release = count, threading.Event()

    def __call__(self):
        yield from [B] * self.count
        self.release.wait(30)
        yield B


def _trainer():
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )


TIMEOUT_CASES = [
    # (id, batches before the stall, call, the batch the message names)
    (
        "epoch_batch",
        3,
        lambda t, s: t.fit_dataset(s, producer_timeout=TIMEOUT, verbose=0),
        "dataset batch 3 of epoch 0",
    ),
    (
        "first_batch",
        0,
        lambda t, s: t.fit_dataset(s, producer_timeout=TIMEOUT, verbose=0),
        "dataset batch 0 of epoch 0",
    ),
    (
        "initial_epoch",
        0,
        lambda t, s: t.fit_dataset(
            s, epochs=3, initial_epoch=2, producer_timeout=TIMEOUT, verbose=0
        ),
        "dataset batch 0 of epoch 2",
    ),
    (
        "continued_stream",
        7,
        lambda t, s: t.fit_dataset(
            s(), steps_per_epoch=3, epochs=4, producer_timeout=TIMEOUT, verbose=0
        ),
        "dataset batch 1 of epoch 2",
    ),
    (
        "validation_stream",
        2,
        lambda t, s: t.fit_dataset(
            [B], validation_data=s, producer_timeout=TIMEOUT, verbose=0
        ),
        "validation_data batch 2",
    ),
    (
        "evaluate_dataset",
        5,
        lambda t, s: t.evaluate_dataset(s, producer_timeout=TIMEOUT),
        "dataset batch 5",
    ),
]


@pytest.mark.parametrize(
    "count,call,where",
    [c[1:] for c in TIMEOUT_CASES],
    ids=[c[0] for c in TIMEOUT_CASES],
)
def test_producer_timeout_names_the_batch_it_waited_for(count, call, where):
    before = set(threading.enumerate())
    trainer, stall = _trainer(), Stall(count)
    start = time.perf_counter()
    with pytest.raises(TimeoutError) as info:
        call(trainer, stall)
    waited = time.perf_counter() - start
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"producer_timeout: expected {where} (0-based) within")
    assert f"within {TIMEOUT:g} s" in message and "no batch after" in message
    assert TIMEOUT <= waited < TIMEOUT + 10  # not the whole stall (30 s)
    assert not trainer.session.running
    trainer.fit_dataset([B], verbose=0)  # usable at once
    stall.release.set()  # the producer returns: its thread ends by itself
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) <= before


def test_a_slow_producer_within_the_timeout_trains_every_batch():
    def slow():
        for _ in range(4):
            time.sleep(0.05)  # each wait is well within the timeout, their sum not
            yield B

    trainer = _trainer()
    trainer.fit_dataset(slow, epochs=2, producer_timeout=0.15, verbose=0)
    assert int(trainer.state.step) == 8


BAD_TIMEOUTS = [0, -1.0, math.nan, True, "1", [1.0]]


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize("call", ["fit_dataset", "evaluate_dataset"])
def test_a_bad_producer_timeout_is_refused_before_anything_runs(value, call, compiles):
    trainer = _trainer()
    params = [np.array(leaf) for leaf in jax.tree.leaves(trainer.params)]
    read = []

    def batches():
        read.append(1)
        yield B

    compiles.reset()
    kwargs = {"verbose": 0} if call == "fit_dataset" else {}
    with pytest.raises(ValueError) as info:
        getattr(trainer, call)(batches, producer_timeout=value, **kwargs)
    message = str(info.value)
    assert message.startswith("producer_timeout: expected a positive number")
    assert "\n" not in message
    assert compiles.count == 0 and not read and int(trainer.state.step) == 0
    for before, after in zip(params, jax.tree.leaves(trainer.params), strict=True):
        assert before.tobytes() == np.asarray(after).tobytes()


def test_the_runner_sees_producer_timeout_as_a_fit_dataset_argument():
    assert "producer_timeout" in jaxfit.StreamFitArgs.__dataclass_fields__
    assert jaxfit.StreamFitArgs(producer_timeout=2.5).producer_timeout == 2.5
    with pytest.raises(ValueError, match="producer_timeout"):
        jaxfit.StreamFitArgs(producer_timeout=0)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT by os.kill is POSIX")
def test_an_in_process_interrupt_while_waiting_leaves_no_hung_feeder():
    """The same as the subprocess test, inside pytest: Ctrl-C (through Python's
    own handler) while the loop waits for a blocked producer."""
    import _thread

    before = set(threading.enumerate())
    release, blocked = threading.Event(), threading.Event()

    def batches():
        yield from [B] * 3
        blocked.set()
        release.wait(30)

    def ctrl_c():
        blocked.wait(30)
        time.sleep(0.2)
        _thread.interrupt_main(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    trainer = _trainer()
    try:
        threading.Thread(target=ctrl_c, daemon=True).start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            trainer.fit_dataset(batches, epochs=2, verbose=0)
        assert time.perf_counter() - start < 15
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
    assert not trainer.session.running
    trainer.fit_dataset([B], verbose=0)
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) <= before
