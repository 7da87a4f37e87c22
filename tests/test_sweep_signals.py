"""Ctrl-C and SIGTERM of a whole ``jaxfit sweep`` process, then ``--resume``.

Four grid trials, lanes 2: group-000 (trials 0 and 1) runs and is reported, then
group-002 (trials 2 and 3) trains. The signal comes from outside, as a
terminal's Ctrl-C or a scheduler's SIGTERM would, once group-002 has written a
few backups (a sign on disk, not a fixed sleep). The process exits at once with
the CLI's status for it (130, 143), nothing half-written is left but jaxfit's
own ``.NNN.partial``, and ``jaxfit sweep --resume SWEEP_DIR`` finishes exactly 4
trials, each COMPLETE once, the finished ones untouched byte for byte, the
interrupted group resumed from its backup (not from epoch 1) with the objectives
of a sweep that was never interrupted. A Ctrl-C while a trial's directory is
being written waits for it and its tell (Optuna); a SIGKILL there leaves its
``.NNN.partial``, which ``--resume`` redoes as that trial's own member.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from runner_helpers import run_cli, write_config
from sweep_helpers import base, read_json

import jaxfit

pytest.importorskip("optuna", reason="sweeps run on Optuna (the sweep extra)")

HERE = pathlib.Path(__file__).resolve().parent
EPOCHS = 20
CONFIG = (
    base(EPOCHS)
    + """\
sweep:
  objective: {monitor: val_loss, mode: min}
  sampler: grid
  lanes: 2
  space:
    optimizer.learning_rate: {choice: [0.01, 0.03, 0.1, 0.3]}
"""
)
TRIALS = 4


_json = read_json


def _objectives(sweep_dir):
    entries = _json(pathlib.Path(sweep_dir) / "sweep.json")["trials_run"]
    return {e["number"]: e["objective"] for e in entries}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for every sweep here (the same programs)."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def _config(root, cache):
    return write_config(root, CONFIG + f"compilation_cache: {cache}\n")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """The objectives of the same sweep, never interrupted (once per module)."""
    root = tmp_path_factory.mktemp("reference")
    result = jaxfit.sweep(  # without backups (faster; the same numbers)
        _config(root, cache),
        str(root / "w"),
        overrides=["backup=false"],
        say=lambda *a: None,
    )
    objectives = _objectives(result.sweep_dir)
    assert sorted(objectives) == list(range(TRIALS))
    return objectives


# ``python -m jaxfit`` with Python's own Ctrl-C handler: a shell without job
# control starts background jobs (this test, say) with SIGINT ignored, which
# Python would keep; the sweep then gets Ctrl-C as from a terminal.
MAIN = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'jaxfit'; runpy.run_module('jaxfit', run_name='__main__')"
)


def _start(tmp_path, cache, *extra):
    """``python -m jaxfit sweep CONFIG`` in the background, its output in files."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    out = open(tmp_path / "out.txt", "w", encoding="utf-8")  # noqa: SIM115
    err = open(tmp_path / "err.txt", "w", encoding="utf-8")  # noqa: SIM115
    config = _config(tmp_path, cache)
    with out, err:
        return subprocess.Popen(
            [sys.executable, "-c", MAIN, "sweep", config]
            + ["--workdir", str(tmp_path / "w"), *extra],
            env=env,
            stdout=out,
            stderr=err,
        )


def _wait_for(proc, condition, timeout=120.0):
    """Polls ``condition()`` every 2 ms until it holds; fails if ``proc`` ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("the sweep ended (or hung) before the awaited point")
        time.sleep(0.002)


def _backups(sweep_dir, group):
    """The epochs of ``group``'s backups on disk now."""
    found = sweep_dir.glob(f"groups/{group}-*/backup/backup-*")
    return sorted(int(p.name.split("-")[1]) for p in found if p.name[7:].isdigit())


def _signalled(proc, signum):
    """Sends ``signum`` to the sweep; returns its exit status and how long it took
    to exit."""
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the sweep did not exit within 60 s of the signal")
    return code, time.monotonic() - sent


