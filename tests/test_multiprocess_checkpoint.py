"""Checkpoints written by two processes (subprocesses running ``ckpt_worker.py``,
two CPU devices each, ``jax.distributed`` on localhost): each process writes the
shards it holds, process 0 renames the checkpoint into place once both have
written, and neither process's save returns before that."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip(
    "orbax.checkpoint", reason="checkpoints are the optional ckpt extra"
)

WORKER = os.path.join(os.path.dirname(__file__), "ckpt_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_write_one_checkpoint_in_place_before_returning(tmp_path):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    port = _free_port()
    logs = [tmp_path / f"stderr-{rank}.txt" for rank in (0, 1)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w", encoding="utf-8") as err:
            procs.append(
                subprocess.Popen(
                    [sys.executable, WORKER, str(port), str(rank), str(tmp_path)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    deadline = time.monotonic() + 60
    try:  # until both end, one fails (the other would wait at a barrier) or timeout
        while time.monotonic() < deadline and not any(proc.poll() for proc in procs):
            if all(proc.poll() == 0 for proc in procs):
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text(encoding="utf-8")[-3000:]
    results = []
    for rank in (0, 1):
        with open(tmp_path / f"result-{rank}.json", encoding="utf-8") as f:
            results.append(json.load(f))
    assert results[0]["history"] == results[1]["history"]
    for result in results:
        # Seen by each process the moment BackupAndRestore's hook returned: that
        # epoch's backup complete, the one before the previous already pruned by
        # process 0 (the two newest are kept: the previous is the fallback).
        assert result["backups"] == [
            [[f"backup-{e}" for e in range(max(0, n - 1), n + 1)], True]
            for n in range(3)
        ]
        # The background ModelCheckpoint was in place (and pruned) when fit ended.
        assert result["trained"] == ["backup", "mc-3"]
        assert result["background_step"] == 12
        # The moment trainer.save returned: in place, no staging sibling left.
        assert result["saved"] == ["backup", "ckpt", "mc-3"]
        assert result["save_complete"]
        # Both processes' halves of the params were on disk: the load read the
        # whole arrays, and each process got back exactly the shards it had.
        assert result["restored_equal"] and result["step"] == 12
