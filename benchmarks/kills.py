"""Kills ``jaxfit run`` at random instants and checks every run resumes exactly.

For each of N trials a small experiment (``python -m jaxfit run``: a tanh MLP on
synthetic data, a few epochs, EarlyStopping, CSVLogger and the default backups) is
started, killed after a random time drawn over the whole of an uninterrupted run
(start-up, training, the ending: final evaluation, checkpoint, history, curves,
metrics; every other trial within its last quarter, so that the ending's short
window is hit often) with SIGKILL, SIGTERM or SIGINT, then ``jaxfit run --resume RUN_DIR`` is
called until the run is complete. The completed run is compared with the
uninterrupted one: the final checkpoint's params bit for bit, ``history.json``
and ``metrics.json`` (the numbers; the wall times aside), the CSVLogger file
(no row twice) and ``jaxfit show`` answering at every stage. A kill before the
run directory exists leaves nothing (checked), and the run is started again.

    python benchmarks/kills.py [--trials 50] [--seed 0] [--json PATH]

Prints one row per trial and a summary; exits 1 if any trial did not end equal.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MODEL = """\
import jax.numpy as jnp
import numpy as np
import jaxfit


def data(num_samples=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 8)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(8, 1))).astype(np.float32)
    return {"x_train": x, "y_train": y, "x_test": x[:64], "y_test": y[:64],
            "task": "regression"}


def apply(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def model(sample_x, num_outputs):
    rng = np.random.default_rng(1)
    params = {"w1": jnp.asarray(0.3 * rng.normal(size=(sample_x.shape[1], 32)), jnp.float32),
              "w2": jnp.asarray(0.3 * rng.normal(size=(32, num_outputs)), jnp.float32)}
    return jaxfit.Model(apply, params)
"""

CONFIG = """\
name: kills
seed: 0
model: {name: "killmodel:model"}
data: {name: "killmodel:data"}
optimizer: {name: adam, learning_rate: 0.01}
loss: mse
metrics: [mae]
fit: {batch_size: 32, epochs: 6, validation_split: 0.25, yield_every: batch}
backup: 4
callbacks:
  - name: CSVLogger
    args: {filename: training.csv}
  - name: EarlyStopping
    args: {monitor: val_loss, patience: 3, restore_best_weights: true}
"""

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
VOLATILE = ("wall_time", "time", "seconds", "created")


def _jaxfit(home: pathlib.Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(home), JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, "-m", "jaxfit", *args],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_dirs(workdir: pathlib.Path) -> list[pathlib.Path]:
    if not workdir.is_dir():
        return []
    return sorted(p for p in workdir.iterdir() if not p.name.startswith("."))


def _complete(run_dir: pathlib.Path) -> bool:
    return (run_dir / "metrics.json").is_file()


def _numbers(value, drop=VOLATILE):
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _outcome(run_dir: pathlib.Path) -> dict:
    import numpy as np

    import jaxfit

    sys.path.insert(0, str(run_dir.parent.parent))
    from killmodel import apply  # type: ignore[import-not-found]

    trainer = jaxfit.Trainer.load(str(run_dir / "checkpoint"), apply)
    params = {k: np.asarray(v) for k, v in trainer.params.items()}
    rows = (run_dir / "training.csv").read_text().splitlines()
    return {
        "params": params,
        "history": json.loads((run_dir / "history.json").read_text()),
        # the numbers; the wall time (summed over a resumed run's segments) aside
        "metrics": _numbers(
            {
                k: v
                for k, v in json.loads((run_dir / "metrics.json").read_text()).items()
                if k != "wall_time_s"
            }
        ),
        "csv": rows,
    }


def _equal(a: dict, b: dict) -> str:
    import numpy as np

    for key in a["params"]:
        if not np.array_equal(a["params"][key], b["params"][key]):
            return f"params[{key}] differ"
    for key in ("history", "metrics", "csv"):
        if a[key] != b[key]:
            return f"{key} differs"
    return ""


def _show(home: pathlib.Path, run_dir: pathlib.Path) -> str:
    process = _jaxfit(home, "show", str(run_dir))
    _, err = process.communicate(timeout=60)
    return "" if process.returncode == 0 and "Traceback" not in err else err[-200:]


def trial(home, reference, duration, rng, index):
    workdir = home / f"w{index}"
    name = rng.choice(list(SIGNALS))
    # every other trial in the last quarter: the ending's short window gets kills too
    low = 0.75 * duration if index % 2 else 0.0
    delay = rng.uniform(low, duration * 1.05)
    process = _jaxfit(home, "run", "config.yaml", "--workdir", str(workdir))
    time.sleep(delay)
    process.send_signal(SIGNALS[name])
    _, err = process.communicate(timeout=300)
    kill_code = process.returncode
    dirs = _run_dirs(workdir)
    row = {"trial": index, "signal": name, "at_s": round(delay, 2), "code": kill_code}
    if not dirs:
        row["phase"] = "before the run directory"
        process = _jaxfit(home, "run", "config.yaml", "--workdir", str(workdir))
        process.communicate(timeout=300)
        dirs = _run_dirs(workdir)
    (run_dir,) = dirs
    files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    row.setdefault("phase", "complete" if _complete(run_dir) else ",".join(files))
    problems = []
    shown = _show(home, run_dir)
    if shown:
        problems.append(f"show failed: {shown}")
    resumes = 0
    while not _complete(run_dir) and resumes < 3:
        resumes += 1
        process = _jaxfit(home, "run", "--resume", str(run_dir))
        _, err = process.communicate(timeout=300)
        if process.returncode != 0:
            problems.append(f"resume exit {process.returncode}: {err.strip()[-300:]}")
            break
    row["resumes"] = resumes
    if _complete(run_dir):
        try:
            difference = _equal(_outcome(run_dir), reference)
        except (OSError, ValueError, KeyError) as error:  # a file missing or bad
            difference = f"{type(error).__name__}: {str(error)[:160]}"
        if difference:
            problems.append(difference)
    else:
        problems.append("not complete")
    row["result"] = "; ".join(problems) or "equal"
    shutil.rmtree(workdir, ignore_errors=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    home = pathlib.Path(tempfile.mkdtemp(prefix="jaxfit-kills-"))
    (home / "killmodel.py").write_text(MODEL)
    (home / "config.yaml").write_text(CONFIG)
    start = time.perf_counter()
    process = _jaxfit(home, "run", "config.yaml", "--workdir", str(home / "ref"))
    _, err = process.communicate(timeout=600)
    duration = time.perf_counter() - start
    if process.returncode != 0:
        print(err)
        return 1
    (ref_dir,) = _run_dirs(home / "ref")
    reference = _outcome(ref_dir)
    print(
        f"uninterrupted run: {duration:.1f} s; kills drawn over [0, {duration:.1f}] s"
    )
    print(
        f"{'trial':>5} {'signal':>6} {'at s':>6} {'exit':>5} {'resumes':>7}  phase -> result"
    )
    rows = []
    for index in range(args.trials):
        row = trial(home, reference, duration, rng, index)
        rows.append(row)
        print(
            f"{row['trial']:>5} {row['signal']:>6} {row['at_s']:>6} {row['code']:>5} "
            f"{row['resumes']:>7}  {row['phase']} -> {row['result']}",
            flush=True,
        )
    bad = [row for row in rows if row["result"] != "equal"]
    print(
        f"\n{len(rows) - len(bad)} of {len(rows)} trials complete and equal to the "
        "uninterrupted run"
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    shutil.rmtree(home, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
