"""The YAML runner: shipped configs end to end, config errors, overrides, resume."""

import json
import os
import pathlib

import pytest
from runner_helpers import run_cli as _run
from runner_helpers import run_dirs, tiny_config
from runner_helpers import write_config as _write

pytest.importorskip("flax", reason="the built-in models are Flax modules")
pytest.importorskip("sklearn", reason="the digits dataset ships with scikit-learn")

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
RUN_FILES = {
    ".jaxfit",
    "checkpoint",
    "config.yaml",
    "curves.png",
    "history.csv",
    "history.json",
    "metrics.json",
    "run.log",
}


def _only_run_dir(workdir):
    (run_dir,) = run_dirs(workdir)
    return run_dir


def _history(run_dir):
    with open(run_dir / "history.json", encoding="utf-8") as f:
        return json.load(f)


# (config, overrides that shrink it, extra files it leaves)
SHIPPED = [
    ("digits_mlp.yaml", ["fit.epochs=2"], {"training.csv"}),
    ("digits_cnn.yaml", ["fit.epochs=1", "model.args.channels=[4]"], set()),
    ("regression.yaml", ["fit.epochs=2", "data.args.num_samples=200"], set()),
    (
        "digits_cnn.yaml",
        ["fit.epochs=1", "model.name=resnet", "model.args={stage_channels: [4, 8]}"],
        set(),
    ),
]


@pytest.mark.parametrize("name,overrides,extra", SHIPPED)
def test_shipped_configs_run_end_to_end(tmp_path, capsys, name, overrides, extra):
    argv = ["run", str(CONFIGS / name), "--workdir", str(tmp_path)]
    for item in overrides:
        argv += ["--set", item]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    run_dir = _only_run_dir(tmp_path)
    assert {p.name for p in run_dir.iterdir()} == RUN_FILES | extra  # backup/ removed
    assert f"run directory: {run_dir}" in out
    history = _history(run_dir)
    epochs = int(next(o for o in overrides if o.startswith("fit.epochs")).split("=")[1])
    assert len(history["epoch"]) == epochs and "val_loss" in history
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        assert "loss" in json.load(f)["test"]
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "Epoch 1/" in log and "run directory:" in log
    import yaml

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["fit"]["epochs"] == epochs  # after --set
    assert set(resolved["environment"]["versions"]) >= {
        "jax",
        "jaxlib",
        "optax",
        "jaxfit",
    }
    assert resolved["environment"]["devices"]
    code, out, _ = _run(capsys, "show", str(run_dir))
    assert code == 0 and "test: loss" in out and f"epochs: {epochs}" in out


BASE = tiny_config("  epochs: 2\n  batch_size: 16\n")

# (config text replacing a line of BASE, or overrides; the expected message)
BAD = [
    (BASE + "colour: blue\n", [], r"colour: unknown key; expected one of .*line 12"),
    (
        BASE.replace("batch_size: 16", "batch_size: 32x"),
        [],
        r'fit.batch_size: expected a positive integer, got "32x" \(str\) \(.*line 11\)',
    ),
    (
        BASE.replace("batch_size: 16", "batch_sise: 16"),
        [],
        r"fit.batch_sise: unknown key; expected one of \[.*'batch_size'",
    ),
    (
        BASE.replace("runner_helpers:linear_model", "perceptron"),
        [],
        r"model.name: unknown name 'perceptron'; expected one of \['cnn', 'mlp', "
        r"'resnet'\]",
    ),
    (
        BASE.replace("name: sgd", "name: adamm"),
        [],
        r"optimizer.name: expected an optax optimizer .* got 'adamm'",
    ),
    (
        BASE.replace("runner_helpers:tiny_data", "no_such_module:data"),
        [],
        r"data.name: cannot import module 'no_such_module'",
    ),
    (
        BASE.replace("runner_helpers:tiny_data", "runner_helpers:nothing"),
        [],
        r"data.name: module 'runner_helpers' has no attribute 'nothing'",
    ),
    (
        BASE,
        ["fit.batch_size=32x"],
        r'fit.batch_size: expected a positive integer, got "32x" \(str\) \(from --set '
        r"fit.batch_size=32x\)",
    ),
    (BASE, ["model.args.depth=3"], r"model.args.depth: unknown argument"),
    (BASE, ["optimizer.args.momentm=0.9"], r"optimizer.args.momentm: unknown argument"),
    (
        BASE,
        ["optimizer.learning_rate={schedule: linear}"],
        r"optimizer.learning_rate.schedule: expected one of 'constant'",
    ),
    (BASE, ["callbacks=[{name: EarlyStop}]"], r"callbacks\[0\].name: unknown callback"),
    (
        BASE,
        ["callbacks=[{name: EarlyStopping, args: {patiense: 2}}]"],
        r"callbacks\[0\].args.patiense: unknown argument",
    ),
    (BASE, ["loss=mean_squared_eror"], r"loss: "),
    (
        BASE,
        ["fit.validation_split=1.5"],
        r"fit.validation_split: expected a float in \[0, 1\), got 1.5 \(float\)\. "
        r"\(from --set fit.validation_split=1.5\)",
    ),
    (BASE, ["precision=float8"], r"precision: expected one of 'float32'"),
    ("name: [unclosed\n", [], r"not valid YAML"),
    (BASE.replace("name: tiny\n", ""), [], r"name: missing required key"),
]


