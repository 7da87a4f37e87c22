"""A run's whole life, faults included: a kill (SIGKILL), Ctrl-C or SIGTERM at any
instant leaves a complete run or one that ``jaxfit run --resume`` completes with
the same files as an uninterrupted run (History, metrics and the checkpoint's
params bit for bit); ``jaxfit show`` answers for every directory left on the
way; ``--resume`` refuses a changed config.yaml naming the key, and a run
directory that another process is running; run.log is on disk line by line.

The faults are real: ``python -m jaxfit run`` subprocesses, killed when a file of
the ending appears, or signalled by a callback of their config
(``runner_helpers.SignalAt``). The resumes run in this process. Every run shares
one compilation cache, so only the first compiles.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from runner_helpers import run_dirs

import jaxfit
from jaxfit import cli

TESTS = pathlib.Path(__file__).resolve().parent

BASE = """\
name: tiny
model:
  name: runner_helpers:linear_model
data:
  name: runner_helpers:tiny_split
optimizer:
  name: sgd
  learning_rate: 0.1
fit:
  epochs: 4
  batch_size: 16
  validation_split: 0.25
"""
# min_delta 10: nothing after the first epoch counts as better, so with patience 1
# the second epoch stops the run and the first epoch's weights come back: the
# ending must use those, resumed or not.
STOPPING = (
    BASE
    + """\
callbacks:
  - name: EarlyStopping
    args: {monitor: val_loss, min_delta: 10, patience: 1, restore_best_weights: true}
"""
)
ENDING_FILES = ["checkpoint", "history.json", "history.csv", "curves.png"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for every run of this module."""
    return str(tmp_path_factory.mktemp("cache"))


def _env():
    """This environment (the device count too), with runner_helpers importable."""
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _start(cache, *argv):
    """``python -m jaxfit ARGV... --compilation-cache CACHE`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "jaxfit", *argv, "--compilation-cache", cache],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc, condition, timeout=120.0):
    """Polls ``condition()`` every 2 ms until it holds (True) or ``proc`` ended
    (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.002)
    proc.kill()
    pytest.fail("the run neither ended nor reached the awaited point")


def _one_run_dir(workdir):
    (run_dir,) = run_dirs(workdir)
    return run_dir


def _appeared(workdir, name):
    """Whether ``name`` exists in the (single) run directory of ``workdir``."""

    def check():
        found = run_dirs(workdir) if os.path.isdir(workdir) else []
        return bool(found) and os.path.lexists(found[0] / name)

    return check


@pytest.fixture(scope="module")
def references(tmp_path_factory, cache):
    """``reference(text)``: the run directory of ``text`` run once, never
    interrupted (one run per config for the whole module)."""
    made = {}

    def reference(text):
        if text not in made:
            root = tmp_path_factory.mktemp("reference")
            result = jaxfit.run(
                _write(root, text), str(root / "runs"), compilation_cache=cache
            )
            made[text] = pathlib.Path(result.run_dir)
        return made[text]

    return reference


def _resume(capsys, run_dir, cache):
    capsys.readouterr()
    code = cli.main(["run", "--resume", str(run_dir), "--compilation-cache", cache])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _checkpoint(run_dir):
    """The final checkpoint's params, step and rng, as host arrays."""
    trainer = jaxfit.Trainer.load(str(run_dir / "checkpoint"), lambda p, x: x @ p["w"])
    return [np.asarray(a) for a in (trainer.params["w"], trainer.state.step)]


def _assert_same_run(run_dir, reference):
    """``run_dir`` holds what the uninterrupted ``reference`` holds, bit for bit
    where it counts, and nothing of an unfinished run."""
    assert _json(run_dir / "history.json") == _json(reference / "history.json")
    ours, theirs = _json(run_dir / "metrics.json"), _json(reference / "metrics.json")
    assert ours.pop("wall_time_s") > 0 and theirs.pop("wall_time_s") > 0
    assert ours == theirs  # the wall time alone differs (all segments' seconds)
    assert (run_dir / "history.csv").read_text() == (
        reference / "history.csv"
    ).read_text()
    for ours, theirs in zip(_checkpoint(run_dir), _checkpoint(reference)):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    names = {p.name for p in run_dir.iterdir()}
    assert names == {p.name for p in reference.iterdir()}, names
    assert "backup" not in names and not any(
        n.endswith((".tmp", ".saving")) for n in names
    )


