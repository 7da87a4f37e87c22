"""How a run ends, in the numbers a person reads: epochs count from 1 everywhere
they are printed (progress lines, EarlyStopping, run.log, ``jaxfit show``,
metrics.json) while ``History.epoch`` stays 0-based; the runner says when
EarlyStopping ended a run and whose weights it ends with; the run directory has no
always-empty column and curves.png keeps the learning rate off the loss axis.
"""

import csv
import json
import pathlib
import re

import pytest
from runner_helpers import tiny_config

import jaxfit
from jaxfit import cli

CONFIG = tiny_config("  epochs: 6\n  batch_size: 16\n  validation_split: 0.25\n")

# min_delta 10: nothing after the first epoch counts as better, so with patience 1
# the second epoch stops the run, and the first epoch's weights come back.
STOPPING = (
    CONFIG
    + """\
callbacks:
  - name: EarlyStopping
    args: {monitor: val_loss, min_delta: 10, patience: 1, restore_best_weights: true,
           verbose: 1}
"""
)


def _run(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    result = jaxfit.run(str(path), str(tmp_path / "runs"))
    return result, pathlib.Path(result.run_dir)


def test_early_stopping_is_reported_in_1_based_epochs_everywhere(tmp_path, capsys):
    result, run_dir = _run(tmp_path, STOPPING)
    assert result.history.epoch == [0, 1]  # History stays 0-based, as Keras'
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert re.findall(r"^Epoch (\d+)/6 ", log, re.M) == ["1", "2"]
    best = result.history.history["val_loss"][0]
    assert (
        f"Epoch 2: early stopping: val_loss did not improve for 1 epoch (best "
        f"{best:.4g} at epoch 1); restoring the weights of epoch 1."
    ) in log
    assert (
        "early stopping: callbacks[0] EarlyStopping ended the run after epoch 2/6: "
        "val_loss did not improve for 1 epoch"
    ) in log
    assert (
        f"weights: epoch 1's, restored by callbacks[0] EarlyStopping (best "
        f"val_loss: {best:.4f})"
    ) in log
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["last_epoch"] == 2 and metrics["weights_epoch"] == 1
    assert metrics["stopped_early"] == {
        "by": "callbacks[0] EarlyStopping",
        "epoch": 2,
        "monitor": "val_loss",
        "patience": 1,
    }
    assert "restore_best_weights" in metrics["weights"]
    assert metrics["stop_reason"] == (
        "early stopping after epoch 2/6: callbacks[0] EarlyStopping's val_loss "
        "did not improve for 1 epoch"
    )
    assert metrics["monitor"] == {
        "name": "val_loss",
        "mode": "min",
        "by": "callbacks[0] EarlyStopping",
        "best": best,
        "best_epoch": 1,
    }
    capsys.readouterr()
    assert cli.main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "epochs: 2 (the last: 2/6)" in shown
    assert f"stopped: {metrics['stop_reason']}\n" in shown
    assert "weights: epoch 1's (restored by callbacks[0] EarlyStopping" in shown
    assert (
        f"best val_loss (min, callbacks[0] EarlyStopping): {best:.4f} at epoch 1"
    ) in shown


# every metrics.json has these keys, however the run ended
KEYS = {
    "final_epoch",
    "last_epoch",
    "weights_epoch",
    "weights",
    "stopped_early",
    "stop_reason",
    "monitor",
    "test",
    "wall_time_s",
}


def test_a_full_run_ends_with_its_last_epochs_weights(tmp_path, capsys):
    result, run_dir = _run(tmp_path, CONFIG.replace("epochs: 6", "epochs: 3"))
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["last_epoch"] == metrics["weights_epoch"] == 3
    assert set(metrics) == KEYS and metrics["stopped_early"] is None
    assert metrics["stop_reason"] == "completed: all 3 epochs ran"
    values = result.history.history["val_loss"]
    best = min(range(3), key=values.__getitem__)
    assert metrics["monitor"] == {  # no monitoring callback: val_loss, minimised
        "name": "val_loss",
        "mode": "min",
        "by": None,
        "best": values[best],
        "best_epoch": best + 1,
    }
    assert 0 < metrics["wall_time_s"] < 600
    capsys.readouterr()
    assert cli.main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert f"best val_loss (min): {values[best]:.4f} at epoch {best + 1}" in shown
    assert "stopped: completed: all 3 epochs ran" in shown
    assert re.search(r"^wall time: \d+\.\d s$", shown, re.M), shown
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert re.search(r"^wall time: \d+\.\d s$", log, re.M), log


def test_the_monitored_metric_in_its_direction(tmp_path, capsys):
    # a maximised monitor (mode: max) that never stops the run: its best is the
    # largest value, at its first epoch, and metrics.json has the same keys
    config = CONFIG.replace("epochs: 6", "epochs: 3") + (
        "callbacks:\n  - name: ReduceLROnPlateau\n"
        "    args: {monitor: val_mae, mode: max, patience: 5}\n"
    )
    result, run_dir = _run(tmp_path, config)
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    values = result.history.history["val_mae"]
    best = max(range(3), key=values.__getitem__)
    assert set(metrics) == KEYS and metrics["monitor"] == {
        "name": "val_mae",
        "mode": "max",
        "by": "callbacks[0] ReduceLROnPlateau",
        "best": values[best],
        "best_epoch": best + 1,
    }
    capsys.readouterr()
    assert cli.main(["show", str(run_dir)]) == 0
    assert (
        f"best val_mae (max, callbacks[0] ReduceLROnPlateau): {values[best]:.4f} "
        f"at epoch {best + 1}"
    ) in capsys.readouterr().out


def test_no_always_empty_column_and_the_learning_rate_on_its_own_axis(tmp_path):
    pytest.importorskip("matplotlib")
    result, run_dir = _run(tmp_path, CONFIG.replace("epochs: 6", "epochs: 2"))
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert "learning_rate" in rows[0] and "val_learning_rate" not in rows[0]
    assert all(any(row[key] != "" for row in rows) for key in rows[0])
    with open(run_dir / "history.json", encoding="utf-8") as f:
        assert "val_learning_rate" not in json.load(f)
    import matplotlib.pyplot as plt

    figure = result.history.plot()  # what curves.png is
    losses, rates = figure.axes
    assert [line.get_label() for line in losses.get_lines()] == [
        "loss",
        "val_loss",
        "mae",
        "val_mae",
    ]
    assert [line.get_label() for line in rates.get_lines()] == ["learning_rate"]
    assert list(losses.get_lines()[0].get_xdata()) == [1, 2]  # epochs from 1
    plt.close("all")
