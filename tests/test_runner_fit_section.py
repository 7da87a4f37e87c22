"""The YAML ``fit`` section: derived from Trainer.fit / fit_dataset, stream datasets,
validation_batches, accumulate_steps, and process 0 alone writing the run directory.
"""

import dataclasses
import inspect
import json
import re
import typing

import numpy as np
import pytest
import runner_helpers
from runner_helpers import run_cli as _cli
from runner_helpers import tiny_config
from runner_helpers import write_config as _write

import jaxfit
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.runner import run as run_lib
from jaxfit._src.runner import schema

BASE = tiny_config("  epochs: 2\n")

STREAMS = BASE.replace("runner_helpers:tiny_data", "runner_helpers:tiny_streams")


def _keyword_arguments(method):
    return {
        name: p
        for name, p in inspect.signature(method).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }


# -- the section is the trainer's signature -----------------------------------------


def test_the_fit_section_is_fit_and_fit_dataset_less_the_documented_exclusions():
    fit = _keyword_arguments(jaxfit.Trainer.fit)
    fit_dataset = _keyword_arguments(jaxfit.Trainer.fit_dataset)
    expected = (set(fit) | set(fit_dataset)) - set(schema.FIT_EXCLUDED)
    fields = {f.name: f for f in dataclasses.fields(schema.FitConfig)}
    assert set(fields) == expected
    assert {"accumulate_steps", "validation_batches", "class_weight"} <= set(fields)
    assert set(schema.FIT_EXCLUDED) <= set(fit) | set(fit_dataset)  # no stale entry
    assert set(schema.RUNNER_DEFAULTS) | set(schema.AT_LEAST_ZERO) <= set(fields)
    hints = {
        **typing.get_type_hints(jaxfit.Trainer.fit_dataset),
        **typing.get_type_hints(jaxfit.Trainer.fit),
    }
    for name, field in fields.items():
        assert field.type == hints[name], name
        assert schema.checkable(field.type), (
            f"Trainer argument {name}: {field.type} cannot be checked from YAML; "
            "support the type in schema._convert or add it to FIT_EXCLUDED"
        )
        default = (fit.get(name) or fit_dataset[name]).default
        assert field.default == schema.RUNNER_DEFAULTS.get(name, default), name


def test_fit_and_fit_dataset_agree_on_their_shared_arguments():
    fit = typing.get_type_hints(jaxfit.Trainer.fit)
    fit_dataset = typing.get_type_hints(jaxfit.Trainer.fit_dataset)
    shared = set(_keyword_arguments(jaxfit.Trainer.fit)) & set(
        _keyword_arguments(jaxfit.Trainer.fit_dataset)
    )
    assert shared >= {"epochs", "verbose", "yield_every", "class_weight"}
    for name in shared:
        assert fit[name] == fit_dataset[name], name


def test_a_new_trainer_argument_is_a_checked_config_key(monkeypatch):
    def fit(
        self,
        x,
        y,
        *,
        batch_size: int = 32,
        label_smoothing: float = 0.0,
        num_warmup: int | None = None,
        callbacks=None,
        now=None,
    ):
        del self, x, y, batch_size, label_smoothing, num_warmup, callbacks, now

    def fit_dataset(self, dataset, *, validation_batches: int | None = None):
        del self, dataset, validation_batches

    cls = schema.make_fit_config(fit, fit_dataset)
    assert [f.name for f in dataclasses.fields(cls)] == [
        "batch_size",
        "label_smoothing",
        "num_warmup",
        "validation_batches",
    ]
    monkeypatch.setattr(schema, "FitConfig", cls)  # what the import would make
    config = schema.parse({"name": "x", "fit": {"label_smoothing": "1e-1"}})
    assert config.fit.label_smoothing == 0.1 and config.fit.num_warmup is None
    with pytest.raises(
        schema.ConfigError,
        match=re.escape(
            'fit.num_warmup: expected a positive integer or null, got "3x" (str) '
            "(x.yaml, line 3)"
        ),
    ):
        schema.parse(
            {"name": "x", "fit": {"num_warmup": "3x"}},
            {"fit": 2, "fit.num_warmup": 3},
            "x.yaml",
        )