def _half_written(sweep_dir):
    """What a stop left half-written, except jaxfit's own ``trials/.NNN.partial``
    (marked; the next attempt removes it): temporary files and directories."""
    left = []
    for path in sweep_dir.rglob("*"):
        name = path.name
        if ".jax_cache" in path.parts:
            continue  # JAX's compilation cache (its own atomic writes)
        if re.fullmatch(r"\.\d{3}\.partial", name) and path.parent.name == "trials":
            assert (path / ".jaxfit").is_file(), f"{path}: a partial not jaxfit's"
            continue
        if (
            name.endswith((".partial", ".tmp"))
            or "orbax-checkpoint-tmp" in name
            or ".partial" in path.relative_to(sweep_dir).parts[0]
        ):
            left.append(str(path.relative_to(sweep_dir)))
    return left


def _snapshot(*dirs):
    """Every file under ``dirs``: its path and bytes."""
    return {
        str(p): p.read_bytes()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def _study_states(sweep_dir):
    """Each trial's Optuna state, by number, as the study's storage has it."""
    import optuna

    storage = "sqlite:///" + str(sweep_dir / "study.db")
    study = optuna.load_study(study_name="sw", storage=storage)
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def _interrupted(tmp_path, cache, signum, ready, *extra):
    """The sweep, sent ``signum`` once ``ready(sweep_dir)`` holds: ``(exit
    status, seconds to exit, stderr)``."""
    proc = _start(tmp_path, cache, *extra)
    sweep_dir = tmp_path / "w" / "sw"
    _wait_for(proc, lambda: ready(sweep_dir))
    code, took = _signalled(proc, signum)
    return code, took, (tmp_path / "err.txt").read_text(encoding="utf-8")


def _group_002_training(sweep_dir):
    # group-000's trials are in place; group-002 has backed up epoch 3 or later
    return (sweep_dir / "trials" / "001").is_dir() and max(
        _backups(sweep_dir, "group-002"), default=0
    ) >= 3


def _resumed(capsys, sweep_dir, *extra):
    """``jaxfit sweep --resume SWEEP_DIR [EXTRA...]`` (in this process): its
    stdout."""
    capsys.readouterr()
    code, out, err = run_cli(capsys, "sweep", "--resume", str(sweep_dir), *extra)
    assert code == 0, err
    return out


def _assert_finished(sweep_dir, reference, count=TRIALS):
    """Exactly ``count`` trials, each COMPLETE once with the objective of the
    uninterrupted sweep, each trained in one group run, every epoch once."""
    numbers = range(count)
    entries = _json(sweep_dir / "sweep.json")["trials_run"]
    assert [(e["number"], e["state"], e["error"]) for e in entries] == [
        (n, "COMPLETE", None) for n in numbers
    ]
    assert _study_states(sweep_dir) == dict.fromkeys(numbers, "COMPLETE")
    got = _objectives(sweep_dir)
    for n in numbers:
        np.testing.assert_allclose(got[n], reference[n], rtol=1e-5, atol=1e-7)
    trials = sorted(p.name for p in (sweep_dir / "trials").iterdir())
    assert trials == [".jaxfit", *(f"{n:03d}" for n in numbers)]  # no partial
    groups = sorted(p.name[:9] for p in (sweep_dir / "groups").glob("group-*-*"))
    assert groups == [f"group-{n:03d}" for n in numbers[::2]]  # none trained twice
    for n in numbers:
        history = _json(sweep_dir / "trials" / f"{n:03d}" / "history.json")
        assert history["epoch"] == list(range(EPOCHS))
    assert _half_written(sweep_dir) == []


STOP = {
    signal.SIGINT: (130, "interrupted"),
    signal.SIGTERM: (143, "preempted (SIGTERM)"),
}


@pytest.fixture(
    scope="module", params=[signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name
)
def stopped(request, tmp_path_factory, cache):
    """A sweep sent Ctrl-C or SIGTERM while group-002 trains (once per signal)."""
    root = tmp_path_factory.mktemp("stopped")
    code, took, err = _interrupted(root, cache, request.param, _group_002_training)
    return types.SimpleNamespace(
        signum=request.param, code=code, took=took, err=err, dir=root / "w" / "sw"
    )


def test_a_signal_in_training_resumes_the_group_from_its_backup(
    capsys, reference, stopped
):
    sweep_dir = stopped.dir
    status, kind = STOP[stopped.signum]
    assert stopped.code == status, stopped.err
    assert stopped.took < 20  # at the next step boundary, not the group's end
    stop = re.search(
        rf"^jaxfit run: {re.escape(kind)} (?:in epoch (\d+)/{EPOCHS} after batch "
        rf"\d/3|after epoch (\d+)/{EPOCHS}); resume with: ",
        stopped.err,
        flags=re.M,
    )
    assert stop is not None and "Traceback" not in stopped.err, stopped.err
    assert _half_written(sweep_dir) == []
    (group_dir,) = sweep_dir.glob("groups/group-002-*")
    assert not (group_dir / "metrics.json").exists()
    assert _backups(sweep_dir, "group-002")
    assert _study_states(sweep_dir) == {
        0: "COMPLETE",
        1: "COMPLETE",
        2: "RUNNING",
        3: "RUNNING",
    }
    finished = [sweep_dir / "trials" / "000", sweep_dir / "trials" / "001"]
    finished += list(sweep_dir.glob("groups/group-000-*"))
    before = _snapshot(*finished)
    assert (sweep_dir / "trials" / "001" / "metrics.json").is_file()
    # the runner's stop line says `jaxfit run --resume GROUP_DIR`: it is refused
    # in one line naming the sweep's command, and leaves the backups as they are
    backups = _snapshot(group_dir / "backup")
    code, _, err = run_cli(capsys, "run", "--resume", str(group_dir))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.rstrip().endswith(f"Resume it with: jaxfit sweep --resume {sweep_dir}")
    assert _snapshot(group_dir / "backup") == backups

    out = _resumed(capsys, sweep_dir)
    at = re.search(r"jaxfit run: resuming group-002 in \S+ at epoch (\d+)/", out)
    assert at is not None, out
    stopped_at = int(stop.group(1) or stop.group(2))
    assert 5 <= int(at.group(1)) <= stopped_at + 1  # from its backup, not epoch 1
    assert "jaxfit run: group-" not in out  # no group run began afresh
    assert _snapshot(*finished) == before
    _assert_finished(sweep_dir, reference)


def test_the_stop_says_how_to_resume_the_sweep(stopped):
    hint = f"resume with: jaxfit sweep --resume {stopped.dir}"
    assert any(line.endswith(hint) for line in stopped.err.splitlines())


def _trial_1_being_written(sweep_dir):
    # group-000 ran, trial 0 is in place and told; trial 1's directory is being
    # built (marked, its config.yaml written: now its checkpoint)
    return (sweep_dir / "trials" / ".001.partial" / "config.yaml").is_file()


@pytest.fixture(scope="module", params=[signal.SIGINT, signal.SIGTERM], ids=str)
def told(tmp_path_factory, cache, request):
    """``jaxfit sweep --trials 2`` (group-000 only) sent Ctrl-C (SIGTERM) while
    trial 1's directory is being written (trial 0 is told)."""
    root = tmp_path_factory.mktemp("told")
    code, took, err = _interrupted(
        root, cache, request.param, _trial_1_being_written, "--trials", "2"
    )
    return types.SimpleNamespace(
        signum=request.param, code=code, took=took, err=err, dir=root / "w" / "sw"
    )


def test_a_stop_while_a_trial_is_written_and_told_lets_it_finish(
    capsys, reference, told
):
    # the trial's directory and its tell are one step: the stop acts after them
    sweep_dir = told.dir
    ctrl_c = told.signum == signal.SIGINT
    assert told.code == (130 if ctrl_c else 143) and told.took < 20, told.err
    how = "interrupted" if ctrl_c else "preempted (SIGTERM)"
    hint = f"; resume with: jaxfit sweep --resume {sweep_dir}"
    assert f"jaxfit sweep: {how}; 2 of 2 trials finished{hint}" in (
        told.err.splitlines()
    ), told.err
    assert "Traceback" not in told.err
    assert _half_written(sweep_dir) == []
    assert not (sweep_dir / "trials" / ".001.partial").exists()
    assert _study_states(sweep_dir) == {0: "COMPLETE", 1: "COMPLETE"}
    finished = [sweep_dir / "trials", *sweep_dir.glob("groups/group-000-*")]
    before = _snapshot(*finished)
    out = _resumed(capsys, sweep_dir)  # no --trials: the 2 it was made with
    assert " as group-" not in out  # nothing trains again
    assert _snapshot(*finished) == before
    _assert_finished(sweep_dir, reference, count=2)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, cache):
    """The same sweep SIGKILLed while trial 1's directory is being written (trial
    0 is told), as two copies (each with its own study.db): ``plain`` as it is,
    ``empty`` with ``.001.partial`` as a kill just after its ``mkdir`` leaves it."""
    root = tmp_path_factory.mktemp("killed")
    code, _, err = _interrupted(
        root, cache, signal.SIGKILL, _trial_1_being_written, "--trials", "2"
    )
    assert code == -signal.SIGKILL, err
    sweep_dir = root / "w" / "sw"
    copies = {}
    for name in ("plain", "empty", "foreign", "locked", "watched"):
        copies[name] = root / name / "sw"
        shutil.copytree(sweep_dir, copies[name])
    shutil.rmtree(copies["empty"] / "trials" / ".001.partial")
    (copies["empty"] / "trials" / ".001.partial").mkdir()
    shutil.rmtree(copies["foreign"] / "trials" / ".001.partial")
    (copies["foreign"] / "trials" / ".001.partial").mkdir()
    (copies["foreign"] / "trials" / ".001.partial" / "notes.txt").write_text("mine")
    return types.SimpleNamespace(dir=sweep_dir, **copies)


def test_a_kill_while_a_trial_is_written_resumes_it_as_its_own_member(
    capsys, reference, killed
):
    sweep_dir = killed.plain
    assert (sweep_dir / "trials" / ".001.partial" / ".jaxfit").is_file()
    assert _study_states(sweep_dir) == {0: "COMPLETE", 1: "RUNNING"}
    finished = [sweep_dir / "trials" / "000", *sweep_dir.glob("groups/group-000-*")]
    before = _snapshot(*finished)
    _resumed(capsys, sweep_dir)  # no --trials: the 2 it was made with
    assert _snapshot(*finished) == before
    _assert_finished(sweep_dir, reference, count=2)  # trial 1: member 1's


def test_a_kill_before_the_partial_is_marked_still_resumes(capsys, reference, killed):
    _resumed(capsys, killed.empty, "--trials", "2")
    _assert_finished(killed.empty, reference, count=2)


def test_a_partial_holding_someone_elses_file_is_refused_untouched(capsys, killed):
    # the canary: an unmarked .001.partial with a file jaxfit did not write
    partial = killed.foreign / "trials" / ".001.partial"
    capsys.readouterr()
    code, _, err = run_cli(capsys, "sweep", "--resume", str(killed.foreign))
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert f"{partial}: expected jaxfit's half-written trial directory" in line
    assert "move them away and resume" in line
    assert (partial / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in partial.iterdir()) == ["notes.txt"]


def _group_lock(sweep_dir, group="group-000"):
    """An open descriptor of ``group``'s run marker, for ``fcntl.flock``."""
    (run_dir,) = sweep_dir.glob(f"groups/{group}-*")
    return os.open(run_dir / ".jaxfit", os.O_RDONLY)


def test_a_group_another_process_reports_is_left_to_it(capsys, reference, killed):
    # a live worker writing group-000's trials holds its lock: --resume leaves
    # trial 1 (RUNNING, its .001.partial) to it, then takes it up once it is gone
    fcntl = pytest.importorskip("fcntl")
    sweep_dir = killed.locked
    partial = sweep_dir / "trials" / ".001.partial"
    before = _snapshot(partial)
    fd = _group_lock(sweep_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _resumed(capsys, sweep_dir)
        assert _study_states(sweep_dir) == {0: "COMPLETE", 1: "RUNNING"}
        assert _snapshot(partial) == before
        assert not (sweep_dir / "trials" / "001").exists()
    finally:
        os.close(fd)
    _resumed(capsys, sweep_dir)
    _assert_finished(sweep_dir, reference, count=2)


def test_writing_a_groups_trials_holds_its_lock(capsys, monkeypatch, killed):
    from jaxfit._src.runner import rundir
    from jaxfit._src.sweep import trials

    seen = []
    materialize = trials.materialize

    def watched(sweep_dir, number, raw, group_dir, *args):
        seen.append((number, rundir._is_locked(group_dir)))  # another descriptor
        return materialize(sweep_dir, number, raw, group_dir, *args)

    monkeypatch.setattr(trials, "materialize", watched)
    _resumed(capsys, killed.watched)
    assert seen == [(1, True)]
