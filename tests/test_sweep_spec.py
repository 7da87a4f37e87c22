"""The ``sweep:`` section: its parse into Optuna objects, and every refusal.

``spec.parse`` turns the section into real Optuna distributions, samplers and
pruners with the given arguments; ``SweepSpec.suggest`` on a real in-memory
study gives config values inside the ranges and of each key's type; every
refusal is one line naming its key path, before anything runs (``jaxfit
validate`` locates it in the YAML file, ``jaxfit run`` refuses a sweep config
without writing anything). No training here.
"""

import copy
import itertools
import subprocess
import sys

import pytest
import yaml
from runner_helpers import run_cli, write_config

from jaxfit._src.runner import schema
from jaxfit._src.runner.types import ConfigError
from jaxfit._src.sweep import spec

optuna = pytest.importorskip("optuna")
pytest.importorskip("flax", reason="the built-in mlp is a Flax module")

BASE = {
    "name": "sw",
    "model": {"name": "mlp", "args": {"hidden": [8], "dropout": 0.1}},
    "data": {"name": "digits", "args": {"test_fraction": 0.2}},
    "optimizer": {"name": "adamw", "learning_rate": 0.01},
    "metrics": ["accuracy"],
    "fit": {"batch_size": 32, "epochs": 2, "validation_split": 0.2, "verbose": 0},
    "backup": False,
    "compilation_cache": False,
}
SPACE = {
    "optimizer.learning_rate": {"loguniform": ["1e-4", 1.0e-1]},
    "optimizer.args.weight_decay": {"uniform": [0, 1.0e-3]},  # int range: floats
    "model.args.dropout": {"uniform": [0.0, 0.5], "step": 0.1},
    "fit.batch_size": {"int": [16, 64], "step": 16},
    "fit.epochs": {"int": [1, 8], "log": True},
    "model.args.hidden": {"choice": [[8], [16, 8]]},
    "optimizer.name": {"choice": ["adamw", "adam"]},
}


def _section(**changes):
    section = {
        "objective": {"monitor": "val_accuracy", "mode": "max"},
        "trials": 6,
        "sampler": "tpe",
        "lanes": 4,
        "space": copy.deepcopy(SPACE),
    }
    section.update(changes)
    return section


def test_every_distribution_kind_parses_to_its_optuna_distribution():
    parsed = spec.parse(_section(), BASE)
    params = {p.path: p for p in parsed.params}
    assert list(params) == list(SPACE)
    dists = parsed.distributions()
    d = optuna.distributions
    assert dists["optimizer.learning_rate"] == d.FloatDistribution(1e-4, 0.1, log=True)
    assert dists["optimizer.args.weight_decay"] == d.FloatDistribution(0.0, 1e-3)
    assert dists["model.args.dropout"] == d.FloatDistribution(0.0, 0.5, step=0.1)
    assert dists["fit.batch_size"] == d.IntDistribution(16, 64, step=16)
    assert dists["fit.epochs"] == d.IntDistribution(1, 8, log=True)
    # lists are given to Optuna as their JSON text; scalars as they are
    assert dists["model.args.hidden"] == d.CategoricalDistribution(["[8]", "[16, 8]"])
    assert dists["optimizer.name"] == d.CategoricalDistribution(["adamw", "adam"])
    assert params["model.args.hidden"].choices == ([8], [16, 8])
    assert params["optimizer.learning_rate"].low == 1e-4  # "1e-4" read as a number
    assert (parsed.monitor, parsed.mode, parsed.direction) == (
        "val_accuracy",
        "max",
        "maximize",
    )
    assert (parsed.trials, parsed.lanes, parsed.pruner) == (6, 4, "none")


def test_an_int_range_on_a_float_key_gives_floats():
    section = _section(space={"optimizer.learning_rate": {"int": [1, 3]}})
    (param,) = spec.parse(section, BASE).params
    assert param.as_float and param.value(2) == 2.0 and type(param.value(2)) is float


SAMPLERS = [
    ("random", optuna.samplers.RandomSampler, {}),
    (
        {"name": "tpe", "args": {"n_startup_trials": 5}},
        optuna.samplers.TPESampler,
        {"_n_startup_trials": 5},
    ),
    (
        {"name": "cmaes", "seed": 1, "args": {"n_startup_trials": 3}},
        optuna.samplers.CmaEsSampler,
        {"_n_startup_trials": 3},
    ),
]
PRUNERS = [
    ("none", optuna.pruners.NopPruner, {}),
    (
        {"name": "median", "args": {"n_warmup_steps": 2}},
        optuna.pruners.MedianPruner,
        {"_n_warmup_steps": 2, "_n_startup_trials": 5},
    ),
    (
        {"name": "hyperband", "args": {"min_resource": 2, "reduction_factor": 2}},
        optuna.pruners.HyperbandPruner,
        {"_min_resource": 2, "_reduction_factor": 2},
    ),
]
RANGES = {k: v for k, v in SPACE.items() if "choice" not in v}