def test_precision_values_are_the_cores(tmp_path, capsys):
    config = _write(tmp_path, BASE)
    for name in precision_lib.PRECISIONS:
        assert _cli(capsys, "validate", config, "--set", f"precision={name}")[0] == 0
    code, _, err = _cli(capsys, "validate", config, "--set", "precision=float8")
    assert code == 2
    listed = re.search(r"precision: expected one of (.*), got", err).group(1)
    assert listed == ", ".join(repr(p) for p in precision_lib.PRECISIONS)


@pytest.mark.parametrize(
    "value,ok",
    [
        ("auto", True),
        ("batch", True),
        ("never", True),
        ("epoch", True),
        ("50", True),
        ("1e2", True),
        ("sometimes", False),
        ("-5", False),
    ],
)
def test_yield_every_is_checked_by_the_trainers_annotation_and_parser(
    tmp_path, capsys, value, ok
):
    config = _write(tmp_path, BASE)
    code, _, err = _cli(capsys, "validate", config, "--set", f"fit.yield_every={value}")
    assert (code == 0) == ok, err
    if not ok:
        assert err.startswith(
            "jaxfit validate: fit.yield_every: expected one of "
            "'auto', 'batch', 'epoch', 'never'"
        )
        assert f"(from --set fit.yield_every={value})" in err


# -- arrays: accumulate_steps, class_weight -----------------------------------------


def test_accumulate_steps_from_yaml_equals_a_batch_k_times_larger(tmp_path):
    # Equal batches, no shuffling: the mean gradient of two batches of 8 is the
    # gradient of their batch of 16, and both halves see the same params.
    def loss(name, fit):
        text = BASE + "  shuffle: false\n" + fit + "backup: false\n"
        return jaxfit.run(
            _write(tmp_path, text, f"{name}.yaml"), str(tmp_path / name)
        ).history.history["loss"]

    accumulated = loss("a", "  batch_size: 8\n  accumulate_steps: 2\n")
    assert len(accumulated) == 2
    np.testing.assert_allclose(accumulated, loss("b", "  batch_size: 16\n"), rtol=1e-5)
    assert not np.allclose(accumulated, loss("c", "  batch_size: 8\n"), rtol=1e-3)


def test_class_weight_is_a_mapping_in_yaml(tmp_path):
    text = BASE.replace("tiny_data", "tiny_classes") + "backup: false\n"
    histories = {}
    for label, weights in [
        ("none", ""),
        ("ones", "{0: 1, 1: 1.0}"),
        ("skewed", "{0: 1.0, 1: 3.0}"),
    ]:
        extra = f"  class_weight: {weights}\n" if weights else ""
        fit_text = text.replace("  epochs: 2\n", "  epochs: 2\n" + extra)
        histories[label] = jaxfit.run(
            _write(tmp_path, fit_text, f"{label}.yaml"), str(tmp_path / label)
        ).history.history["loss"]
    np.testing.assert_allclose(histories["ones"], histories["none"], rtol=1e-6)
    assert not np.allclose(histories["skewed"], histories["none"], rtol=1e-3)


# -- streams --------------------------------------------------------------------------


def test_a_stream_dataset_runs_end_to_end_with_validation_batches(tmp_path, capsys):
    # The validation stream is endless: only validation_batches ends each pass.
    config = _write(tmp_path, STREAMS + "  validation_batches: 2\n")
    code, out, err = _cli(capsys, "validate", config)
    assert code == 0 and "(streams)" in out, err
    result = jaxfit.run(config, str(tmp_path / "runs"))
    assert result.history.epoch == [0, 1]
    assert set(result.history.history) >= {"loss", "mae", "val_loss", "val_mae"}
    assert runner_helpers.READ["validation"] == 2 * 2  # 2 batches x 2 epochs
    assert runner_helpers.READ["test"] == 2
    assert set(result.metrics["test"]) == {"loss", "mae"}
    files = {p.name for p in runner_helpers.run_dirs(tmp_path / "runs")}
    assert len(files) == 1
    run_dir = tmp_path / "runs" / files.pop()
    assert {p.name for p in run_dir.iterdir()} == {
        ".jaxfit",  # the run directory's marker (its stored config, its lock)
        "checkpoint",
        "config.yaml",
        "curves.png",
        "history.csv",
        "history.json",
        "metrics.json",
        "run.log",
    }
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        assert json.load(f)["test"] == pytest.approx(result.metrics["test"])


