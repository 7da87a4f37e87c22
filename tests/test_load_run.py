"""jaxfit.load_run / jaxfit.evaluate_run: a finished run's trainer, rebuilt from its
directory, predicts and evaluates as the trainer that trained (its model, its
preprocessing, its restored best weights); what they refuse; nothing is written."""

import json
import math
import os
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest

import jaxfit
import jaxfit.cli

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"

# A user module: a dataset of pytree inputs with a ``preprocess`` (dict -> array)
# and a pure-JAX model with state (train steps seen, noise drawn from ``rng``).
USER_MODULE = """
import jax, jax.numpy as jnp, numpy as np, jaxfit

def preprocess(x):
    return x["a"] * 0.5 + 1.0

def data(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(80, 4)).astype(np.float32)
    y = (a @ np.arange(1.0, 5.0, dtype=np.float32))[:, None] * 0.1
    return {"x_train": {"a": a[:64]}, "y_train": y[:64],
            "x_test": {"a": a[64:]}, "y_test": y[64:], "preprocess": preprocess}

def build(sample_x, num_outputs, seed=0):
    assert isinstance(sample_x, np.ndarray) and sample_x.shape == (2, 4), sample_x
    def apply(params, x, *, train, rng, state):
        noise = jax.random.uniform(rng) if train else 0.0
        new = {"steps": state["steps"] + (1 if train else 0),
               "noise": state["noise"] + noise}
        return x @ params["w"] + params["b"], new
    params = {"w": jnp.zeros((4, num_outputs)), "b": jnp.zeros((num_outputs,))}
    state = {"steps": jnp.zeros((), jnp.int32), "noise": jnp.zeros(())}
    return jaxfit.Model(apply, params, state)

def bad_data(seed=0):
    return {**data(seed), "preprocess": 3}
"""

USER_CONFIG = """\
name: user
seed: 3
model: {name: "h25_load_user:build"}
data: {name: "h25_load_user:data"}
optimizer: {name: adam, learning_rate: 0.05}
loss: mse
metrics: [mae]
fit: {batch_size: 16, epochs: 4, validation_split: 0.25, verbose: 0}
callbacks:
  - name: EarlyStopping
    # mode max on a falling val_loss: the first epoch is the best, and the
    # run stops after the next one, restoring the first epoch's weights
    args: {monitor: val_loss, mode: max, patience: 1, restore_best_weights: true}
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "h25_load_user.py").write_text(USER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(code))
    yield sys.modules.get("h25_load_user")
    sys.modules.pop("h25_load_user", None)


def _tree_state(root):
    """Every file's bytes and mtime under ``root``."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(pathlib.Path(root).rglob("*"))
        if p.is_file()
    }


def _metrics(run_dir):
    return json.loads((pathlib.Path(run_dir) / "metrics.json").read_text())


