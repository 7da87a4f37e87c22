"""What the sweep tests share: a tiny regression config (``base``), its data
(``flaky_data``, which fails on request: a failing trial), a JSON reader and
``worker`` (``jaxfit sweep`` in a process of its own)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

_BASE = """\
name: sw
seed: 2
model:
  name: runner_helpers:linear_model
data:
  name: sweep_helpers:flaky_data
optimizer:
  name: adam
  learning_rate: 0.05
fit:
  epochs: {epochs}
  batch_size: 16
  validation_split: 0.25
  verbose: 0
"""


def base(epochs: int, tracking: bool = False) -> str:
    """The config's YAML without its ``sweep:`` section (``tracking``: with
    ``tracking: {mlflow: {}}``, the default local store)."""
    text = _BASE.format(epochs=epochs)
    return text + ("tracking:\n  mlflow: {}\n" if tracking else "")


def flaky_data(num_samples=64, fail=False):
    """Tiny data that takes no seed; ``fail=True`` raises (a failing trial)."""
    if fail:
        raise RuntimeError("this dataset is broken on purpose")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(num_samples, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    return {"x_train": x, "y_train": y, "task": "regression"}


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def worker(config, workdir, *extra):
    """``python -m jaxfit sweep CONFIG --workdir WORKDIR EXTRA...`` started in the
    background (this directory importable, stdout dropped, stderr piped)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    return subprocess.Popen(
        [sys.executable, "-m", "jaxfit", "sweep", config, "--workdir", str(workdir)]
        + list(extra),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