def test_validation_batches_limits_a_list_of_batches(tmp_path):
    def val_loss(num_validation, limit):
        text = (
            STREAMS.replace(
                "runner_helpers:tiny_streams\n",
                "runner_helpers:tiny_streams\n  args: {form: list, num_validation: "
                f"{num_validation}}}\n",
            )
            + "backup: false\n"
        )
        if limit:
            text = text.replace(
                "  epochs: 2\n", f"  epochs: 2\n  validation_batches: {limit}\n"
            )
        name = f"v{num_validation}-{limit}"
        return jaxfit.run(
            _write(tmp_path, text, f"{name}.yaml"), str(tmp_path / name)
        ).history.history["val_loss"]

    limited = val_loss(3, 2)
    np.testing.assert_allclose(limited, val_loss(2, None), rtol=1e-6)
    assert not np.allclose(limited, val_loss(3, None), rtol=1e-4)


def test_a_stream_with_steps_per_epoch_and_initial_epoch(tmp_path):
    text = (
        STREAMS.replace(
            "  epochs: 2\n", "  steps_per_epoch: 2\n  initial_epoch: 1\n  epochs: 3\n"
        )
        + "backup: false\n"
    )
    text = text.replace(
        "runner_helpers:tiny_streams\n",
        "runner_helpers:tiny_streams\n  args: {validation: false}\n",
    )
    result = jaxfit.run(_write(tmp_path, text), str(tmp_path / "runs"))
    assert result.history.epoch == [1, 2]


# (where the data comes from, fit overrides, the error's start, where it points)
BAD_COMBOS = [
    (
        "tiny_streams",
        ["fit.batch_size=8"],
        r"fit.batch_size: applies to in-memory arrays only \(Trainer.fit\); the dataset "
        r"from data.name 'runner_helpers:tiny_streams' returns streams, trained with "
        r"Trainer.fit_dataset; remove it\. \(from --set fit.batch_size=8\)",
    ),
    (
        "tiny_streams",
        ["fit.accumulate_steps=2"],
        r"fit.accumulate_steps: applies to "
        r"in-memory arrays only",
    ),
    (
        "tiny_streams",
        ["fit.validation_split=0.2"],
        r"fit.validation_split: applies to "
        r"in-memory arrays only",
    ),
    ("tiny_streams", ["fit.shuffle=false"], r"fit.shuffle: applies to in-memory"),
    (
        "tiny_streams",
        ["fit.validation_steps=2"],
        r"fit.validation_steps: applies to .*; use fit.validation_batches \(the same "
        r"limit, for streams\)",
    ),
    (
        "tiny_data",
        ["fit.validation_batches=2"],
        r"fit.validation_batches: applies to streams of batches only "
        r"\(Trainer.fit_dataset\); the dataset from data.name 'runner_helpers:tiny_data' "
        r"returns arrays, trained with Trainer.fit; use fit.validation_steps \(the same "
        r"limit, for arrays\)\. \(from --set fit.validation_batches=2\)",
    ),
    (
        "tiny_streams",
        ["data.args={validation: false}", "fit.validation_batches=2"],
        r"fit.validation_batches: the dataset from data.name "
        r"'runner_helpers:tiny_streams' has no 'validation' stream",
    ),
    (
        "tiny_streams",
        ["data.args={task: classification}"],
        r"data.name: a classification dataset of streams must give 'num_outputs'",
    ),
    (
        "tiny_streams",
        ["data.args={extra: {validation_x: 1}}"],
        r"data.name: the dataset callable returned unknown keys \['validation_x'\]",
    ),
    (
        "tiny_data",
        ["fit.class_weight={0: heavy}"],
        r'fit.class_weight.0: expected a number, got "heavy" \(str\)',
    ),
    (
        "tiny_data",
        ["fit.class_weight={-1: 2.0}"],
        r"fit.class_weight: expected a dict mapping class indices \(int >= 0\)",
    ),
    (
        "tiny_data",
        ["fit.accumulate_steps=0"],
        r"fit.accumulate_steps: expected a positive integer, got 0 \(int\)",
    ),
]