def test_a_user_model_with_state_loads_with_its_preprocessing_and_best_weights(
    tmp_path, user_module
):
    config = tmp_path / "user.yaml"
    config.write_text(USER_CONFIG, encoding="utf-8")
    result = jaxfit.run(str(config), str(tmp_path / "runs"))
    before = _tree_state(result.run_dir)
    trainer = jaxfit.load_run(result.run_dir)
    module = sys.modules["h25_load_user"]
    data = module.data(seed=3)  # the runner passes the config's seed
    metrics = _metrics(result.run_dir)
    # EarlyStopping restored the first epoch's weights; the loaded ones are those
    assert (metrics["weights_epoch"], len(result.history.epoch)) == (1, 2)
    for got, want in zip(
        jax.tree.leaves(trainer.state.params), jax.tree.leaves(result.trainer.params)
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # state and rng reached the model through the preprocessing wrapper
    state = trainer.state.model_state
    assert int(state["steps"]) == 2 * math.ceil(48 / 16)
    assert float(state["noise"]) > 0.0
    # raw pytree inputs: the preprocessing is part of the loaded model
    predicted = trainer.predict(data["x_test"])
    np.testing.assert_allclose(
        predicted, result.trainer.predict(data["x_test"]), rtol=1e-6
    )
    by_hand = module.preprocess(data["x_test"]) @ np.asarray(trainer.params["w"])
    np.testing.assert_allclose(
        predicted, by_hand + np.asarray(trainer.params["b"]), rtol=1e-5, atol=1e-6
    )
    tested = trainer.evaluate(data["x_test"], data["y_test"], batch_size=16)
    for key, value in metrics["test"].items():
        assert tested[key] == pytest.approx(value, rel=1e-6), key
        assert jaxfit.evaluate_run(result.run_dir)[key] == pytest.approx(
            value, rel=1e-6
        )
    train = jaxfit.evaluate_run(result.run_dir, split="train")
    assert train == pytest.approx(
        trainer.evaluate(data["x_train"], data["y_train"], batch_size=16), rel=1e-6
    )
    # a loaded run trains on: the whole TrainState (optimizer state too) is there
    step = int(trainer.state.step)
    trainer.fit(data["x_train"], data["y_train"], epochs=1, verbose=0)
    assert int(trainer.state.step) == step + 2  # 64 samples, batches of 32
    assert _tree_state(result.run_dir) == before  # nothing written or touched


def test_the_builtin_digits_mlp_loads_and_predicts_raw_pixels(tmp_path):
    sklearn_datasets = pytest.importorskip(
        "sklearn.datasets",
        reason="the raw digits come from scikit-learn (the run extra)",
    )
    result = jaxfit.run(
        str(CONFIGS / "digits_mlp.yaml"),
        str(tmp_path),
        overrides=["fit.epochs=2", "fit.verbose=0"],
    )
    trainer = jaxfit.load_run(result.run_dir)
    raw = sklearn_datasets.load_digits()  # pixels 0..16, as the dataset gives them
    x = raw.data.astype(np.float32)
    predicted = trainer.predict(x)
    np.testing.assert_allclose(predicted, result.trainer.predict(x), rtol=1e-6)
    assert np.mean(np.argmax(predicted, axis=-1) == raw.target) > 0.9
    test = _metrics(result.run_dir)["test"]
    assert jaxfit.evaluate_run(result.run_dir) == pytest.approx(test, rel=1e-6)
    # another split of the same data, through --set's form
    other = jaxfit.evaluate_run(
        result.run_dir, overrides=["data.args.test_fraction=0.5"]
    )
    assert set(other) == set(test) and other != test


def _refusal(call, *fragments, kind=ValueError):
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_load_run_refuses_what_is_not_a_finished_run(tmp_path, user_module, capsys):
    config = tmp_path / "user.yaml"
    config.write_text(
        USER_CONFIG.replace("epochs: 4", "epochs: 1").split("callbacks:")[0],
        encoding="utf-8",
    )
    run_dir = pathlib.Path(jaxfit.run(str(config), str(tmp_path / "runs")).run_dir)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.yaml").write_text("name: x\n")
    _refusal(lambda: jaxfit.load_run(tmp_path / "nowhere"), "run_dir", "not a dir")
    _refusal(lambda: jaxfit.load_run(config), "run_dir", "not a directory")
    _refusal(lambda: jaxfit.load_run(tmp_path / "runs"), "run_dir", "config.yaml")
    _refusal(lambda: jaxfit.load_run(tmp_path / "plain"), "run_dir", ".jaxfit")
    _refusal(lambda: jaxfit.load_run(run_dir, checkpoint="../x"), "checkpoint")
    _refusal(lambda: jaxfit.load_run(run_dir, checkpoint="nope"), "checkpoint")
    _refusal(lambda: jaxfit.evaluate_run(run_dir, split="valid"), "split", "'valid'")
    _refusal(
        lambda: jaxfit.evaluate_run(run_dir, overrides=["fit.epochs=3"]),
        "--set",
        "fit.epochs=3",
    )
    _refusal(
        lambda: jaxfit.evaluate_run(run_dir, data="nowhere_at_all"),
        "data.name",
        "nowhere_at_all",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace(":data", ":bad_data"))
    _refusal(
        lambda: jaxfit.run(str(bad), str(tmp_path / "bad_runs")),
        "data.name",
        "'preprocess'",
        "3 (int)",
    )
    assert not (tmp_path / "bad_runs").exists()
    copies = {}
    for name in ("incomplete", "no_checkpoint", "damaged"):
        copies[name] = tmp_path / name
        shutil.copytree(run_dir, copies[name])
    (copies["incomplete"] / "metrics.json").unlink()
    shutil.rmtree(copies["no_checkpoint"] / "checkpoint")
    files = sorted(
        (p for p in (copies["damaged"] / "checkpoint" / "state").rglob("*")),
        key=lambda p: p.stat().st_size if p.is_file() else -1,
    )
    damaged = files[-1]  # the largest file: an array's bytes
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    _refusal(
        lambda: jaxfit.load_run(copies["incomplete"]),
        "run_dir",
        "jaxfit run --resume RUN_DIR",
    )
    _refusal(lambda: jaxfit.load_run(copies["no_checkpoint"]), "checkpoint/")
    message = _refusal(lambda: jaxfit.load_run(copies["damaged"]))
    assert damaged.name in message
    # the command: one line on stderr, exit status 2, nothing on stdout
    capsys.readouterr()
    assert jaxfit.cli.main(["evaluate", str(copies["damaged"])]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and damaged.name in err, err
    # a checkpoint of its own inside the run directory loads
    shutil.copytree(run_dir / "checkpoint", run_dir / "extra")
    assert os.path.isdir(run_dir / "extra")
    loaded = jaxfit.load_run(run_dir, checkpoint="extra")
    assert int(loaded.state.step) == int(jaxfit.load_run(run_dir).state.step)