@pytest.mark.parametrize("given,cls,attributes", SAMPLERS)
def test_samplers_are_optuna_samplers_with_the_given_args(given, cls, attributes):
    parsed = spec.parse(_section(sampler=given, space=RANGES), BASE)
    sampler = parsed.make_sampler()
    assert type(sampler) is cls
    for name, value in attributes.items():
        assert getattr(sampler, name) == value


@pytest.mark.parametrize("given,cls,attributes", PRUNERS)
def test_pruners_are_optuna_pruners_with_the_given_args(given, cls, attributes):
    pruner = spec.parse(_section(pruner=given), BASE).make_pruner()
    assert type(pruner) is cls
    for name, value in attributes.items():
        assert getattr(pruner, name) == value


def test_a_sampler_seed_makes_the_same_suggestions():
    section = _section(sampler={"name": "random", "seed": 7})
    parsed = spec.parse(section, BASE)
    assert parsed.sampler_args == {"seed": 7}

    def first_values():
        study = optuna.create_study(sampler=parsed.make_sampler())
        return [parsed.suggest(study.ask()) for _ in range(3)]

    assert first_values() == first_values()


def test_suggest_on_a_real_study_gives_config_values_in_range():
    parsed = spec.parse(_section(sampler={"name": "tpe", "seed": 0}), BASE)
    study = optuna.create_study(
        sampler=parsed.make_sampler(), direction=parsed.direction
    )
    seen = set()
    for i in range(12):
        trial = study.ask()
        values = parsed.suggest(trial)
        assert 1e-4 <= values["optimizer.learning_rate"] <= 0.1
        assert 0.0 <= values["optimizer.args.weight_decay"] <= 1e-3
        assert type(values["optimizer.args.weight_decay"]) is float
        assert round(values["model.args.dropout"] * 10, 6) % 1 == 0
        assert values["fit.batch_size"] in (16, 32, 48, 64)
        assert type(values["fit.batch_size"]) is int
        assert 1 <= values["fit.epochs"] <= 8
        assert values["model.args.hidden"] in ([8], [16, 8])  # lists again
        seen.add(str(values["model.args.hidden"]))
        assert parsed.values(trial.params) == values  # a stored trial maps back
        study.tell(trial, float(i))
    assert seen == {"[8]", "[16, 8]"}


def test_a_grid_runs_every_combination_once_by_default():
    space = {
        "model.args.hidden": {"choice": [[8], [16, 8]]},
        "optimizer.learning_rate": {"choice": [0.1, 0.01, "1e-3"]},
    }
    parsed = spec.parse(_section(sampler="grid", trials=None, space=space), BASE)
    assert parsed.trials == 6
    assert parsed.grid() == {
        "model.args.hidden": ["[8]", "[16, 8]"],
        "optimizer.learning_rate": [0.1, 0.01, 0.001],
    }
    sampler = parsed.make_sampler()
    assert type(sampler) is optuna.samplers.GridSampler
    study = optuna.create_study(sampler=sampler)
    got = []
    for _ in range(parsed.trials):
        trial = study.ask()
        got.append(parsed.suggest(trial))
        spec.tell(study, trial, 0.0)  # the grid's end: no study.stop() error
    combos = itertools.product([[8], [16, 8]], [0.1, 0.01, 0.001])
    expected = [
        {"model.args.hidden": h, "optimizer.learning_rate": r} for h, r in combos
    ]
    assert sorted(map(str, got)) == sorted(map(str, expected))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6


def _space(path, entry):
    return {"space": {path: entry}}


