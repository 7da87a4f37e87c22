"""Bad config values never reach JAX: each is a one-line error naming the key path,
what was expected and what was given, and the file line (once), from ``jaxfit
validate`` and ``jaxfit run`` alike, before anything is created; YAML floats
(``3e-3``) work in every float argument.
"""

import re

import pytest
import yaml
from runner_helpers import run_cli as _cli
from runner_helpers import tiny_config
from runner_helpers import write_config as _write

import jaxfit

BASE = tiny_config("  epochs: 1\n  batch_size: 16\n", "backup: false\n")

MLP = BASE.replace(
    """\
  name: runner_helpers:linear_model
""",
    """\
  name: mlp
  args:
    hidden: [8, 4]
    dropout: 0.1
""",
)  # model.args.hidden (and hidden[i]) is line 5, dropout line 6


# (config text, --set overrides, the message (a regex), where it points: a line of
# the file, or the --set that caused it)
CASES = [
    # built-in models: values checked by their declared types
    (
        MLP.replace("[8, 4]", "[8, 0]"),
        [],
        r"model.args.hidden\[1\]: expected a positive integer, got 0 \(int\)",
        5,
    ),
    (
        MLP.replace("dropout: 0.1", "dropout: 1.5"),
        [],
        r"model.args.dropout: expected a number in \[0, 1\), got 1.5 \(float\)",
        6,
    ),
    (
        MLP,
        ["model.args.activation=relu7"],
        r"model.args.activation: expected one of 'relu', .*got \"relu7\" \(str\)",
        "--set model.args.activation=relu7",
    ),
    (
        MLP.replace("  name: mlp", "  name: resnet").replace(
            "    hidden: [8, 4]\n    dropout: 0.1\n", "    stage_channels: []\n"
        ),
        [],
        r"model.args.stage_channels: expected a non-empty list \(each a positive "
        r"integer\), got \[\] \(list\)",
        5,
    ),
    (
        MLP.replace("  name: mlp", "  name: cnn").replace("    hidden: [8, 4]\n", ""),
        [],
        r"model.name: expected data of images \(n, height, width, channels\) for 'cnn', "
        r"got x of shape \(2, 3\)",
        3,
    ),
    (
        BASE.replace("runner_helpers:linear_model", "perceptron"),
        [],
        r"model.name: unknown name 'perceptron'; expected one of \['cnn', 'mlp', "
        r"'resnet'\]",
        3,
    ),
    # a user model that does not take the data: found by tracing it, not running it
    (
        BASE.replace("linear_model", "wide_model"),
        [],
        r"model.name: expected 'runner_helpers:wide_model' to take the data of data.name "
        r"'runner_helpers:tiny_data': x: the model cannot be applied to x of shape "
        r"\(16, 3\)",
        3,
    ),
    # built-in datasets
    (
        BASE.replace(
            "runner_helpers:tiny_data",
            "synthetic_classification\n  args: {num_samples: 0}",
        ),
        [],
        r"data.args.num_samples: expected a positive integer, got 0 \(int\)",
        6,
    ),
    (
        BASE.replace(
            "runner_helpers:tiny_data", "synthetic_regression\n  args: {noise: -1}"
        ),
        [],
        r"data.args.noise: expected a number >= 0, got -1 \(int\)",
        6,
    ),
    (
        BASE.replace(
            "runner_helpers:tiny_data",
            "synthetic_regression\n  args: {num_samples: 10, test_fraction: 0.01}",
        ),
        [],
        r"data.args.test_fraction: expected a fraction that leaves samples for both "
        r"training and testing of the 10 samples, got 0.01 \(float\)",
        6,
    ),
    # optimizer and schedule arguments, by optax's signatures
    (
        BASE,
        ["optimizer.args.momentum=fast"],
        r'optimizer.args.momentum: expected a number or null, got "fast" \(str\)',
        "--set optimizer.args.momentum=fast",
    ),
    (
        BASE.replace(
            "learning_rate: 0.1",
            "learning_rate:\n    schedule: cosine\n    "
            "args: {init_value: 1e-1, decay_steps: 1e3}",
        ),
        [],
        r'optimizer.learning_rate.args.decay_steps: expected an integer, got "1e3" '
        r"\(str\)",
        10,
    ),
    (
        BASE.replace(
            "learning_rate: 0.1",
            "learning_rate:\n    schedule: cosine\n    "
            "args: {init_value: 1e-1, decay_steps: 0}",
        ),
        [],
        r"optimizer.learning_rate.args: expected arguments optax.cosine_decay_schedule "
        r"accepts, got .*decay_steps",
        10,
    ),
    # loss and metrics: no doubled prefix
    (
        BASE.replace("backup: false", "loss: mean_squared_eror\nbackup: false"),
        [],
        r"^jaxfit \w+: loss: expected a loss name .*got 'mean_squared_eror' \(str\)",
        12,
    ),
    (
        BASE.replace("backup: false", "metrics: [mae, acuracy]\nbackup: false"),
        [],
        r"metrics\[1\]: expected a metric name .*got 'acuracy' \(str\)",
        12,
    ),
    # labels that do not suit the chosen loss: the trainer's check, keyed to `loss`
    (
        BASE.replace("tiny_data", "tiny_classes").replace(
            "backup: false", "loss: mse\nbackup: false"
        ),
        [],
        r"loss: expected labels that suit it from data.name 'runner_helpers:tiny_classes'"
        r": y: expected labels shaped like the model's output \(N, 2\) for "
        r"mean_squared_error, got shape \(N,\)",
        12,
    ),
    # fit values only the data can check (the trainer's own checks)
    (
        BASE,
        ["fit.validation_split=0.99"],
        r"fit.validation_split: expected a fraction leaving samples on both sides, got "
        r"0.99 \(float\)",
        "--set fit.validation_split=0.99",
    ),
    # callbacks: their constructors' checks, keyed to the argument
    (
        BASE.replace(
            "backup: false",
            "callbacks:\n  - name: EarlyStopping\n    args: "
            "{monitor: loss, mode: best}\nbackup: false",
        ),
        [],
        r"callbacks\[0\].args.mode: expected one of 'auto', 'min', 'max', got \"best\" "
        r"\(str\)",
        14,
    ),
    (
        BASE.replace(
            "backup: false",
            "callbacks:\n  - name: ReduceLROnPlateau\n    "
            "args: {factor: 1e-x}\nbackup: false",
        ),
        [],
        r'callbacks\[0\].args.factor: expected a number, got "1e-x" \(str\)',
        14,
    ),
    (
        BASE.replace(
            "backup: false",
            "callbacks:\n  - name: runner_helpers:Picky\n    "
            "args: {threshold: 2.0}\nbackup: false",
        ),
        [],
        r"callbacks\[0\].args.threshold: expected a number in \(0, 1\), got 2.0",
        14,
    ),
]


