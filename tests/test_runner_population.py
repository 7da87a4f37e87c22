"""The runner's ``population:`` section: members trained as one run.

Member ``i`` of a population run equals a plain run of the same config with
``seed: seed + i`` and its setting's values (its model built from that seed,
dropout, shuffling), on the data the population shares (``fixed_data`` below
takes no seed, so the plain runs see the same data). metrics.json reports each
member and mean / std per setting computed from them; ``jaxfit show`` lists
them; refusals come before anything is written; an interrupted population run
resumes to the uninterrupted one's files.
"""

import json
import os

import numpy as np
import pytest
from runner_helpers import run_cli, run_dirs, write_config

import jaxfit

pytest.importorskip("flax", reason="the built-in mlp is a Flax module")

SEED = 3
BASE = """\
name: pop
seed: 3
model:
  name: mlp
  args: {hidden: [8], dropout: 0.25}
data:
  name: test_runner_population:fixed_data
optimizer:
  name: adamw
  learning_rate: 0.05
  args: {weight_decay: 0.001}
fit:
  epochs: 3
  batch_size: 16
  validation_split: 0.25
  verbose: 0
"""
POPULATION = """\
population:
  seeds: 2
  hyperparams:
    optimizer.learning_rate: [0.05, 0.2]
    optimizer.args.weight_decay: [0.001, 0.01]
"""
SETTINGS = [(0.05, 0.001), (0.2, 0.01)]  # member i = k * 2 + s: setting k


