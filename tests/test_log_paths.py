"""The logging callbacks, a config's callback paths and `jaxfit configs DIR` follow
jaxfit's path policy (issue 22): a refused target is a one-line error naming the
argument before anything runs, and a canary that jaxfit did not write is left
byte for byte as it was.
"""

import importlib.util
import os
import re

import optax
import pytest
from conftest import linear_apply, linear_params, regression_data
from runner_helpers import run_cli as _cli
from runner_helpers import run_dirs, tiny_config
from runner_helpers import write_config as _write

import jaxfit

X, Y = regression_data(n=16)
CANARY = b"the user's own file\n"


def _fit(*callbacks):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.05), loss="mse"
    )
    return trainer.fit(X, Y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)


def _canary(directory):
    """A directory holding a file jaxfit did not write; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mine.txt"
    path.write_bytes(CANARY)
    return path


def _one_line(error, argname):
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{argname}: "), text
    return text


# --- CSVLogger -----------------------------------------------------------------


def _csv_targets(tmp_path):
    (tmp_path / "afile").write_bytes(CANARY)
    _canary(tmp_path / "dir")
    (tmp_path / "foreign.csv").write_bytes(b"name,score\nada,3\n")
    return {
        "empty": ("", "of its own"),
        "dot": (".", "of its own"),
        "a directory": (str(tmp_path / "dir"), "which is a directory"),
        "a trailing separator": (str(tmp_path / "new") + os.sep, "not a directory"),
        "under a file": (str(tmp_path / "afile" / "log.csv"), "under the file"),
        "a foreign file": (
            str(tmp_path / "foreign.csv"),
            "an existing file jaxfit did not write",
        ),
        "the working directory": (os.getcwd(), "not the working directory"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "dot",
        "a directory",
        "a trailing separator",
        "under a file",
        "a foreign file",
        "the working directory",
    ],
)
def test_csv_logger_refuses_what_it_would_overwrite(tmp_path, case):
    filename, words = _csv_targets(tmp_path)[case]
    for append in (False, True):
        with pytest.raises(ValueError) as error:
            jaxfit.callbacks.CSVLogger(filename, append=append)
        assert words in _one_line(error, "filename")
    assert (tmp_path / "afile").read_bytes() == CANARY
    assert (tmp_path / "dir" / "mine.txt").read_bytes() == CANARY
    assert (tmp_path / "foreign.csv").read_bytes() == b"name,score\nada,3\n"
    assert not (tmp_path / "new").exists()


def test_csv_logger_makes_a_missing_directory_and_takes_its_own_file(tmp_path):
    path = tmp_path / "logs" / "deep" / "training.csv"
    _fit(jaxfit.callbacks.CSVLogger(path))
    assert path.read_text().startswith("epoch,loss")
    for made in (tmp_path / "logs", tmp_path / "logs" / "deep"):
        assert (made / ".jaxfit").is_file()  # made by jaxfit: the marker
    # its own file (first line `epoch,...`): overwritten, or appended to
    _fit(jaxfit.callbacks.CSVLogger(path))
    assert path.read_text().count("epoch") == 1
    _fit(jaxfit.callbacks.CSVLogger(path, append=True))
    assert len(path.read_text().splitlines()) == 3
    semicolons = tmp_path / "semi.csv"
    _fit(jaxfit.callbacks.CSVLogger(semicolons, separator=";"))
    with pytest.raises(ValueError, match="did not write"):  # not a ','-log
        jaxfit.callbacks.CSVLogger(semicolons)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _fit(jaxfit.callbacks.CSVLogger(empty))  # an empty file holds nothing to lose
    assert empty.read_text().startswith("epoch,")


def test_csv_logger_checks_again_when_training_begins(tmp_path):
    path = tmp_path / "late.csv"
    logger = jaxfit.callbacks.CSVLogger(path)
    path.write_bytes(CANARY)  # the user's file appears after the callback is made
    with pytest.raises(ValueError) as error:
        _fit(logger)
    assert "did not write" in _one_line(error, "filename")
    assert path.read_bytes() == CANARY


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"separator": ""}, "separator"),
        ({"separator": ",,"}, "separator"),
        ({"separator": "\n"}, "separator"),
        ({"append": "yes"}, "append"),
    ],
)
def test_csv_logger_bad_arguments(tmp_path, kwargs, argname):
    with pytest.raises(ValueError) as error:
        jaxfit.callbacks.CSVLogger(tmp_path / "x.csv", **kwargs)
    _one_line(error, argname)


# --- TensorBoard ---------------------------------------------------------------

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None,
    reason="TensorBoard is the optional tensorboard extra",
)


@pytest.mark.parametrize(
    "case", ["empty", "dot", "cwd", "home", "root", "a file", "a foreign directory"]
)
def test_tensorboard_refuses_a_directory_it_does_not_own(tmp_path, monkeypatch, case):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    canary = _canary(tmp_path / "foreign")
    (tmp_path / "afile").write_bytes(CANARY)
    log_dir, words = {
        "empty": ("", "of its own"),
        "dot": (".", "of its own"),
        "cwd": (str(work), "not the working directory"),
        "home": (str(home), "the home directory"),
        "root": (os.path.abspath(os.sep), "the filesystem root"),
        "a file": (str(tmp_path / "afile"), "which is a file"),
        "a foreign directory": (str(tmp_path / "foreign"), "with other files in it"),
    }[case]
    with pytest.raises(ValueError) as error:
        jaxfit.callbacks.TensorBoard(log_dir)
    assert words in _one_line(error, "log_dir")
    assert canary.read_bytes() == CANARY
    assert sorted(os.listdir(tmp_path / "foreign")) == ["mine.txt"]
    assert os.listdir(work) == []


@needs_tensorboard
def test_tensorboard_makes_its_directory_and_takes_a_log_directory(tmp_path):
    log_dir = tmp_path / "tb" / "run1"
    _fit(jaxfit.callbacks.TensorBoard(log_dir))
    assert (log_dir / ".jaxfit").is_file() and (tmp_path / "tb" / ".jaxfit").is_file()
    assert list((log_dir / "train").glob("events.out.tfevents.*"))
    _fit(jaxfit.callbacks.TensorBoard(log_dir))  # its own directory: written again
    # a TensorBoard log directory jaxfit did not mark (another tool's, or Keras'):
    # only train/ and validation/ with event files
    foreign = tmp_path / "keras_logs"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "events.out.tfevents.1.host").write_bytes(b"")
    (foreign / "validation").mkdir()
    _fit(jaxfit.callbacks.TensorBoard(foreign))
    (foreign / "train" / "notes.txt").write_bytes(CANARY)
    with pytest.raises(ValueError, match="with other files in it"):
        jaxfit.callbacks.TensorBoard(foreign)
    assert (foreign / "train" / "notes.txt").read_bytes() == CANARY


@needs_tensorboard
def test_tensorboard_checks_again_when_training_begins(tmp_path):
    log_dir = tmp_path / "tb"
    callback = jaxfit.callbacks.TensorBoard(log_dir)
    canary = _canary(log_dir)
    with pytest.raises(ValueError) as error:
        _fit(callback)
    _one_line(error, "log_dir")
    assert sorted(os.listdir(log_dir)) == ["mine.txt"] and canary.read_bytes() == CANARY


# --- a config's callback paths -------------------------------------------------

BASE = tiny_config("  epochs: 1\n  batch_size: 16\n", "backup: false\n")


def _with_callbacks(*entries):
    """BASE with callbacks (line 13: `callbacks:`, each entry two lines)."""
    lines = "".join(f"  - name: {name}\n    args: {args}\n" for name, args in entries)
    return BASE.replace("backup: false\n", "backup: false\ncallbacks:\n" + lines)


def _refused(tmp_path):
    outside = tmp_path / "outside.csv"
    return [
        (
            "absolute",
            _with_callbacks(("CSVLogger", f"{{filename: {outside}}}")),
            r"callbacks\[0\]\.args\.filename: expected a path relative to the run "
            # the value as given (a long tmp path is shortened with "...")
            rf"directory, got '{re.escape(str(outside)[:24])}.*(\.\.\.|') \(str\)",
            15,
        ),
        (
            "home",
            _with_callbacks(("CSVLogger", "{filename: ~/training.csv}")),
            r"callbacks\[0\]\.args\.filename: expected a path relative to the run",
            15,
        ),
        (
            "parent",
            _with_callbacks(("CSVLogger", "{filename: ../escaped.csv}")),
            r"callbacks\[0\]\.args\.filename: expected a path inside the run directory",
            15,
        ),
        (
            "sneaky parent",
            _with_callbacks(("TensorBoard", "{log_dir: logs/../../../up}")),
            r"callbacks\[0\]\.args\.log_dir: expected a path inside the run directory",
            15,
        ),
        (
            "the run directory",
            _with_callbacks(("TensorBoard", "{log_dir: .}")),
            r"callbacks\[0\]\.args\.log_dir: expected a path inside the run directory",
            15,
        ),
        (
            "the runner's own file",
            _with_callbacks(("CSVLogger", "{filename: config.yaml}")),
            r"callbacks\[0\]\.args\.filename: expected a path that is none of the run "
            r"directory's own entries",
            15,
        ),
        (
            "inside the checkpoint",
            _with_callbacks(("CSVLogger", "{filename: checkpoint/log.csv}")),
            r"callbacks\[0\]\.args\.filename: expected a path that is none of",
            15,
        ),
        (
            "two callbacks, one file",
            _with_callbacks(
                ("CSVLogger", "{filename: training.csv}"),
                ("CSVLogger", "{filename: ./training.csv}"),
            ),
            r"callbacks\[1\]\.args\.filename: expected a path of its own, not "
            r"callbacks\[0\]\.args\.filename's or one inside it",
            17,
        ),
        (
            "a file inside another's directory",
            _with_callbacks(
                ("TensorBoard", "{update_freq: epoch}"),  # log_dir: logs, its default
                ("CSVLogger", "{filename: logs/training.csv}"),
            ),
            r"callbacks\[1\]\.args\.filename: expected a path of its own, not "
            r"callbacks\[0\]\.args\.log_dir's",
            17,
        ),
    ]


@pytest.mark.parametrize("case", range(9))
def test_a_config_callback_path_stays_in_its_run_directory(tmp_path, capsys, case):
    name, text, message, line = _refused(tmp_path)[case]
    config = _write(tmp_path, text)
    workdir = tmp_path / "runs"
    said = {}
    for command in ("validate", "run"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and not out, (name, err)
        (text_line,) = err.strip().splitlines()
        assert re.search(message, text_line), text_line
        assert text_line.endswith(f"({config}, line {line})"), text_line
        said[command] = text_line.removeprefix(f"jaxfit {command}: ")
    assert said["validate"] == said["run"]
    assert not workdir.exists()
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]  # nothing written beside


def test_a_config_callback_file_in_a_missing_directory_is_made(tmp_path, capsys):
    # validate said valid and run failed raw; now the directory is made
    config = _write(
        tmp_path, _with_callbacks(("CSVLogger", "{filename: logs/deep/training.csv}"))
    )
    code, out, err = _cli(capsys, "validate", config)
    assert code == 0 and "valid" in out, err
    result = jaxfit.run(config, str(tmp_path / "runs"))
    log = os.path.join(result.run_dir, "logs", "deep", "training.csv")
    with open(log, encoding="utf-8") as f:
        assert f.read().startswith("epoch,loss")
    assert [p.name for p in run_dirs(tmp_path / "runs")] == [
        os.path.basename(result.run_dir)
    ]


@needs_tensorboard
def test_a_config_tensorboard_without_log_dir_writes_into_its_run(
    tmp_path, capsys, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = _write(tmp_path, _with_callbacks(("TensorBoard", "{histogram_freq: 0}")))
    result = jaxfit.run(config, str(tmp_path / "runs"))
    assert os.path.isdir(os.path.join(result.run_dir, "logs", "train"))
    assert os.listdir(work) == []  # not ./logs of the working directory


# --- jaxfit configs DIR --------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["empty", "dot", "cwd", "home", "root", "a foreign directory"]
)
def test_configs_dir_follows_the_path_policy(tmp_path, capsys, monkeypatch, case):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    canary = _canary(tmp_path / "foreign")
    target, words = {
        "empty": ("", "of its own"),
        "dot": (".", "of its own"),
        "cwd": (str(work), "not the working directory"),
        "home": (str(home), "the home directory"),
        "root": (os.path.abspath(os.sep), "the filesystem root"),
        "a foreign directory": (str(tmp_path / "foreign"), "with other files in it"),
    }[case]
    code, out, err = _cli(capsys, "configs", target)
    assert code == 2 and not out
    (line,) = err.strip().splitlines()
    assert line.startswith("jaxfit configs: DIR: ") and words in line, line
    assert os.listdir(work) == [] and os.listdir(home) == []
    assert sorted(os.listdir(tmp_path / "foreign")) == ["mine.txt"]
    assert canary.read_bytes() == CANARY


def test_configs_dir_is_made_with_the_marker_or_may_be_empty(tmp_path, capsys):
    code, _, err = _cli(capsys, "configs", str(tmp_path / "new"))
    assert code == 0, err
    assert (tmp_path / "new" / ".jaxfit").is_file()
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, "configs", str(tmp_path / "empty"))
    assert code == 0, err
    assert "digits_mlp.yaml" in os.listdir(tmp_path / "empty")
