"""Sweeps on a real Optuna: every trial is the run of its own config.

A tiny linear model on tiny data keeps each trial a fraction of a second. Packed
trials (values a population can vary) train as one group run; each trial's
objective and weights equal ``jaxfit run`` of its config; a grid runs each point
once; the median pruner freezes a member; a failing trial is recorded and the
sweep goes on; two workers on one storage (SQLite, and a PostgreSQL server when
Debian's package is there) finish exactly N trials between them; a SIGKILLed
sweep resumes without running a trial twice.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
from runner_helpers import run_cli, write_config
from sweep_helpers import base, read_json
from sweep_helpers import worker as _worker

import jaxfit

pytest.importorskip("optuna", reason="sweeps run on Optuna (the sweep extra)")


def _config(tmp_path, sweep, epochs=3, name="config.yaml"):
    return write_config(tmp_path, base(epochs) + sweep, name)


_json = read_json


def _sweep(config, workdir, **kwargs):
    return jaxfit.sweep(config, str(workdir), say=lambda *a: None, **kwargs)


TPE = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  trials: 6
  sampler: {name: tpe, seed: 1, args: {n_startup_trials: 3}}
  lanes: 4
  space:
    optimizer.learning_rate: {loguniform: [0.005, 0.5]}
"""


def test_packed_trials_equal_the_runs_of_their_configs(tmp_path, capsys):
    result = _sweep(_config(tmp_path, TPE), tmp_path / "sweeps")
    value = _json(os.path.join(result.sweep_dir, "sweep.json"))
    entries = value["trials_run"]
    assert [e["state"] for e in entries] == ["COMPLETE"] * 6
    # 6 trials, lanes 4: two group runs (populations of 4 and 2)
    groups = {e["group"] for e in entries}
    assert groups == {"group-000", "group-004"}
    best = min(entries, key=lambda e: e["objective"])
    assert result.best_value == best["objective"] == value["best"]["objective"]
    for entry in (best, entries[5]):
        trial_dir = os.path.join(result.sweep_dir, entry["run_dir"])
        plain = jaxfit.run(
            os.path.join(trial_dir, "config.yaml"), str(tmp_path / "plain")
        )
        history = _json(os.path.join(plain.run_dir, "history.json"))
        np.testing.assert_allclose(min(history["val_loss"]), entry["objective"], 1e-5)
        loaded = jaxfit.load_run(trial_dir)
        np.testing.assert_allclose(
            loaded.params["w"], plain.trainer.params["w"], rtol=1e-5, atol=1e-6
        )
        ours = _json(os.path.join(trial_dir, "history.json"))
        assert sorted(ours) == sorted(history) and ours["epoch"] == history["epoch"]
        for key in history:
            np.testing.assert_allclose(ours[key], history[key], rtol=1e-5, atol=1e-6)
    # best.yaml is the best trial's whole config, runnable as it is
    again = jaxfit.run(os.path.join(result.sweep_dir, "best.yaml"), str(tmp_path / "b"))
    assert min(again.history.history["val_loss"]) == pytest.approx(
        result.best_value, rel=1e-5
    )
    assert os.path.getsize(os.path.join(result.sweep_dir, "sweep.png")) > 1000
    capsys.readouterr()  # what the group runs printed
    code, out, _ = run_cli(capsys, "show", result.sweep_dir)
    lines = out.splitlines()
    assert code == 0 and lines[2] == "trials by val_loss (min):"
    shown = [float(line.split()[2]) for line in lines[3:9]]
    assert shown == sorted(shown)
    assert "best.yaml differs from the sweep's config in:" in out


GRID = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  sampler: grid
  lanes: 8
  space:
    optimizer.learning_rate: {choice: [0.02, 0.1, 0.3]}
    fit.batch_size: {choice: [8, 16]}
"""


def test_a_grid_runs_every_point_once_grouped_by_what_cannot_pack(tmp_path):
    result = _sweep(_config(tmp_path, GRID, epochs=2), tmp_path / "sweeps")
    entries = _json(os.path.join(result.sweep_dir, "sweep.json"))["trials_run"]
    points = sorted(
        (e["params"]["optimizer.learning_rate"], e["params"]["fit.batch_size"])
        for e in entries
    )
    assert points == sorted((r, b) for r in (0.02, 0.1, 0.3) for b in (8, 16))
    assert all(e["state"] == "COMPLETE" for e in entries)
    by_group = {}
    for e in entries:  # the batch size is a shape: one group per batch size
        by_group.setdefault(e["group"], set()).add(e["params"]["fit.batch_size"])
    assert len(by_group) == 2 and all(len(s) == 1 for s in by_group.values())


PRUNED = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  trials: 5
  sampler: {name: random, seed: 3}
  pruner: {name: median, args: {n_startup_trials: 1, n_warmup_steps: 0}}
  lanes: 1
  space:
    optimizer.learning_rate: {loguniform: [0.0001, 0.3]}
"""