def fixed_data(num_samples=64, num_test=16):
    """A dataset that takes no seed: every member and plain run sees it alike."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(num_samples + num_test, 3)).astype(np.float32)
    y = np.stack([x.sum(1), x[:, 0] - x[:, 2]], 1).astype(np.float32)
    n = num_samples
    return {
        "x_train": x[:n],
        "y_train": y[:n],
        "x_test": x[n:],
        "y_test": y[n:],
        "task": "regression",
    }


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def population_run(tmp_path_factory, cache):
    tmp = tmp_path_factory.mktemp("population")
    config = write_config(tmp, BASE + POPULATION)
    return jaxfit.run(config, str(tmp / "runs"), compilation_cache=cache)


def _plain(tmp, cache, member):
    """The plain run member ``member`` should equal: seed + i, its values."""
    rate, decay = SETTINGS[member // 2]
    text = (
        BASE.replace("seed: 3", f"seed: {SEED + member}")
        .replace("learning_rate: 0.05", f"learning_rate: {rate}")
        .replace("weight_decay: 0.001", f"weight_decay: {decay}")
    )
    config = write_config(tmp, text, f"plain{member}.yaml")
    return jaxfit.run(config, str(tmp / f"plain{member}"), compilation_cache=cache)


@pytest.mark.parametrize("member", [1, 2])
def test_a_member_equals_the_plain_run_of_its_seed_and_values(
    population_run, tmp_path, cache, member
):
    plain = _plain(tmp_path, cache, member)
    loaded = jaxfit.load_run(population_run.run_dir, member=member)
    assert loaded.seed == SEED + member
    np.testing.assert_allclose(loaded.learning_rate, SETTINGS[member // 2][0])
    for ours, theirs in zip(
        jax_leaves(loaded.params), jax_leaves(plain.trainer.params)
    ):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    history = _json(f"{population_run.run_dir}/history.json")
    reference = _json(f"{plain.run_dir}/history.json")
    assert history["epoch"] == reference["epoch"] == [0, 1, 2]
    for key, values in reference.items():
        if key != "epoch":
            ours = [epoch[member] for epoch in history[key]]
            np.testing.assert_allclose(ours, values, rtol=2e-5, atol=1e-6)
    row = population_run.metrics["per_member"][member]
    assert row["seed"] == SEED + member and row["setting"] == member // 2
    for part in ("final_epoch", "test"):
        for key, value in plain.metrics[part].items():
            np.testing.assert_allclose(row[part][key], value, rtol=2e-5, atol=1e-6)
    if member == 2:  # evaluate_run rebuilds and restores the population again
        evaluated = jaxfit.evaluate_run(population_run.run_dir, member=member)
        for key, value in plain.metrics["test"].items():
            np.testing.assert_allclose(evaluated[key], value, rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"^member: expected None for a run"):
        jaxfit.load_run(plain.run_dir, member=0)


def jax_leaves(tree):
    import jax

    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_metrics_json_reports_members_and_mean_std_per_setting(population_run):
    run_dir = population_run.run_dir
    metrics = _json(f"{run_dir}/metrics.json")
    assert metrics["population"] == {
        "members": 4,
        "seeds": 2,
        "settings": 2,
        "hyperparams": {
            "optimizer.learning_rate": [0.05, 0.2],
            "optimizer.args.weight_decay": [0.001, 0.01],
        },
    }
    members = metrics["per_member"]
    assert [m["seed"] for m in members] == [3, 4, 5, 6]
    assert [m["hyperparams"]["optimizer.learning_rate"] for m in members] == [
        0.05,
        0.05,
        0.2,
        0.2,
    ]
    history = _json(f"{run_dir}/history.json")
    for m in members:  # the final epoch's values are the member's last ones
        assert m["final_epoch"]["val_loss"] == history["val_loss"][-1][m["member"]]
    for k, setting in enumerate(metrics["settings"]):
        assert setting["members"] == [2 * k, 2 * k + 1]
        mine = [members[i] for i in setting["members"]]
        for key in ("loss", "val_loss", "val_mae"):
            values = [m["final_epoch"][key] for m in mine]
            assert setting["mean"][key] == pytest.approx(np.mean(values), rel=1e-12)
            assert setting["std"][key] == pytest.approx(np.std(values), rel=1e-12)
        values = [m["test"]["loss"] for m in mine]
        assert setting["mean"]["test_loss"] == pytest.approx(np.mean(values))
        assert setting["std"]["test_loss"] == pytest.approx(np.std(values))
        assert setting["std"]["test_loss"] > 0  # the seeds differ
    bests = [min(v[i] for v in history["val_loss"]) for i in range(4)]
    best = metrics["best_member"]
    assert best["member"] == int(np.argmin(bests)) and best["monitor"] == "val_loss"
    assert best["best"] == pytest.approx(min(bests))
    assert metrics["test"] == members[best["member"]]["test"]
    assert jaxfit.evaluate_run(run_dir) == pytest.approx(metrics["test"], rel=1e-5)
    with open(f"{run_dir}/history.csv", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("epoch,member,") and len(lines) == 1 + 4 * 3
    assert os.path.getsize(f"{run_dir}/curves.png") > 1000
    assert not os.path.exists(f"{run_dir}/backup")


def test_show_lists_each_member_and_mean_std_per_setting(population_run, capsys):
    code, out, err = run_cli(capsys, "show", population_run.run_dir)
    assert code == 0, err
    metrics = population_run.metrics
    assert "population: 4 members = 2 settings x 2 seeds" in out
    for m in metrics["per_member"]:
        assert (
            f"  member {m['member']} (seed {m['seed']}, optimizer.learning_rate="
            f"{m['hyperparams']['optimizer.learning_rate']:g}, "
            f"optimizer.args.weight_decay="
        ) in out
    first = metrics["settings"][0]
    assert (
        "  setting 0 (optimizer.learning_rate=0.05, optimizer.args.weight_decay="
        "0.001), mean ± std over 2 seeds: "
    ) in out
    mean, std = first["mean"]["test_loss"], first["std"]["test_loss"]
    assert f"test_loss: {mean:.4f} ± {std:.4f}" in out
    assert f"best member: {metrics['best_member']['member']} " in out
    code, out, err = run_cli(
        capsys, "evaluate", population_run.run_dir, "--member", "3"
    )
    assert code == 0, err
    assert (
        out.splitlines()[0] == f"loss: {metrics['per_member'][3]['test']['loss']:.4f}"
    )


# (the population section or edit, the line the refusal starts with)
REFUSALS = [
    (
        "population:\n  hyperparams:\n    model.args.hidden: [[8], [16]]\n",
        "population.hyperparams.model.args.hidden: expected a key path that can "
        "vary per member: one of ['optimizer.learning_rate (a number)', "
        "'optimizer.args.<a hyperparameter the optimizer injects>', "
        "'loss_weights.<output>', \"seed (each setting's own seed)\"] (optax.adamw "
        "injects ['b1', 'b2', 'eps', "
        "'eps_root', 'weight_decay']), got 'model.args.hidden'.",
    ),
    (
        "population:\n  hyperparams:\n    fit.batch_size: [8, 16]\n",
        "population.hyperparams.fit.batch_size: expected a key path that can vary",
    ),
    (  # what cannot vary is said first, whatever the lengths
        "population:\n  hyperparams:\n    optimizer.learning_rate: [0.1, 0.2]\n"
        "    model.args.dropout: [0.1]\n",
        "population.hyperparams.model.args.dropout: expected a key path",
    ),
    (
        "population:\n  hyperparams:\n    optimizer.args.nesterov: [true, false]\n",
        "population.hyperparams.optimizer.args.nesterov: expected a key path",
    ),
    (
        "population:\n  hyperparams:\n    optimizer.learning_rate: [0.1, 0.2]\n"
        "    optimizer.args.b1: [0.9]\n",
        "population.hyperparams.optimizer.args.b1: expected a list of 2 values, as "
        "population.hyperparams.optimizer.learning_rate",
    ),
    (
        "population:\n  hyperparams:\n    optimizer.learning_rate: [0.1, fast]\n",
        "population.hyperparams.optimizer.learning_rate[1]: expected a number, "
        'got "fast" (str)',
    ),
    ("population:\n  seeds: 0\n", "population.seeds: expected a positive integer"),
    ("population:\n  members: 4\n", "population.members: unknown key"),
    (
        "population:\n  seeds: 2\ntracking:\n  mlflow: {}\n",
        "tracking: expected no tracking section with a population (MLflowLogger "
        "logs one model per run)",
    ),
]


@pytest.mark.parametrize("section,message", REFUSALS)
def test_a_population_that_cannot_run_is_refused_before_anything(
    tmp_path, capsys, section, message
):
    config = write_config(tmp_path, BASE + section)
    for command in (
        ["validate", config],
        ["run", config, "--workdir", str(tmp_path / "runs")],
    ):
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and not out, (out, err)
        assert err.count("\n") == 1, err
        assert err.startswith(f"jaxfit {command[0]}: {message}"), err
    assert not (tmp_path / "runs").exists()


def test_a_schedule_and_a_loss_weight_key_path(tmp_path, capsys):
    schedule = BASE.replace(
        "  learning_rate: 0.05\n",
        "  learning_rate: {schedule: cosine, args: {init_value: 0.1, decay_steps: 9}}\n",
    )
    text = (
        schedule
        + "population:\n  hyperparams:\n    optimizer.learning_rate: [0.1, 0.2]\n"
    )
    code, _, err = run_cli(capsys, "validate", write_config(tmp_path, text))
    assert code == 2 and "a schedule is shared by every member" in err, err
    text = BASE + (
        "loss: {a: mse, b: mse}\n"
        "population:\n  hyperparams:\n    loss_weights.b: [1.0, -1.0]\n"
    )
    code, _, err = run_cli(capsys, "validate", write_config(tmp_path, text))
    assert code == 2 and err.startswith(
        "jaxfit validate: population.hyperparams.loss_weights.b[1]: expected a loss "
        "weight >= 0, got -1.0 (float)."
    ), err


RESUMED = (
    BASE.replace("  epochs: 3\n", "  epochs: 4\n")
    + POPULATION
    + "callbacks:\n  - name: CSVLogger\n    args: {filename: log.csv}\n"
)


def test_an_interrupted_population_run_resumes_to_the_same_files(tmp_path, cache):
    reference = jaxfit.run(
        write_config(tmp_path, RESUMED, "reference.yaml"),
        str(tmp_path / "reference"),
        compilation_cache=cache,
    )
    marker = tmp_path / "fired"
    text = RESUMED + (
        "  - name: runner_helpers:InterruptOnce\n"
        f"    args: {{epoch: 1, marker: {marker}}}\n"
    )
    with pytest.raises(KeyboardInterrupt):
        jaxfit.run(
            write_config(tmp_path, text),
            str(tmp_path / "runs"),
            compilation_cache=cache,
        )
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert not (run_dir / "metrics.json").exists()
    assert (
        _json(run_dir / "history.json") if (run_dir / "history.json").exists() else True
    )
    resumed = jaxfit.run(None, resume=str(run_dir), compilation_cache=cache)
    assert _json(run_dir / "history.json") == _json(f"{reference.run_dir}/history.json")
    for i in range(4):  # each member's CSVLogger file: no epoch written twice
        name = f"log-member-{i}.csv"
        rows = (run_dir / name).read_text(encoding="utf-8").splitlines()
        assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2", "3"]
        assert (
            rows
            == (tmp_path / "reference")
            .joinpath(run_dirs(tmp_path / "reference")[0].name, name)
            .read_text(encoding="utf-8")
            .splitlines()
        )
    ours, theirs = resumed.metrics, reference.metrics
    assert ours["per_member"] == theirs["per_member"]
    assert ours["settings"] == theirs["settings"]
    # the checkpoints' stacked states (every member's params), bit for bit
    for ours, theirs in zip(
        jax_leaves(resumed.trainer.state), jax_leaves(reference.trainer.state)
    ):
        assert np.array_equal(ours, theirs)


def test_the_shipped_population_config_is_listed_and_valid(capsys):
    code, out, err = run_cli(capsys, "configs")
    assert code == 0 and "  digits_population  digits_mlp as a population" in out
    # its checks, on 2 members rather than 6 (the same section, fewer models)
    code, out, err = run_cli(
        capsys, "validate", "digits_population", "--set", "population.seeds=1"
    )
    assert code == 0, err
    assert out.startswith("digits_population: valid (digits_population: model mlp")


def two_outputs(num_samples=48):
    """``fixed_data`` with two named outputs (per-output losses and weights)."""
    data = fixed_data(num_samples, 0)
    y = data["y_train"]
    return {
        "x_train": data["x_train"],
        "y_train": {"a": y[:, :1], "b": y[:, 1:]},
        "task": "regression",
    }


def two_heads(sample_x, seed=0):
    """A linear model with outputs ``a`` and ``b``, its init drawn from ``seed``."""
    import jax

    w = jax.random.normal(jax.random.PRNGKey(seed), (sample_x.shape[1], 2))
    return jaxfit.Model(
        lambda p, x: {"a": x @ p["w"][:, :1], "b": x @ p["w"][:, 1:]}, {"w": w}
    )


WEIGHTED = """\
name: weighted
seed: 1
model: {name: test_runner_population:two_heads}
data: {name: test_runner_population:two_outputs}
optimizer: {name: sgd, learning_rate: 0.05}
loss: {a: mse, b: mse}
loss_weights: {a: 1.0, b: 1.0}
fit: {epochs: 2, batch_size: 16, verbose: 0}
"""


def test_a_loss_weight_varies_per_member(tmp_path, cache):
    text = WEIGHTED + "population:\n  hyperparams:\n    loss_weights.b: [0.0, 4]\n"
    run = jaxfit.run(
        write_config(tmp_path, text), str(tmp_path / "runs"), compilation_cache=cache
    )
    plain_text = WEIGHTED.replace("seed: 1", "seed: 2").replace("b: 1.0}", "b: 4.0}")
    plain = jaxfit.run(
        write_config(tmp_path, plain_text, "plain.yaml"),
        str(tmp_path / "plain"),
        compilation_cache=cache,
    )
    assert run.metrics["per_member"][1]["hyperparams"] == {"loss_weights.b": 4.0}
    for key, values in plain.history.history.items():  # loss = a_loss + 4 b_loss
        np.testing.assert_allclose(
            run.history.members[1].history[key], values, rtol=2e-5, atol=1e-6
        )
    zero = run.history.members[0].history
    np.testing.assert_allclose(zero["loss"], zero["a_loss"], rtol=1e-6)  # b weighs 0


STOPPING = """\
name: stopping
model: {name: runner_helpers:linear_model}
data: {name: runner_helpers:tiny_split}
optimizer: {name: sgd, learning_rate: 0.1}
fit: {epochs: 4, batch_size: 16, validation_split: 0.25, verbose: 0}
callbacks:
  - name: EarlyStopping
    args: {monitor: val_loss, min_delta: 10, patience: 1, restore_best_weights: true}