# (changes to the section, or to the config: ("config", key, value); the message)
REFUSALS = [
    (
        _space("fit.batchsize", {"int": [16, 64]}),
        "sweep.space.fit.batchsize.int[0]: expected a value that fit.batchsize takes, "
        "got 16 (int): fit.batchsize: unknown key",
    ),
    (
        _space("fit.batch_size", {"uniform": [16, 64]}),
        "sweep.space.fit.batch_size.uniform[0]: expected a value that fit.batch_size "
        "takes, got 16.0 (float): fit.batch_size: expected a positive integer",
    ),
    (
        _space("model.args.dropout", {"uniform": [0.0, 1.5]}),
        "sweep.space.model.args.dropout.uniform[1]: expected a value that "
        "model.args.dropout takes, got 1.5 (float): model.args.dropout: expected "
        "a number in [0, 1)",
    ),
    (
        _space("model.args.hidden", {"choice": [[8], [0]]}),
        "sweep.space.model.args.hidden.choice[1]: expected a value that "
        "model.args.hidden takes, got [0] (list): model.args.hidden[0]",
    ),
    (
        _space("optimizer.args.momentum", {"uniform": [0.0, 0.9]}),
        "sweep.space.optimizer.args.momentum.uniform[0]: expected a value that "
        "optimizer.args.momentum takes, got 0.0 (float): "
        "optimizer.args.momentum: unknown argument",
    ),
    (
        _space("model.args.dropout", {"uniform": [0.5, 0.5]}),
        "sweep.space.model.args.dropout.uniform: expected [low, high] with low < high",
    ),
    (
        _space("optimizer.learning_rate", {"loguniform": [0, 0.1]}),
        "sweep.space.optimizer.learning_rate.loguniform[0]: expected low > 0",
    ),
    (
        _space("fit.epochs", {"int": [0, 8], "log": True}),
        "sweep.space.fit.epochs.int[0]: expected low >= 1",
    ),
    (
        _space("fit.batch_size", {"int": [16, 64], "step": 20}),
        "sweep.space.fit.batch_size.step: expected a step that divides high - low (48)",
    ),
    (
        _space("fit.batch_size", {"int": [16, 64], "step": 16, "log": True}),
        "sweep.space.fit.batch_size.step: expected no step with log: true",
    ),
    (
        _space("fit.batch_size", {"int": [16.5, 64]}),
        "sweep.space.fit.batch_size.int[0]: expected an integer, got 16.5 (float)",
    ),
    (
        _space("fit.batch_size", {"int": [16, 64], "scale": 2}),
        "sweep.space.fit.batch_size.scale: unknown key; 'int' takes ['step', 'log']",
    ),
    (
        _space("fit.batch_size", {"int": [1, 2], "choice": [1]}),
        "sweep.space.fit.batch_size: expected a mapping with one of 'uniform'",
    ),
    (
        _space("fit.batch_size", {"choice": [16, 16]}),
        "sweep.space.fit.batch_size.choice[1]: expected a value not given before",
    ),
    ({"space": {}}, "sweep.space: expected a non-empty mapping"),
    ({"sampler": "bayes"}, "sweep.sampler: expected one of 'grid', 'random', 'tpe'"),
    (
        {"sampler": {"name": "tpe", "args": {"n_startup": 3}}},
        "sweep.sampler.args.n_startup: unknown argument; optuna.TPESampler takes",
    ),
    (
        {"sampler": {"name": "tpe", "args": {"n_startup_trials": "many"}}},
        'sweep.sampler.args.n_startup_trials: expected an integer, got "many" (str)',
    ),
    (
        {"sampler": {"name": "tpe", "args": {"seed": 1}}},
        "sweep.sampler.args.seed: give it as sweep.sampler.seed",
    ),
    (
        {"sampler": {"name": "grid", "args": {"search_space": {}}}},
        "sweep.sampler.args.search_space: unknown argument; the grid is",
    ),
    (
        {"sampler": {"name": "random", "seed": 2**32}},
        "sweep.sampler.seed: expected an integer in [0, 2**32)",
    ),
    ({"pruner": "percentile"}, "sweep.pruner: expected one of 'none', 'median'"),
    (
        {"pruner": {"name": "median", "seed": 1}},
        "sweep.pruner.seed: unknown key; expected one of ['name', 'args']",
    ),
    (
        {"pruner": {"name": "median", "args": {"n_warmup_steps": -1}}},
        "sweep.pruner.args: Number of warmup steps cannot be negative",
    ),
    (
        {"sampler": "grid"},
        "sweep.space.optimizer.learning_rate: expected a choice with sampler grid, "
        "got a float range",
    ),
    (
        {"sampler": "grid", "trials": 5, "space": {"fit.epochs": {"choice": [1, 2]}}},
        "sweep.trials: expected at most the grid's size, 2",
    ),
    (
        {"sampler": "cmaes"},
        "sweep.space.model.args.hidden: expected a range (uniform, loguniform or int) "
        "with sampler cmaes, got a choice",
    ),
    ({"trials": None}, "sweep.trials: expected a positive integer (the number"),
    ({"trials": 0}, "sweep.trials: expected a positive integer or null, got 0"),
    ({"lanes": 0}, "sweep.lanes: expected a positive integer, got 0"),
    (
        {"objective": {"monitor": "val_thing", "mode": "auto"}},
        "sweep.objective.mode: expected 'min' or 'max' for monitor='val_thing'",
    ),
    (
        {"objective": {"monitor": "val_loss", "mode": "up"}},
        "sweep.objective.mode: expected one of 'min', 'max', 'auto'",
    ),
    ({"budget": 3}, "sweep.budget: unknown key"),
    (
        ("config", "population", {"seeds": 2}),
        "population: expected no population section with a sweep: section",
    ),
]


