"""Ctrl-C in ``jaxfit run``: one line saying where it stopped and how to resume,
exit status 130, no traceback; ``--resume`` then completes the run directory with
no epoch's line written twice (run.log, CSVLogger's file).

The interrupt is real and deterministic: a callback of the config sends SIGINT to
its own process at a chosen batch (``runner_helpers.SigintAt``).
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

from runner_helpers import run_dirs, tiny_config

import jaxfit
from jaxfit import cli

TESTS = pathlib.Path(__file__).resolve().parent

CONFIG = tiny_config(
    "  epochs: 4\n  batch_size: 16\n  yield_every: batch\n",
    "callbacks:\n  - name: CSVLogger\n    args: {filename: training.csv}\n",
)


def _write(tmp_path, text):
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def _env():
    """This environment (the device count too), with runner_helpers importable."""
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _interrupted_run(tmp_path, text):
    """Runs ``text`` with ``python -m jaxfit run`` until its SIGINT; returns the
    completed process and the run directory."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxfit",
            "run",
            str(_write(tmp_path, text)),
            "--workdir",
            str(tmp_path / "runs"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (run_dir,) = run_dirs(tmp_path / "runs")
    return result, run_dir


def _reference(tmp_path):
    """The same run, never interrupted: its History and CSV rows."""
    path = tmp_path / "reference.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    result = jaxfit.run(str(path), str(tmp_path / "reference"))
    rows = pathlib.Path(result.run_dir, "training.csv").read_text(encoding="utf-8")
    return result.history.to_dict(), rows


def _epoch_lines(run_dir):
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    return re.findall(r"^Epoch (\d+)/4 ", log, flags=re.M)


def test_ctrl_c_says_where_it_stopped_and_resume_completes_the_run(tmp_path, capsys):
    marker = tmp_path / "fired"
    result, run_dir = _interrupted_run(
        tmp_path,
        CONFIG
        + f"""\
  - name: runner_helpers:SigintAt
    args: {{epoch: 2, batch: 1, marker: {marker}}}
""",
    )
    # after the 2nd batch (0-based 1) of the 3rd epoch (0-based 2)
    line = (
        f"jaxfit run: interrupted in epoch 3/4 after batch 2/4; resume with: "
        f"jaxfit run --resume {run_dir}"
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == line + "\n"  # one line, no traceback
    assert marker.exists() and not (run_dir / "history.json").exists()
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert log.rstrip().endswith(line)
    assert _epoch_lines(run_dir) == ["1", "2"]
    assert cli.main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert f"status: not finished (resume with jaxfit run --resume {run_dir})" in shown
    assert "last: interrupted in epoch 3/4 after batch 2/4" in shown

    # the first segment's seconds, as its newest backup recorded them
    before = max(
        json.loads(p.read_text())["callbacks"]["_Tracker"]["wall_time_s"]
        for p in (run_dir / "backup").rglob("metadata.json")
    )
    start = time.monotonic()
    code = cli.main(["run", "--resume", str(run_dir)])
    resumed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"jaxfit run: resuming tiny in {run_dir} at epoch 3/4" in out
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        wall = json.load(f)["wall_time_s"]  # both segments' seconds
    assert before > 0 and before + 0.001 <= wall <= before + resumed + 0.001
    history, rows = _reference(tmp_path)
    with open(run_dir / "history.json", encoding="utf-8") as f:
        assert json.load(f) == history
    assert (run_dir / "training.csv").read_text(encoding="utf-8") == rows
    assert _epoch_lines(run_dir) == ["1", "2", "3", "4"]
    assert not (run_dir / "backup").exists()


def test_lines_written_after_the_last_backup_are_not_repeated(tmp_path, capsys):
    # Backups every 6 batches (4 per epoch): the newest is mid-epoch 2 when Ctrl-C
    # comes as epoch 3 begins, after epoch 2's line, CSV row and checkpoint (written
    # in the background) are out. The resume redoes the end of epoch 2.
    marker = tmp_path / "fired"
    result, run_dir = _interrupted_run(
        tmp_path,
        CONFIG
        + f"""\
  - name: ModelCheckpoint
    args: {{filepath: "ckpt-{{epoch}}", write_in_background: true, verbose: 1}}
  - name: runner_helpers:SigintAt
    args: {{epoch: 2, marker: {marker}}}
backup: 6
""",
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == (
        f"jaxfit run: interrupted after epoch 2/4; resume with: "
        f"jaxfit run --resume {run_dir}\n"
    )
    assert _epoch_lines(run_dir) == ["1", "2"]
    assert (run_dir / "ckpt-2").is_dir()  # the background write was waited for

    code = cli.main(["run", "--resume", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "at epoch 2/4, after batch 2" in out
    assert _epoch_lines(run_dir) == ["1", "2", "3", "4"]
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert [int(n) for n in re.findall(r"^Epoch (\d+): saving", log, re.M)] == [
        1,
        2,
        3,
        4,
    ]
    _, rows = _reference(tmp_path)
    assert (run_dir / "training.csv").read_text(encoding="utf-8") == rows


def test_ctrl_c_before_training_leaves_nothing(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxfit",
            "run",
            str(_write(tmp_path, CONFIG.replace("tiny_data", "sigint_data"))),
            "--workdir",
            str(tmp_path / "runs"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 130
    assert result.stderr == (
        "jaxfit run: interrupted before training started; nothing was created\n"
    )
    assert not (tmp_path / "runs").exists()
