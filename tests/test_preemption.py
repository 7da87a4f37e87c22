"""Preemption: SIGTERM while ``fit`` / ``fit_dataset`` train stops at the next step
boundary (a fused block's end) with a backup of that exact position, one line on
stderr and ``Preempted`` (a ``SystemExit``, status 143); rerunning the same fit with
the same BackupAndRestore resumes bit-identical to an uninterrupted run.

In-process tests send SIGTERM to this process from a callback (jaxfit's handler
records it while ``fit`` runs); subprocess tests run this file as a worker
(``python test_preemption.py worker ...``) and are signalled from inside and from
outside (``kill -TERM``); the multi-process test runs two workers under
``jax.distributed`` and preempts one of them.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
from jaxfit._src.driver import preemption

pytest.importorskip(
    "orbax.checkpoint", reason="BackupAndRestore is the optional ckpt extra"
)

N, BATCH, EPOCHS = 96, 12, 4  # 8 batches an epoch
STEPS = N // BATCH


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    return x, y


def _apply(params, x, *, train, rng):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    if train:  # dropout: the rng stream must resume exactly too
        h = jnp.where(jax.random.bernoulli(rng, 0.9, h.shape), h / 0.9, 0.0)
    return h @ params["w2"]


def _trainer():
    rng = np.random.default_rng(1)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 8)) * 0.5, jnp.float32),
        "b1": jnp.zeros((8,), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(8, 1)) * 0.5, jnp.float32),
    }
    return jaxfit.Trainer(_apply, params, optimizer=optax.adam(0.02), loss="mse")


def _batches():
    x, y = _data()
    for start in range(0, N, BATCH):
        yield x[start : start + BATCH], y[start : start + BATCH]


def _fit(trainer, api, callbacks=(), yield_every="batch", epochs=EPOCHS):
    kwargs = dict(
        epochs=epochs, verbose=0, callbacks=list(callbacks), yield_every=yield_every
    )
    if api == "fit":
        x, y = _data()
        return trainer.fit(x, y, batch_size=BATCH, shuffle=True, **kwargs)
    return trainer.fit_dataset(_batches, **kwargs)


def _leaves(trainer):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(trainer.state)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)  # bit for bit


class _Counter(jaxfit.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class _SigtermAt(jaxfit.callbacks.Callback):
    """Sends SIGTERM to this process at (epoch, batch) end, or at an epoch's
    beginning (``batch=None``)."""

    def __init__(self, epoch, batch=None, check=True):
        super().__init__()
        self.at, self.epoch, self.check = (epoch, batch), None, check

    def _fire(self):
        if self.check:  # a handler is installed (jaxfit's): this process survives
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.at == (epoch, None):
            self._fire()

    def on_train_batch_end(self, batch, logs=None):
        if self.at == (self.epoch, batch):
            self._fire()


_REFERENCE = {}


def _reference(api):
    if api not in _REFERENCE:
        trainer = _trainer()
        history = _fit(trainer, api)
        _REFERENCE[api] = (_leaves(trainer), history.history)
    return _REFERENCE[api]


# (api, yield_every, SIGTERM at (epoch, batch), where training stops)
CASES = [
    # each batch its own call: it stops right after the batch that follows
    ("fit", "batch", (1, 3), (1, 5)),
    ("fit_dataset", "batch", (2, 0), (2, 2)),
    # 'auto' fuses the (small) epoch into one block: it stops at that block's end
    ("fit", "auto", (2, None), (2, STEPS)),
    ("fit_dataset", "auto", (1, None), (1, STEPS)),
]


@pytest.mark.parametrize("api,yield_every,at,stopped", CASES)
def test_sigterm_stops_at_a_step_boundary_and_resumes_bit_identical(
    tmp_path, capsys, api, yield_every, at, stopped
):
    expected, expected_history = _reference(api)
    backup = jaxfit.callbacks.BackupAndRestore(tmp_path / "backup")
    trainer = _trainer()
    with pytest.raises(jaxfit.Preempted) as info:
        _fit(trainer, api, [_SigtermAt(*at), backup], yield_every)
    assert isinstance(info.value, SystemExit) and info.value.code == 143
    assert info.value.signum == signal.SIGTERM
    position = trainer.session.position
    assert (position.epoch, position.batch) == stopped
    assert not trainer.session.finished and not trainer.session.running
    # the trainer is usable, its state the state at the stop
    assert int(trainer.state.step) == stopped[0] * STEPS + stopped[1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == str(info.value)
    assert f"stopped at epoch {stopped[0]} after {stopped[1]} of its batches" in err[0]
    assert "BackupAndRestore(" in err[0] and "exit status 143" in err[0]
    assert os.listdir(tmp_path / "backup")  # kept for the rerun
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed

    counter = _Counter()
    rerun = _trainer()
    history = _fit(rerun, api, [counter, backup], yield_every)
    # it resumed from the exact stop: only the batches after it ran
    assert counter.batches == EPOCHS * STEPS - (stopped[0] * STEPS + stopped[1])
    _assert_same(_leaves(rerun), expected)
    assert history.history == expected_history
    assert not os.path.exists(tmp_path / "backup")  # a normal end removes it


def test_without_a_backup_the_trainer_stops_usable_and_says_nothing_was_saved(
    capsys,
):
    trainer = _trainer()
    with pytest.raises(jaxfit.Preempted) as info:
        _fit(trainer, "fit", [_SigtermAt(0, 2)])
    assert "nothing was saved (no BackupAndRestore)" in str(info.value)
    assert capsys.readouterr().err.count("\n") == 1
    assert int(trainer.state.step) == 4
    preemption.clear()
    _fit(trainer, "fit", epochs=1)  # trains on from the state at the stop
    assert int(trainer.state.step) == 4 + STEPS


def test_fit_async_is_preempted_too(tmp_path, capsys):
    trainer = _trainer()
    x, y = _data()
    with pytest.raises(jaxfit.Preempted):
        asyncio.run(
            trainer.fit_async(
                x,
                y,
                batch_size=BATCH,
                epochs=EPOCHS,
                verbose=0,
                yield_every="batch",
                callbacks=[_SigtermAt(1, 0)],
            )
        )
    assert int(trainer.state.step) == STEPS + 2
    assert "SIGTERM" in capsys.readouterr().err


def test_inside_an_outer_handler_fit_leaves_the_report_to_it(capsys):
    trainer = _trainer()
    with preemption.handling(), pytest.raises(jaxfit.Preempted):
        _fit(trainer, "fit", [_SigtermAt(0, 0)])
    assert capsys.readouterr().err == ""  # the runner prints its own line


def test_a_handler_of_the_users_keeps_sigterm():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        history = _fit(_trainer(), "fit", [_SigtermAt(0, 0)], epochs=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM] and history.epoch == [0]


# -- subprocesses: the process's own exit status -----------------------------------


def _worker(out, backup, mode, api="fit", yield_every="batch", env=None, wait=True):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "worker",
        str(out),
        str(backup),
        mode,
        api,
        yield_every,
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    if not wait:
        return proc
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _stop_line(err):
    lines = [line for line in err.splitlines() if line.startswith("jaxfit: SIGTERM")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _result(out):
    with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
        result = json.load(f)
    return result, [np.load(os.path.join(out, "state.npz"))[k] for k in result["keys"]]


def test_a_process_that_sigterms_itself_exits_143_and_resumes_bit_identical(
    tmp_path,
):
    expected, expected_history = _reference("fit")
    code, err = _worker(tmp_path / "a", tmp_path / "backup", "self:1:6")
    assert code == 143, err[-3000:]
    assert "stopped at epoch 1 after 8 of its batches" in _stop_line(err)
    code, err = _worker(tmp_path / "b", tmp_path / "backup", "none")
    assert code == 0, err[-3000:]
    result, state = _result(tmp_path / "b")
    assert result["batches"] == EPOCHS * STEPS - (STEPS + 8)
    _assert_same(state, expected)
    assert result["history"] == expected_history


def test_kill_term_from_outside_while_it_trains_stops_it_and_it_resumes(tmp_path):
    backup, out = tmp_path / "backup", tmp_path / "a"
    proc = _worker(out, backup, "slow", "fit_dataset", "auto", wait=False)
    deadline = time.monotonic() + 120
    while not os.path.exists(out / "training") and proc.poll() is None:
        assert time.monotonic() < deadline, "the worker never started training"
        time.sleep(0.05)
    subprocess.run(["kill", "-TERM", str(proc.pid)], check=True)  # a real kill
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    _stop_line(err)
    code, err = _worker(tmp_path / "b", backup, "slow-rerun", "fit_dataset", "auto")
    assert code == 0, err[-3000:]
    result, state = _result(tmp_path / "b")
    assert 0 < result["batches"] < SLOW_EPOCHS * STEPS  # resumed, not from scratch
    trainer = _trainer()
    history = _fit(trainer, "fit_dataset", yield_every="auto", epochs=SLOW_EPOCHS)
    _assert_same(state, _leaves(trainer))
    assert result["history"] == history.history


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("service", ["jax", "jaxfit"])
def test_two_processes_stop_at_the_same_step(tmp_path, service):
    """One process of two is preempted; both stop after the same train call
    (JAX's preemption sync, or without it the agreement at yield points)."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    port = _free_port()
    procs = [
        _worker(
            tmp_path / f"out-{rank}",
            tmp_path / "backup",
            f"multi:{port}:{rank}:{service}",
            env=env,
            wait=False,
        )
        for rank in (0, 1)
    ]
    try:
        errs = [proc.communicate(timeout=240)[1] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errs):
        assert proc.returncode == 143, err[-3000:]
    _stop_line(errs[0])  # process 0 reports
    stops = []
    for rank in (0, 1):
        with open(tmp_path / f"out-{rank}" / "stop.json", encoding="utf-8") as f:
            stops.append(json.load(f))
    assert stops[0] == stops[1], stops
    assert stops[0]["step"] > 0


# -- the worker --------------------------------------------------------------------

SLOW_EPOCHS = 40


class _Slow(jaxfit.callbacks.Callback):
    """Marks that training runs, then slows each epoch so a signal lands mid-run."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            open(os.path.join(self.out, "training"), "w").close()
        if epoch >= 1:
            time.sleep(0.05)


def _write(out, trainer, history, counter):
    leaves = jax.tree_util.tree_flatten_with_path(trainer.state)[0]
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    np.savez(
        os.path.join(out, "state.npz"),
        **{k: np.asarray(v) for k, (_, v) in zip(keys, leaves)},
    )
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(
            {"keys": keys, "batches": counter.batches, "history": history.history}, f
        )


def _multi(out, backup, port, rank, service):
    if service == "jaxfit":
        jax.config.update("jax_enable_preemption_service", False)
    jaxfit.distributed.initialize(f"localhost:{port}", 2, rank)
    trainer = _trainer()  # a 4-device data-parallel mesh over both processes
    # under JAX's service its C++ notifier takes SIGTERM (Python sees SIG_DFL)
    kill = _SigtermAt(1, 2, check=service == "jaxfit") if rank == 1 else None
    try:
        _fit(trainer, "fit", [kill] if kill else [], "batch", epochs=100)
    except jaxfit.Preempted:
        position = trainer.session.position
        with open(os.path.join(out, "stop.json"), "w", encoding="utf-8") as f:
            json.dump(
                {
                    "epoch": position.epoch,
                    "batch": position.batch,
                    "step": int(trainer.state.step),
                },
                f,
            )
        raise


def _main(out, backup, mode, api, yield_every):
    os.makedirs(out, exist_ok=True)
    if mode.startswith("multi:"):
        _, port, rank, service = mode.split(":")
        return _multi(out, backup, port, int(rank), service)
    counter = _Counter()
    callbacks = [counter, jaxfit.callbacks.BackupAndRestore(backup)]
    epochs = EPOCHS
    if mode.startswith("self:"):
        _, epoch, batch = mode.split(":")
        callbacks.insert(0, _SigtermAt(int(epoch), int(batch)))
    elif mode.startswith("slow"):
        epochs = SLOW_EPOCHS
        if mode == "slow":
            callbacks.insert(0, _Slow(out))
    trainer = _trainer()
    history = _fit(trainer, api, callbacks, yield_every, epochs=epochs)
    _write(out, trainer, history, counter)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _main(*sys.argv[2:7])