@pytest.mark.parametrize("changes,message", REFUSALS)
def test_refusals_name_the_key_path(changes, message):
    config = copy.deepcopy(BASE)
    if isinstance(changes, tuple):
        config[changes[1]] = changes[2]
        section = _section()
    else:
        section = _section(**changes)
    with pytest.raises(ConfigError) as info:
        spec.parse(section, config)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_auto_mode_follows_the_callbacks_rule():
    loss = spec.parse(_section(objective={"monitor": "val_loss"}), BASE)
    accuracy = spec.parse(
        _section(objective={"monitor": "accuracy", "mode": "auto"}), BASE
    )
    assert (loss.mode, accuracy.mode) == ("min", "max")


def test_packable_is_the_population_rule():
    assert spec.packable("optimizer.learning_rate")
    assert spec.packable("optimizer.args.weight_decay")
    assert spec.packable("loss_weights.out")
    assert not spec.packable("fit.batch_size")
    assert not spec.packable("model.args.hidden")
    adamw = schema.parse(BASE)
    assert spec.packable("optimizer.args.weight_decay", adamw)
    assert not spec.packable("optimizer.args.nesterov", adamw)  # not injected


def test_trial_config_is_a_config_jaxfit_validate_accepts(tmp_path, capsys):
    values = {
        "optimizer.learning_rate": 1e-05,
        "model.args.hidden": [16, 8],
        "fit.batch_size": 48,
        "optimizer.args.weight_decay": 0.0,
    }
    base = {**BASE, "sweep": _section()}
    trial = spec.trial_config(base, values)
    assert "sweep" not in trial and "sweep" in base and "args" not in base["optimizer"]
    assert trial["optimizer"] == {
        "name": "adamw",
        "learning_rate": 1e-05,
        "args": {"weight_decay": 0.0},
    }
    assert trial["model"]["args"] == {"hidden": [16, 8], "dropout": 0.1}
    path = write_config(tmp_path, yaml.safe_dump(trial))
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 0, err
    assert "valid (sw: model mlp" in out


def _sweep_yaml(section):
    return yaml.safe_dump({**BASE, "sweep": section}, sort_keys=False)


def test_validate_passes_the_shipped_sweep_config(capsys):
    code, out, err = run_cli(capsys, "validate", "digits_sweep")
    assert code == 0, err
    assert "valid (digits_sweep: model mlp, data digits (arrays)" in out


def test_validate_refuses_a_bad_range_naming_its_key_and_line(tmp_path, capsys):
    section = _section(space={"model.args.dropout": {"uniform": [0.0, 1.5]}})
    path = write_config(tmp_path, _sweep_yaml(section))
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 2 and not out
    line = _sweep_yaml(section).splitlines().index("    model.args.dropout:") + 1
    assert err.startswith(
        "jaxfit validate: sweep.space.model.args.dropout.uniform[1]: expected a "
        "value that model.args.dropout takes, got 1.5 (float)"
    ), err
    assert err.rstrip().endswith(f"({path}, line {line + 3})"), err  # its [1] line
    assert err.count("\n") == 1


def test_validate_refuses_an_objective_the_run_never_logs(tmp_path, capsys):
    section = _section(objective={"monitor": "val_auc", "mode": "max"})
    path = write_config(tmp_path, _sweep_yaml(section))
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 2
    assert err.startswith(
        "jaxfit validate: sweep.objective.monitor: expected a key the run logs, "
        "one of ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate'], "
        "got 'val_auc' (str)."
    ), err


def test_run_refuses_a_sweep_config_before_writing_anything(tmp_path, capsys):
    path = write_config(tmp_path, _sweep_yaml(_section()))
    workdir = tmp_path / "runs"
    code, out, err = run_cli(capsys, "run", path, "--workdir", str(workdir))
    assert code == 2 and not out
    assert err == (
        "jaxfit run: sweep: config 'sw' has a sweep: section (many runs): run it "
        "with `jaxfit sweep CONFIG`, or remove the section. "
        f"({path}, line {_sweep_yaml(_section()).splitlines().index('sweep:') + 1})\n"
    )
    assert not workdir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_import_jaxfit_does_not_import_optuna():
    code = "import sys, jaxfit, jaxfit._src.sweep.spec; print('optuna' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