def _show(capsys, run_dir):
    """``jaxfit show RUN_DIR``: exit 0 and a summary, whatever the directory holds."""
    capsys.readouterr()
    code = cli.main(["show", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    assert out.startswith("run: tiny") and "Traceback" not in out
    return out


# -- kills ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,target",
    [
        (STOPPING, ".checkpoint.saving"),  # in the middle of writing checkpoint/
        (STOPPING, "checkpoint"),
        (STOPPING, "history.json"),
        (STOPPING, "curves.png"),
        (STOPPING, "metrics.json"),  # complete, or nearly: backup/ going
        (BASE, "checkpoint"),  # trained to the last epoch, no early stop
    ],
)
def test_a_kill_at_each_file_of_the_ending_resumes_to_the_same_files(
    tmp_path, capsys, cache, references, text, target
):
    reference = references(text)
    workdir = tmp_path / "runs"
    proc = _start(cache, "run", _write(tmp_path, text), "--workdir", str(workdir))
    reached = _wait_for(proc, _appeared(workdir, target))
    proc.kill()
    proc.communicate()
    run_dir = _one_run_dir(workdir)
    assert reached, f"{target} never appeared"
    shown = _show(capsys, run_dir)
    if (run_dir / "metrics.json").exists():  # the kill came after the mark: complete
        assert "final epoch:" in shown
        code = cli.main(["run", "--resume", str(run_dir)])
        assert code == 2 and "finished already" in capsys.readouterr().err
        names = {p.name for p in run_dir.iterdir()} - {"backup"}
        assert names == {p.name for p in reference.iterdir()}
        return
    assert f"status: not finished (resume with jaxfit run --resume {run_dir})" in shown
    assert "resumes: training had ended" in shown
    out = _resume(capsys, run_dir, cache)
    assert "after its training ended" in out
    _assert_same_run(run_dir, reference)


# -- SIGTERM and Ctrl-C ----------------------------------------------------------------


def _run_signalled(tmp_path, cache, text, signal_name, hook, epoch=0):
    marker = tmp_path / "fired"
    text += ("" if "callbacks:" in text else "callbacks:\n") + (
        "  - name: runner_helpers:SignalAt\n"
        f"    args: {{signal: {signal_name}, hook: {hook}, epoch: {epoch}, "
        f"marker: {marker}}}\n"
    )
    workdir = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxfit",
            "run",
            _write(tmp_path, text),
            "--workdir",
            str(workdir),
            "--compilation-cache",
            cache,
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert marker.exists()
    return result, _one_run_dir(workdir)


@pytest.mark.parametrize(
    "text,hook,epoch",
    [
        (BASE, "on_epoch_end", 1),  # in training: fit stops at a step boundary
        (STOPPING, "on_train_end", 0),  # training over: the ending stops
    ],
)
def test_sigterm_exits_143_with_one_line_and_resumes_bit_identical(
    tmp_path, capsys, cache, references, text, hook, epoch
):
    reference = references(text)
    result, run_dir = _run_signalled(tmp_path, cache, text, "SIGTERM", hook, epoch)
    assert result.returncode == 143, result.stderr
    resume = f"; resume with: jaxfit run --resume {run_dir}"
    assert re.fullmatch(
        r"jaxfit run: preempted \(SIGTERM\) [^\n;]+" + re.escape(resume) + "\n",
        result.stderr,
    ), result.stderr
    line = result.stderr.strip()
    assert (run_dir / "run.log").read_text(encoding="utf-8").rstrip().endswith(line)
    names = {p.name for p in run_dir.iterdir()}
    assert "metrics.json" not in names and "backup" in names
    assert not any(n.endswith(".saving") for n in names)
    shown = _show(capsys, run_dir)
    assert "last: preempted (SIGTERM)" in shown
    _resume(capsys, run_dir, cache)
    _assert_same_run(run_dir, reference)


def test_sigterm_in_the_ending_stops_before_the_next_stage(tmp_path, cache):
    result, run_dir = _run_signalled(tmp_path, cache, BASE, "SIGTERM", "on_train_end")
    assert result.returncode == 143
    assert result.stderr.startswith(
        "jaxfit run: preempted (SIGTERM) after training, before the test evaluation; "
    )
    assert not (run_dir / "checkpoint").exists()


@pytest.mark.parametrize("target", [".checkpoint.saving", "checkpoint"])
def test_ctrl_c_in_the_ending_prints_a_resume_command_that_works(
    tmp_path, capsys, cache, references, target
):
    # in the checkpoint's write (Ctrl-C waits for it), or after it
    reference = references(STOPPING)
    workdir = tmp_path / "runs"
    proc = _start(cache, "run", _write(tmp_path, STOPPING), "--workdir", str(workdir))
    reached = _wait_for(proc, _appeared(workdir, target))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    run_dir = _one_run_dir(workdir)
    assert reached
    if proc.returncode == 0:  # it had written metrics.json: nothing to stop
        return
    assert proc.returncode == 130, err
    resume = f"; resume with: jaxfit run --resume {run_dir}\n"
    assert re.fullmatch(
        r"jaxfit run: interrupted after training, before [^\n;]+" + re.escape(resume),
        err,
    ), err
    _resume(capsys, run_dir, cache)
    _assert_same_run(run_dir, reference)


# -- --resume refusals -----------------------------------------------------------------


def test_a_kill_in_training_then_a_second_resume_at_once(
    tmp_path, capsys, cache, references
):
    # SIGKILL after two epochs: run.log has their lines (written line by line),
    # and the lock went with the process. A resume starts; a second one at once is
    # refused in one line (no CSV row twice); the first completes the run.
    text = (
        BASE
        + "callbacks:\n  - name: runner_helpers:Slow\n    args: {seconds: 0.2}\n"
        + "  - name: CSVLogger\n    args: {filename: training.csv}\n"
    )
    reference = references(text)
    workdir = tmp_path / "runs"
    first = _start(cache, "run", _write(tmp_path, text), "--workdir", str(workdir))
    assert _wait_for(first, _appeared(workdir, "backup/backup-1"))
    first.kill()
    first.communicate()
    run_dir = _one_run_dir(workdir)
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert re.findall(r"^Epoch (\d)/4 ", log, re.M)[:2] == ["1", "2"]
    assert "resumes: at epoch" in _show(capsys, run_dir)
    going = _start(cache, "run", "--resume", str(run_dir))
    assert _wait_for(going, lambda: "resuming" in (run_dir / "run.log").read_text())
    code = cli.main(["run", "--resume", str(run_dir), "--compilation-cache", cache])
    _, err = capsys.readouterr()
    assert code == 2 and err == (
        f"jaxfit run: --resume: {str(run_dir)!r} is in use: another jaxfit run of it "
        "is going on (it holds the directory's lock); wait for it to end.\n"
    )
    assert "status: running" in _show(capsys, run_dir)
    _, going_err = going.communicate(timeout=120)
    assert going.returncode == 0, going_err
    assert (run_dir / "training.csv").read_text() == (
        reference / "training.csv"
    ).read_text()  # no row twice
    _assert_same_run(run_dir, reference)


@pytest.fixture
def interrupted(tmp_path, cache):
    """A run stopped by Ctrl-C after its 2nd epoch (in this process)."""
    marker = tmp_path / "fired"
    text = BASE.replace(
        "runner_helpers:linear_model\n",
        "runner_helpers:linear_model\n  args: {scale: 0.0}\n",
    ) + (
        "callbacks:\n  - name: runner_helpers:InterruptOnce\n"
        f"    args: {{epoch: 1, marker: {marker}}}\n"
    )
    with pytest.raises(KeyboardInterrupt):
        jaxfit.run(
            _write(tmp_path, text), str(tmp_path / "runs"), compilation_cache=cache
        )
    return _one_run_dir(tmp_path / "runs")


# (the text in the resolved config.yaml, the edit, the key the refusal names)
EDITS = [
    ("  batch_size: 16\n", "  batch_size: 8\n", "fit.batch_size"),
    ("\nseed: 0\n", "\nseed: 3\n", "seed"),
    ("validation_split: 0.25", "validation_split: 0.5", "fit.validation_split"),
    ("    scale: 0.0\n", "    scale: 0.5\n", "model.args.scale"),  # as dropout
    (
        "  args: {}\noptimizer",
        "  args: {num_samples: 32}\noptimizer",
        "data.args.num_samples",
    ),
    ("  epochs: 4\n", "  epochs: 3\n", "fit.epochs"),  # only upward
]


def _edit(run_dir, old, new):
    path = run_dir / "config.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text, text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("old,new,key", EDITS)
def test_resume_refuses_a_changed_config_naming_the_key(
    capsys, interrupted, old, new, key
):
    _edit(interrupted, old, new)
    capsys.readouterr()
    code = cli.main(["run", "--resume", str(interrupted)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"jaxfit run: {key}: expected the value the run began with")
    assert (
        "may change only fit.epochs (upward), fit.verbose and compilation_cache" in err
    )


def test_a_run_begun_before_a_new_config_key_still_resumes(capsys, interrupted, cache):
    # a run directory an earlier jaxfit made, without the tracking section
    for name in (".jaxfit", "config.yaml"):
        path = interrupted / name
        text = path.read_text(encoding="utf-8")
        if name == ".jaxfit":
            marker = json.loads(text)
            assert marker["config"].pop("tracking") is None
            text = json.dumps(marker)
        else:
            assert "\ntracking: null\n" in text
            text = text.replace("\ntracking: null\n", "\n")
        path.write_text(text, encoding="utf-8")
    _resume(capsys, interrupted, cache)
    assert _json(interrupted / "history.json")["epoch"] == [0, 1, 2, 3]


def test_resume_takes_more_epochs_and_a_new_verbosity(capsys, interrupted, cache):
    _edit(interrupted, "  epochs: 4\n", "  epochs: 5\n")
    _edit(interrupted, "  verbose: 2\n", "  verbose: 0\n")
    _resume(capsys, interrupted, cache)
    assert _json(interrupted / "history.json")["epoch"] == [0, 1, 2, 3, 4]


# -- workdir, show ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "file", "under a file"])
def test_a_workdir_that_cannot_hold_run_directories_is_refused(tmp_path, capsys, kind):
    config = _write(tmp_path, BASE)
    (tmp_path / "afile").write_text("mine")
    workdir = {
        "empty": "",
        "file": str(tmp_path / "afile"),
        "under a file": str(tmp_path / "afile" / "runs"),
    }[kind]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main(["run", config, "--workdir", workdir])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        "jaxfit run: workdir: expected a directory to make run directories in"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_existing_workdir_gets_a_new_marked_run_directory_beside_its_files(
    tmp_path, capsys, cache
):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    result = jaxfit.run(_write(tmp_path, BASE), str(workdir), compilation_cache=cache)
    run_dir = pathlib.Path(result.run_dir)
    assert run_dir.parent == workdir and (workdir / "notes.txt").read_text() == "mine"
    marker = _json(run_dir / ".jaxfit")
    assert marker["created_by"] == "jaxfit" and marker["kind"] == "run"
    assert marker["config"]["fit"]["batch_size"] == 16
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt", run_dir.name]


def test_show_answers_for_any_directory(tmp_path, capsys):
    def show(path):
        code = cli.main(["show", str(path)])
        out, err = capsys.readouterr()
        return code, out, err

    # no config.yaml, a missing directory, a FIFO for config.yaml: one-line errors
    for path in (tmp_path, tmp_path / "missing"):
        code, _, err = show(path)
        assert code == 2 and err.count("\n") == 1 and "run_dir: expected" in err
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "config.yaml")
    code, _, err = show(fifo_dir)
    assert code == 2 and "has no config.yaml file" in err
    # a config.yaml alone; then partial, odd and hostile files around it
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text('name: "tiny\\e[31m"\nfit: 3\n')
    code, out, _ = show(run_dir)
    assert code == 0 and "\x1b" not in out and "tiny\\x1b[31m" in out
    assert "status: not finished" in out
    (run_dir / "metrics.json").write_text('{"final_epoch": {"loss": 0.5')  # partial
    (run_dir / "history.json").write_text("[]")
    (run_dir / "run.log").write_text("jaxfit run: interrupted in \x1b]0;x\x07epoch 1\n")
    code, out, _ = show(run_dir)
    assert code == 0 and "metrics.json: partial or not JSON" in out
    assert "\x1b" not in out and "\x07" not in out
    (run_dir / "metrics.json").write_text(
        '{"final_epoch": {"loss": "nan?"}, "test": 3}'
    )
    code, out, _ = show(run_dir)
    assert code == 0 and "final epoch: loss: nan?" in out
    (run_dir / "config.yaml").write_text("- a list\n")
    code, _, err = show(run_dir)
    assert code == 2 and "not a mapping" in err


def test_a_damaged_newest_backup_falls_back_in_one_line_and_resumes_exactly(
    tmp_path, cache, references
):
    # SIGTERM at the end of epoch 3 (of 4): backups of epochs 2 and 3 are kept
    reference = references(BASE)
    result, run_dir = _run_signalled(
        tmp_path, cache, BASE, "SIGTERM", "on_epoch_end", 2
    )
    assert result.returncode == 143, result.stderr
    backups = sorted(
        (p for p in (run_dir / "backup").iterdir() if p.name.startswith("backup-")),
        key=lambda p: int(p.name.split("-")[1]),
    )
    assert len(backups) == 2
    damaged = max(
        (p for p in (backups[-1] / "state").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the array data
    damaged.write_bytes(bytes(data))
    resumed = subprocess.run(
        [sys.executable, "-m", "jaxfit", "run", "--resume", str(run_dir)]
        + ["--compilation-cache", cache],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    (warning,) = [line for line in resumed.stderr.splitlines() if "damaged" in line]
    assert warning.startswith(
        "jaxfit run: RuntimeWarning: BackupAndRestore: the backup"
    )
    assert (
        str(damaged.relative_to(run_dir.parent)) in warning or damaged.name in warning
    )
    _assert_same_run(run_dir, reference)


def test_the_ending_removes_only_its_own_backups(capsys, interrupted, cache):
    # a directory named like a backup that jaxfit did not write, in backup/
    foreign = interrupted / "backup" / "backup-99"
    foreign.mkdir()
    (foreign / "canary.txt").write_text("the user's", encoding="utf-8")
    _resume(capsys, interrupted, cache)
    assert (interrupted / "metrics.json").is_file()
    assert (foreign / "canary.txt").read_text(encoding="utf-8") == "the user's"
    assert sorted(p.name for p in (interrupted / "backup").iterdir()) == [
        ".jaxfit",
        "backup-99",
    ]