population: {seeds: 3}
"""


def test_each_member_reports_its_early_stop_and_weights_epoch(tmp_path, cache):
    # min_delta 10: no epoch after the first is better, so every member stops
    # after epoch 2 with epoch 1's weights
    run = jaxfit.run(
        write_config(tmp_path, STOPPING),
        str(tmp_path / "runs"),
        compilation_cache=cache,
    )
    for m in run.metrics["per_member"]:
        assert (m["last_epoch"], m["weights_epoch"]) == (2, 1)
        assert m["stopped_early"] and m["stopped_by"] == "callbacks[0] EarlyStopping"
    assert run.metrics["stop_reason"] == (
        "3 members: 0 ran all 4 epochs, 3 stopped early"
    )
    assert run.metrics["monitor"]["by"] == "callbacks[0] EarlyStopping"


def test_settings_of_one_seed_equal_plain_runs_of_that_seed(tmp_path, cache):
    # population.hyperparams.seed: each setting's own seed (what a sweep packs)
    section = """\
population:
  hyperparams:
    optimizer.learning_rate: [0.05, 0.2]
    seed: [11, 11]
"""
    config = write_config(tmp_path, BASE.replace("epochs: 3", "epochs: 2") + section)
    result = jaxfit.run(config, str(tmp_path / "runs"), compilation_cache=cache)
    assert [m["seed"] for m in result.metrics["per_member"]] == [11, 11]
    history = _json(f"{result.run_dir}/history.json")
    for member, rate in enumerate([0.05, 0.2]):
        text = (
            BASE.replace("epochs: 3", "epochs: 2")
            .replace("seed: 3", "seed: 11")
            .replace("learning_rate: 0.05", f"learning_rate: {rate}")
        )
        plain = jaxfit.run(
            write_config(tmp_path, text, f"plain{member}.yaml"),
            str(tmp_path / f"plain{member}"),
            compilation_cache=cache,
        )
        reference = _json(f"{plain.run_dir}/history.json")
        for key, values in reference.items():
            if key != "epoch":
                ours = [epoch[member] for epoch in history[key]]
                np.testing.assert_allclose(ours, values, rtol=2e-5, atol=1e-6)
        loaded = jaxfit.load_run(result.run_dir, member=member)
        assert loaded.seed == 11
        for ours, theirs in zip(
            jax_leaves(loaded.params), jax_leaves(plain.trainer.params)
        ):
            np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