@pytest.mark.parametrize("text,overrides,message", BAD)
def test_bad_configs_get_a_clear_error_and_create_nothing(
    tmp_path, capsys, text, overrides, message
):
    import re

    config = _write(tmp_path, text)
    workdir = tmp_path / "runs"
    for command in ("run", "validate"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        for item in overrides:
            argv += ["--set", item]
        code, _, err = _run(capsys, *argv)
        assert code == 2
        assert re.search(message, err), err
    assert not workdir.exists()


def test_user_code_and_overrides_reach_the_trainer(tmp_path, capsys):
    config = _write(tmp_path, BASE)
    code, out, err = _run(capsys, "validate", config)
    assert code == 0 and "valid" in out, err
    code, _, err = _run(
        capsys,
        "run",
        config,
        "--workdir",
        str(tmp_path / "runs"),
        "--set",
        "fit.batch_size=8",
        "--set",
        "optimizer.learning_rate=0.05",
        "--set",
        "fit.epochs=3",
    )
    assert code == 0, err
    history = _history(_only_run_dir(tmp_path / "runs"))
    assert history["epoch"] == [0, 1, 2]
    assert history["learning_rate"] == pytest.approx([0.05] * 3)
    with open(_only_run_dir(tmp_path / "runs") / "history.csv", encoding="utf-8") as f:
        assert f.readline().startswith("epoch,loss")


def test_the_same_config_and_seed_give_the_same_history(tmp_path, capsys):
    histories = []
    for workdir in ("a", "b"):
        code, _, err = _run(
            capsys,
            "run",
            str(CONFIGS / "digits_mlp.yaml"),
            "--workdir",
            str(tmp_path / workdir),
            "--set",
            "fit.epochs=2",
        )
        assert code == 0, err
        histories.append(_history(_only_run_dir(tmp_path / workdir)))
    assert histories[0] == histories[1]


def test_run_directories_never_overwrite_each_other(tmp_path, capsys):
    config = _write(tmp_path, BASE)
    for _ in range(2):
        assert _run(capsys, "run", config, "--workdir", str(tmp_path / "runs"))[0] == 0
    names = [p.name for p in run_dirs(tmp_path / "runs")]
    assert len(names) == 2 and all(n.startswith("tiny-") for n in names)


def test_resume_continues_a_killed_run_exactly(tmp_path, capsys):
    marker = tmp_path / "interrupted"
    config = _write(
        tmp_path,
        BASE.replace("epochs: 2", "epochs: 4")
        + f"""\
callbacks:
  - name: runner_helpers:InterruptOnce
    args: {{epoch: 1, marker: {marker}}}
""",
    )
    reference = _write(tmp_path, BASE.replace("epochs: 2", "epochs: 4"), "ref.yaml")
    assert _run(capsys, "run", reference, "--workdir", str(tmp_path / "ref"))[0] == 0
    expected = _history(_only_run_dir(tmp_path / "ref"))

    code, _, err = _run(capsys, "run", config, "--workdir", str(tmp_path / "runs"))
    run_dir = _only_run_dir(tmp_path / "runs")
    assert code == 130 and err == (
        f"jaxfit run: interrupted after epoch 2/4; resume "
        f"with: jaxfit run --resume {run_dir}\n"
    )
    assert (run_dir / "backup").is_dir() and not (run_dir / "history.json").exists()
    code, out, _ = _run(capsys, "show", str(run_dir))
    assert "not finished" in out and "--resume" in out

    code, _, err = _run(capsys, "run", "--resume", str(run_dir))
    assert code == 0, err
    assert _history(run_dir) == expected
    assert not (run_dir / "backup").exists()
    code, _, err = _run(capsys, "run", "--resume", str(run_dir))
    assert code == 2 and "finished already" in err


def test_python_dash_m_jaxfit_is_the_cli():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "jaxfit", "validate", str(CONFIGS / "regression.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert os.path.exists(CONFIGS / "regression.yaml")
