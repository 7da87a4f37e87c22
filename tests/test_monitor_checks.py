"""``jaxfit validate`` (and ``run``, before anything is created) checks every
callback monitor against the keys the run logs, named as the library names them."""

import pytest
from runner_helpers import run_cli as _cli
from runner_helpers import tiny_config
from runner_helpers import write_config as _write

FIT = "  epochs: 1\n  batch_size: 16\n"
SPLIT = "  validation_split: 0.25\n"


def _config(tmp_path, callback, fit=FIT + SPLIT, metrics="[accuracy]"):
    rest = f"metrics: {metrics}\ncallbacks:\n  - {callback}\nbackup: false\n"
    return _write(tmp_path, tiny_config(fit, rest))


def _validate(capsys, config):
    code, out, err = _cli(capsys, "validate", config)
    return code, out, err.strip()


@pytest.mark.parametrize(
    "callback, fit, words",
    [
        (  # the case: the metric is "accuracy"
            "{name: EarlyStopping, args: {monitor: val_acc}}",
            FIT + SPLIT,
            ["callbacks[0].args.monitor", "'val_acc'", "'val_accuracy'", "'loss'"],
        ),
        (
            "{name: ReduceLROnPlateau, args: {monitor: val_mae}}",
            FIT + SPLIT,
            ["callbacks[0].args.monitor", "'val_mae'", "'learning_rate'"],
        ),
        (  # no validation configured
            "{name: EarlyStopping, args: {monitor: val_loss}}",
            FIT,
            ["callbacks[0].args.monitor", "'val_loss'", "fit.validation_split"],
        ),
        (
            "{name: ModelCheckpoint, args: {filepath: best, monitor: acc, "
            "save_best_only: true}}",
            FIT + SPLIT,
            ["callbacks[0].args.monitor", "'acc'", "'accuracy'"],
        ),
        (  # logged, but auto mode cannot tell its direction (Keras 3's rule)
            "{name: EarlyStopping, args: {monitor: learning_rate}}",
            FIT + SPLIT,
            ["callbacks[0].args.mode", "'learning_rate'", "mode='max'"],
        ),
    ],
)
def test_validate_refuses_a_monitor_the_run_never_logs(
    tmp_path, capsys, callback, fit, words
):
    code, out, err = _validate(capsys, _config(tmp_path, callback, fit))
    assert code == 2 and out == "", (out, err)
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    "callback, fit",
    [
        ("{name: EarlyStopping, args: {monitor: val_accuracy}}", FIT + SPLIT),
        ("{name: EarlyStopping, args: {monitor: accuracy}}", FIT),
        ("{name: ReduceLROnPlateau, args: {monitor: val_loss}}", FIT + SPLIT),
        ("{name: EarlyStopping, args: {monitor: learning_rate, mode: min}}", FIT),
        # without save_best_only ModelCheckpoint does not read its monitor
        ("{name: ModelCheckpoint, args: {filepath: 'ckpt-{epoch}'}}", FIT),
    ],
)
def test_validate_accepts_a_logged_monitor(tmp_path, capsys, callback, fit):
    code, out, err = _validate(capsys, _config(tmp_path, callback, fit))
    assert code == 0 and "valid" in out, err


def test_run_refuses_before_creating_anything(tmp_path, capsys):
    config = _config(tmp_path, "{name: EarlyStopping, args: {monitor: val_acc}}")
    workdir = tmp_path / "runs"
    code, _, err = _cli(capsys, "run", config, "--workdir", str(workdir))
    assert code == 2 and "callbacks[0].args.monitor" in err, err
    assert not workdir.exists()