def test_the_pruner_freezes_a_trial_and_the_sweep_goes_on(tmp_path):
    result = _sweep(_config(tmp_path, PRUNED, epochs=4), tmp_path / "sweeps")
    entries = _json(os.path.join(result.sweep_dir, "sweep.json"))["trials_run"]
    pruned = [e for e in entries if e["state"] == "PRUNED"]
    assert pruned and len(entries) == 5
    for entry in pruned:
        trial_dir = os.path.join(result.sweep_dir, entry["run_dir"])
        metrics = _json(os.path.join(trial_dir, "metrics.json"))
        history = _json(os.path.join(trial_dir, "history.json"))
        at = metrics["sweep"]["pruned_at"]
        assert len(history["epoch"]) == at + 1 < 4  # frozen after that epoch
        assert metrics["stop_reason"] == f"pruned after epoch {at + 1}"


FAILING = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  sampler: grid
  space:
    data.args.fail: {choice: [true, false]}
"""


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    result = _sweep(_config(tmp_path, FAILING, epochs=1), tmp_path / "sweeps")
    entries = _json(os.path.join(result.sweep_dir, "sweep.json"))["trials_run"]
    states = {e["params"]["data.args.fail"]: e for e in entries}
    assert states[True]["state"] == "FAIL" and states[True]["run_dir"] is None
    assert "this dataset is broken on purpose" in states[True]["error"]
    assert "\n" not in states[True]["error"]
    assert states[False]["state"] == "COMPLETE"
    assert result.best_params == {"data.args.fail": False}


# -- several processes -------------------------------------------------------------


def _postgres(tmp_path):
    """A PostgreSQL server of its own in ``tmp_path`` (Debian's package), or skip."""
    found = shutil.which("initdb") or next(
        iter(sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None
    )
    if found is None:
        pytest.skip("no PostgreSQL server here (Debian's postgresql package)")
    bindir = pathlib.Path(found).parent
    # a directory the server's user can reach (pytest's tmp_path is root's, 0700)
    data = pathlib.Path(tempfile.mkdtemp(prefix="jaxfit-pg-")) / "data"
    data.mkdir()
    prefix = []
    if os.geteuid() == 0:  # the server refuses root: run it as postgres
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "jaxfit",
            "--auth=trust",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data / "log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql://jaxfit@127.0.0.1:{port}/postgres", stop, data.parent


TWO = TPE.replace("trials: 6", "trials: 5").replace("lanes: 4", "lanes: 1")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_on_one_storage_finish_exactly_n_trials(tmp_path, backend):
    config = _config(tmp_path, TWO, epochs=2)
    stop = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url, stop, made = _postgres(tmp_path)
    try:
        workers = [_worker(config, tmp_path / "w", "--storage", url) for _ in range(2)]
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err[-2000:]
    finally:
        if stop is not None:
            subprocess.run(stop, capture_output=True)
            shutil.rmtree(made, ignore_errors=True)
    sweep_dir = tmp_path / "w" / "sw"
    entries = _json(sweep_dir / "sweep.json")["trials_run"]
    assert [e["number"] for e in entries] == list(range(5))
    assert all(e["state"] == "COMPLETE" for e in entries)
    trial_dirs = sorted(
        p.name for p in (sweep_dir / "trials").iterdir() if p.name != ".jaxfit"
    )
    assert trial_dirs == [f"{n:03d}" for n in range(5)]  # each once, no partial
    groups = sorted(p.name for p in (sweep_dir / "groups").glob("group-*-*"))
    assert len(groups) == 5  # no trial trained twice


def test_a_sigkilled_sweep_resumes_without_running_a_trial_twice(tmp_path):
    config = _config(tmp_path, TWO.replace("trials: 5", "trials: 2"), epochs=30)
    worker = _worker(config, tmp_path / "w")
    groups = tmp_path / "w" / "sw" / "groups"
    deadline = time.monotonic() + 120
    while not list(groups.glob("group-*-*/backup/*")):  # the first group trains
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()  # closes its pipe
    result = jaxfit.sweep(resume=str(tmp_path / "w" / "sw"), say=lambda *a: None)
    entries = _json(os.path.join(result.sweep_dir, "sweep.json"))["trials_run"]
    assert [(e["number"], e["state"], e["error"]) for e in entries] == [
        (n, "COMPLETE", None) for n in range(2)
    ]
    assert len(list(groups.glob("group-*-*"))) == 2  # the killed group resumed
    first = _json(groups.parent / "trials" / "000" / "history.json")
    assert first["epoch"] == list(range(30))  # every epoch once


def test_a_sweep_never_writes_into_a_directory_it_did_not_make(tmp_path, capsys):
    config = _config(tmp_path, GRID, epochs=1)
    theirs = tmp_path / "w" / "sw"  # the sweep directory's path, someone's already
    theirs.mkdir(parents=True)
    (theirs / "canary.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_cli(capsys, "sweep", config, "--workdir", str(tmp_path / "w"))
    assert code == 2 and "made by jaxfit" in err
    code, _, err = run_cli(capsys, "sweep", "--resume", str(theirs))
    assert code == 2 and err.startswith("jaxfit sweep: --resume: expected a sweep")
    assert sorted(p.name for p in theirs.iterdir()) == ["canary.txt"]
    assert (theirs / "canary.txt").read_text(encoding="utf-8") == "mine"