@pytest.mark.parametrize("text,overrides,message,where", CASES)
def test_a_bad_value_names_its_key_and_line_once_and_creates_nothing(
    tmp_path, capsys, text, overrides, message, where
):
    config = _write(tmp_path, text)
    workdir = tmp_path / "runs"
    suffix = (
        f"({config}, line {where})" if isinstance(where, int) else f"(from {where})"
    )
    for command in ("validate", "run"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        for item in overrides:
            argv += ["--set", item]
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == "", (out, err)  # nothing else printed
        (line,) = err.strip().splitlines()  # one line
        assert line.startswith(f"jaxfit {command}: ")
        assert re.search(message, line), line
        assert line.endswith(suffix), line
        assert line.count(" line ") + line.count("(from --set") == 1, line
        key = line.removeprefix(f"jaxfit {command}: ").split(": ", 1)[0]
        assert f"{key}: {key}:" not in line, line  # no doubled prefix
    assert not workdir.exists()


def test_yaml_floats_work_in_every_float_argument(tmp_path, capsys):
    # PyYAML reads 3e-3 (no dot) as a string: schedule, optimizer, callback and
    # dataset arguments still get a float.
    config = _write(
        tmp_path,
        BASE.replace(
            "runner_helpers:tiny_data",
            ("runner_helpers:scaled_data\n  args: {scale: 5e-1}"),
        )
        .replace(
            "name: sgd\n  learning_rate: 0.1",
            "name: adamw\n  learning_rate:\n"
            "    schedule: warmup_cosine\n    args: {init_value: 0.0, peak_value: 3e-3, "
            "warmup_steps: 2, decay_steps: 20}\n  args: {weight_decay: 1e-4}",
        )
        .replace(
            "backup: false",
            "callbacks:\n  - name: EarlyStopping\n    args: {monitor: "
            "loss, min_delta: 1e-4, baseline: 1e3}\nbackup: false",
        ),
    )
    code, out, err = _cli(capsys, "validate", config)
    assert code == 0 and "valid" in out, err
    result = jaxfit.run(config, str(tmp_path / "runs"))
    assert len(result.history.epoch) == 1
    with open(f"{result.run_dir}/config.yaml", encoding="utf-8") as f:
        resolved = yaml.safe_load(f)
    assert resolved["optimizer"]["learning_rate"]["args"]["peak_value"] == 0.003
    assert resolved["optimizer"]["args"]["weight_decay"] == 0.0001
    assert resolved["data"]["args"]["scale"] == 0.5
    assert resolved["callbacks"][0]["args"]["baseline"] == 1000.0


def test_a_rerun_of_the_resolved_config_is_valid(tmp_path, capsys):
    # What run writes (config.yaml with its environment section) validates as is.
    result = jaxfit.run(_write(tmp_path, MLP), str(tmp_path / "runs"))
    code, out, err = _cli(capsys, "validate", f"{result.run_dir}/config.yaml")
    assert code == 0 and "valid" in out, err
