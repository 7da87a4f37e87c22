"""``jaxfit compare RUN_DIR...`` and ``runner.compare.compare``: the table's
numbers are history.json's and metrics.json's, rows sort by the metric's best
in its direction, a population run gives a row per member, the config values
that differ are columns, the PNG holds one curve per row, a sweep directory
stands for its trials, an unfinished run is compared on its backup's epochs,
and every refusal is one line that leaves nothing written."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from runner_helpers import run_cli, tiny_config, write_config

import jaxfit
from jaxfit._src.runner import compare as compare_lib
from jaxfit._src.runner import compare_data

FIT = "  epochs: 4\n  batch_size: 16\n  validation_split: 0.25\n  verbose: 0\n"
DATA = "runner_helpers:tiny_data"
POPULATION = """\
population:
  seeds: 1
  hyperparams:
    optimizer.learning_rate: [0.01, 0.1]
"""
PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def split_data(num_samples=64, num_test=16):
    """The tiny regression task with a test split (metrics.json's ``test``)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(num_samples + num_test, 3)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    n = num_samples
    return {
        "x_train": x[:n],
        "y_train": y[:n],
        "x_test": x[n:],
        "y_test": y[n:],
        "task": "regression",
    }


def _config(fit=FIT, rest=""):
    return tiny_config(fit, rest).replace(DATA, "test_compare:split_data")


def _json(run_dir, name):
    with open(os.path.join(run_dir, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Plain runs ``a`` (sgd 0.1) and ``b`` (sgd 0.3), a population ``p`` (adam,
    two learning rates), ``c`` without validation, and ``u``: ``a`` stopped by
    Ctrl-C at the end of epoch 2 (unfinished)."""
    tmp = tmp_path_factory.mktemp("compare")
    cache = str(tmp / "cache")
    base = write_config(tmp, _config())
    marker = tmp / "interrupted"
    made = {}

    def run(key, config, overrides=()):
        result = jaxfit.run(
            config, str(tmp / key), overrides=overrides, compilation_cache=cache
        )
        made[key] = result.run_dir

    run("a", base)
    run("b", base, ["optimizer.learning_rate=0.3"])
    pop = _config(rest=POPULATION).replace("name: sgd", "name: adam")
    run("p", write_config(tmp, pop, "p.yaml"))
    run("c", base, ["fit.validation_split=0.0"])
    interrupt = _config(
        rest="callbacks:\n  - name: runner_helpers:InterruptOnce\n"
        f"    args: {{epoch: 1, marker: {marker}}}\n"
    )
    with pytest.raises(KeyboardInterrupt):
        jaxfit.run(
            write_config(tmp, interrupt, "u.yaml"),
            str(tmp / "u"),
            compilation_cache=cache,
        )
    (made["u"],) = [str(d) for d in (tmp / "u").iterdir() if d.name != ".jax_cache"]
    return made


def _expected(values, epochs, mode):
    """``(best, its epoch from 1, final, final epoch from 1)`` by hand."""
    pairs = [(v, e + 1) for v, e in zip(values, epochs) if not math.isnan(v)]
    pick = max if mode == "max" else min
    best = pick(pairs, key=lambda p: p[0])
    return best[0], best[1], pairs[-1][0], pairs[-1][1]


def test_the_table_holds_history_json_and_metrics_json_numbers(runs):
    comparison = compare_lib.compare([runs["a"], runs["b"], runs["p"]])
    assert comparison.metric == "val_loss" and comparison.mode == "min"
    assert len(comparison.rows) == 4 and comparison.missing == ()
    for row in comparison.rows:
        history = _json(row.run_dir, "history.json")
        metrics = _json(row.run_dir, "metrics.json")
        values = history["val_loss"]
        test = metrics["test"]
        if row.member is not None:
            assert row.label == f"{runs['p']}[member {row.member}]"
            values = [v[row.member] for v in values]
            test = metrics["per_member"][row.member]["test"]
        expected = _expected(values, history["epoch"], "min")
        assert (row.best, row.best_epoch, row.final, row.final_epoch) == expected
        assert row.values == tuple(values)
        assert row.test == test and set(test) == {"loss", "mae"}
        line = next(
            x for x in comparison.table().splitlines() if x.startswith(row.label + " ")
        )
        assert f"{expected[0]:.6g}" in line and f"{test['mae']:.6g}" in line
    bests = [row.best for row in comparison.rows]
    assert bests == sorted(bests)
    assert set(comparison.differing) == {
        "optimizer.name",
        "optimizer.learning_rate",
        "seed",
    }
    by_label = {row.label: row for row in comparison.rows}
    assert by_label[runs["b"]].config["optimizer.learning_rate"] == 0.3
    member = by_label[f"{runs['p']}[member 1]"]
    assert member.config["optimizer.learning_rate"] == 0.1
    assert member.config["seed"] == 1 and member.config["optimizer.name"] == "adam"
    header = comparison.table().splitlines()[0].split()
    assert header[:5] == ["run", "best", "val_loss", "at", "epoch"]
    assert "optimizer.learning_rate" in header and "test_mae" in header


@pytest.mark.parametrize(
    "metric, mode", [("loss", "min"), ("loss", "max"), ("val_mae", "max")]
)
def test_rows_sort_by_the_best_in_the_metrics_direction(runs, metric, mode):
    comparison = compare_lib.compare(
        [runs["a"], runs["b"], runs["p"]], metric=metric, mode=mode
    )
    assert comparison.mode == mode
    bests = [row.best for row in comparison.rows]
    assert bests == sorted(bests, reverse=mode == "max")
    for row in comparison.rows:
        history = _json(row.run_dir, "history.json")
        values = history[metric]
        if row.member is not None:
            values = [v[row.member] for v in values]
        assert (row.best, row.best_epoch) == _expected(values, history["epoch"], mode)[
            :2
        ]


def test_auto_mode_is_max_for_accuracy_like_keys_else_the_monitors():
    assert compare_data.direction("val_accuracy", "auto", []) == "max"
    assert compare_data.direction("acc", "auto", []) == "max"
    assert compare_data.direction("val_mae", "auto", []) == "min"
    recorded = [{"metrics": {"monitor": {"name": "score", "mode": "max"}}}]
    assert compare_data.direction("score", "auto", recorded) == "max"
    assert compare_data.direction("score", "min", recorded) == "min"


def test_the_cli_prints_the_table_and_draws_one_curve_per_row(runs, tmp_path, capsys):
    import matplotlib.image

    png = tmp_path / "plots" / "compare.png"
    dirs = [runs["a"], runs["b"], runs["p"]]
    code, out, err = run_cli(
        capsys, "compare", *dirs, "--metric", "loss", "--out", str(png)
    )
    assert code == 0 and err == ""
    comparison = compare_lib.compare(dirs, metric="loss")
    assert out == comparison.table() + "\n"
    assert png.read_bytes().startswith(PNG_HEADER)
    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    figure = comparison.plot()
    (ax,) = figure.axes
    assert len(ax.lines) == 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == comparison.labels() and len(set(labels)) == 4
    assert "learning_rate=0.3" in " ".join(labels)
    for line, row in zip(ax.lines, comparison.rows):
        assert list(line.get_xdata()) == [1, 2, 3, 4]
        assert list(line.get_ydata()) == list(row.values)
    import matplotlib.pyplot as plt

    plt.close(figure)
    # its own PNG may be drawn again; no temporary sibling is left (plots/ was
    # made by jaxfit, so it holds jaxfit's marker)
    assert run_cli(capsys, "compare", *dirs, "--out", str(png))[0] == 0
    assert sorted(os.listdir(png.parent)) == [".jaxfit", "compare.png"]


def test_a_run_without_the_metric_is_listed_with_a_dash(runs, capsys):
    code, out, err = run_cli(
        capsys, "compare", runs["a"], runs["c"], "--metric", "val_loss"
    )
    assert code == 0
    assert err == (
        f"jaxfit compare: {runs['c']} has no val_loss (never logged, or never finite)\n"
    )
    last = out.splitlines()[-1].split()
    assert last[0] == runs["c"] and last[1:5] == ["-", "-", "-", "-"]
    assert out.splitlines()[1].startswith(runs["a"] + " ")  # the row with it first


def test_a_sweep_directory_stands_for_its_trials(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs["b"], sweep / "trials" / "001")
    shutil.copytree(runs["a"], sweep / "trials" / "000")
    (sweep / "trials" / ".tmp-002").mkdir()  # hidden: not a trial
    comparison = compare_lib.compare([str(sweep)], metric="loss", mode="max")
    direct = compare_lib.compare([runs["a"], runs["b"]], metric="loss", mode="max")
    trials = {str(sweep / "trials" / "000"): "a", str(sweep / "trials" / "001"): "b"}
    assert sorted(r.label for r in comparison.rows) == sorted(trials)
    for row, twin in zip(comparison.rows, direct.rows):
        assert runs[trials[row.label]] == twin.run_dir
        assert (row.best, row.best_epoch, row.final, row.values) == (
            twin.best,
            twin.best_epoch,
            twin.final,
            twin.values,
        )
    empty = tmp_path / "empty"
    (empty / "trials").mkdir(parents=True)
    with pytest.raises(ValueError, match="trials/ holds no run directory"):
        compare_lib.compare([str(empty)])


def test_an_unfinished_run_is_compared_on_the_epochs_it_has(runs):
    assert not os.path.exists(os.path.join(runs["u"], "metrics.json"))
    comparison = compare_lib.compare([runs["u"], runs["a"]], metric="loss")
    row = next(r for r in comparison.rows if r.run_dir == runs["u"])
    assert row.unfinished and row.test == {}
    full = _json(runs["a"], "history.json")["loss"]
    k = len(row.epochs)  # the epochs its newest backup holds
    assert 1 <= k < 4 and row.epochs == tuple(range(1, k + 1))
    assert row.values == tuple(full[:k])  # the same seed: the same numbers
    assert row.final == full[k - 1] and row.final_epoch == k
    assert f"{runs['u']} (unfinished)" in comparison.table()
    assert "callbacks" in " ".join(comparison.differing)


def _bad(tmp_path):
    foreign = tmp_path / "mine.png"
    foreign.write_bytes(PNG_HEADER + b"not jaxfit's")
    (tmp_path / "a_dir").mkdir()
    return foreign


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "metric",
            "metric: expected a key some run logged, one of ['learning_rate', "
            "'loss', 'mae', 'val_loss', 'val_mae'], got 'accuracy' (str).",
        ),
        ("not_a_run", "which is not one."),
        ("missing", "which is not a directory."),
        ("out_empty", "out: expected a PNG file of its own"),
        ("out_dot", "out: expected a PNG file of its own"),
        ("out_dir", "which is a directory"),
        ("out_slash", "a directory"),
        ("out_foreign", "an existing file jaxfit did not write"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(runs, tmp_path, capsys, case, message):
    foreign = _bad(tmp_path)
    png = str(tmp_path / "new.png")
    args = ["compare", runs["a"], runs["p"], "--out", png]
    if case == "metric":
        args += ["--metric", "accuracy"]
    elif case == "not_a_run":
        args.insert(2, str(tmp_path / "a_dir"))
    elif case == "missing":
        args.insert(2, str(tmp_path / "nowhere"))
    elif case.startswith("out_"):
        args[-1] = {
            "out_empty": "",
            "out_dot": ".",
            "out_dir": str(tmp_path / "a_dir"),
            "out_slash": str(tmp_path / "sub") + "/",
            "out_foreign": str(foreign),
        }[case]
    before = sorted(os.listdir(tmp_path))
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert (
        err.count("\n") == 1 and err.startswith("jaxfit compare: ") and message in err
    )
    assert sorted(os.listdir(tmp_path)) == before
    assert foreign.read_bytes() == PNG_HEADER + b"not jaxfit's"
    assert os.listdir(tmp_path / "a_dir") == []


def test_no_run_directory_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "compare")
    assert exit_info.value.code == 2
    assert "RUN_DIR" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one run directory"):
        compare_lib.compare([])


def test_a_stopped_members_nan_epochs_are_not_its_own(runs, tmp_path):
    """A member that stopped before the population's last epoch has NaN there
    (PopulationHistory): its row ends at its own last epoch."""
    copy = tmp_path / "p"
    shutil.copytree(runs["p"], copy)
    history = _json(copy, "history.json")
    for key in ("loss", "mae", "val_loss", "val_mae", "learning_rate"):
        history[key][-1][1] = float("nan")
    (copy / "history.json").write_text(json.dumps(history), encoding="utf-8")
    comparison = compare_lib.compare([str(copy)], metric="val_loss")
    row = next(r for r in comparison.rows if r.member == 1)
    values = [v[1] for v in history["val_loss"][:3]]
    assert row.epochs == (1, 2, 3) and row.values == tuple(values)
    assert (row.final, row.final_epoch) == (values[2], 3)
    assert row.best == min(values)
    other = next(r for r in comparison.rows if r.member == 0)
    assert other.final_epoch == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"run_dirs": [3]},
            "run_dirs: expected run directories (str or os.PathLike), got 3 (int).",
        ),
        ({"mode": "best"}, "mode: expected 'auto', 'min' or 'max', got 'best' (str)."),
        ({"out": 3}, "out: expected a path (str or os.PathLike), got 3 (int)."),
    ],
)
def test_the_python_api_refuses_bad_arguments_in_one_line(runs, kwargs, message):
    arguments = {"run_dirs": [runs["a"]], **kwargs}
    with pytest.raises(ValueError) as error:
        compare_lib.compare(arguments.pop("run_dirs"), **arguments)
    assert str(error.value) == message
