"""The ``jaxfit`` command imports a config's ``module:callable`` names as ``python -m``
would: from the working directory and from the config file's directory, with the
real console script too (whose sys.path[0] is its bin directory); ``jaxfit
evaluate`` finds them again (the run's recorded config file); sys.path is restored.
"""

import json
import os
import pathlib
import subprocess
import sys

import jaxfit.cli

MODEL = """
import jax.numpy as jnp, jaxfit

def build(sample_x, num_outputs, seed=0):
    params = {"w": jnp.zeros((sample_x.shape[1], num_outputs))}
    return jaxfit.Model(lambda params, x: x @ params["w"], params)
"""

DATA = """
import numpy as np

def load(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = x @ np.ones((3, 1), np.float32)
    return {"x_train": x[:32], "y_train": y[:32], "x_test": x[32:], "y_test": y[32:]}
"""

# the model next to the working directory, the data next to the config
CONFIG = """\
name: imports
model: {name: "h25cwd_model:build"}
data: {name: "h25cfg_data:load"}
optimizer: {name: sgd, learning_rate: 0.1}
loss: mse
metrics: [mae]
fit: {batch_size: 8, epochs: 3, verbose: 0}
"""


def _layout(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "configs"
    work.mkdir()
    elsewhere.mkdir()
    (work / "h25cwd_model.py").write_text(MODEL, encoding="utf-8")
    (elsewhere / "h25cfg_data.py").write_text(DATA, encoding="utf-8")
    (elsewhere / "imports.yaml").write_text(CONFIG, encoding="utf-8")
    return work, elsewhere / "imports.yaml"


def test_the_console_script_imports_from_the_cwd_and_the_configs_directory(
    tmp_path, monkeypatch, capsys
):
    work, config = _layout(tmp_path)
    script = pathlib.Path(sys.executable).parent / "jaxfit"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "run", str(config), "--set", "fit.epochs=1"],
        cwd=work,
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p for p in (work / "runs").iterdir() if p.name.startswith("imports")]
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    # jaxfit evaluate, in this process: the model from the working directory, the
    # data from the directory of the file the run came from; sys.path as before
    monkeypatch.chdir(work)
    path = list(sys.path)
    try:
        code = jaxfit.cli.main(["evaluate", str(run_dir)])
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        assert out == "".join(f"{k}: {v:.4f}\n" for k, v in test.items())
        assert list(test) == ["loss", "mae"]
        assert sys.path == path
        # elsewhere, the working directory's module is not found: one line, exit 2
        sys.modules.pop("h25cwd_model")
        monkeypatch.chdir(tmp_path)
        code = jaxfit.cli.main(["validate", str(config)])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert "model.name" in err and "'h25cwd_model'" in err
        assert err.count("\n") == 1
        assert sys.path == path
    finally:
        for name in ("h25cwd_model", "h25cfg_data"):
            sys.modules.pop(name, None)