@pytest.mark.parametrize("data,overrides,message", BAD_COMBOS)
def test_fit_keys_that_do_not_apply_to_the_data_are_config_errors(
    tmp_path, capsys, data, overrides, message
):
    config = _write(tmp_path, BASE.replace("tiny_data", data))
    workdir = tmp_path / "runs"
    for command in ("validate", "run"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        for item in overrides:
            argv += ["--set", item]
        code, _, err = _cli(capsys, *argv)
        assert code == 2, err
        assert re.search(message, err), err
    assert not workdir.exists()


def test_a_key_error_found_after_parsing_points_at_its_line(tmp_path, capsys):
    config = _write(tmp_path, STREAMS + "  batch_size: 16\n")
    code, _, err = _cli(capsys, "validate", config)
    assert code == 2 and err.rstrip().endswith(f"({config}, line 11)"), err


def test_array_only_keys_at_their_default_are_fine_with_streams(tmp_path, capsys):
    # A resolved config.yaml lists every key; rerunning it must work.
    config = _write(tmp_path, STREAMS + "  batch_size: 32\n  shuffle: true\n")
    code, out, err = _cli(capsys, "validate", config)
    assert code == 0 and "(streams)" in out, err


# -- multi-process: process 0 alone writes --------------------------------------------


def test_a_process_other_than_0_trains_but_writes_no_plain_file(
    tmp_path, monkeypatch, capsys
):
    # Process 0 made the directory and broadcast its path; this one is process 1.
    run_dir = tmp_path / "runs" / "tiny-shared"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(run_lib, "_process_index", lambda: 1)
    monkeypatch.setattr(
        run_lib,
        "_shared_path",
        lambda path: (
            pytest.fail("process 1 created a directory") if path else str(run_dir)
        ),
    )
    config = _write(
        tmp_path,
        STREAMS.replace(
            "runner_helpers:tiny_streams\n",
            "runner_helpers:tiny_streams\n  args: {form: list}\n",
        ),
    )
    result = jaxfit.run(config, str(tmp_path / "runs"))
    assert result.run_dir == str(run_dir) and result.history.epoch == [0, 1]
    assert "test" in result.metrics
    # orbax's checkpoint is collective; backup/ came and went; nothing else.
    # (Callbacks that write files, CSVLogger and TensorBoard, check the process
    # index themselves.)
    assert {p.name for p in run_dir.iterdir()} == {"checkpoint"}
    assert [p.name for p in runner_helpers.run_dirs(tmp_path / "runs")] == [
        "tiny-shared"
    ]
    out, _ = capsys.readouterr()
    assert "jaxfit run:" not in out and "run directory:" not in out


def test_two_processes_share_one_run_directory_written_by_process_0(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    config = _write(tmp_path, BASE + "  batch_size: 16\n  validation_split: 0.25\n")
    worker = os.path.join(os.path.dirname(__file__), "runner_worker.py")
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                worker,
                str(port),
                str(rank),
                config,
                str(tmp_path / "runs"),
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out)
    results = []
    for rank in (0, 1):
        with open(tmp_path / f"result-{rank}.json", encoding="utf-8") as f:
            results.append(json.load(f))
    assert results[0] == results[1]  # the same directory, History and metrics
    (run_dir,) = runner_helpers.run_dirs(tmp_path / "runs")
    assert str(run_dir) == results[0]["run_dir"]
    assert {p.name for p in run_dir.iterdir()} == {
        ".jaxfit",  # the run directory's marker (its stored config, its lock)
        "checkpoint",
        "config.yaml",
        "curves.png",
        "history.csv",
        "history.json",
        "metrics.json",
        "run.log",
    }
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert log.count("jaxfit run:") == 1 and log.count("Epoch 2/2") == 1
    assert "jaxfit run:" in outputs[0] and "jaxfit run:" not in outputs[1]
