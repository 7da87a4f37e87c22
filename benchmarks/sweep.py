"""A packed sweep (``lanes: 8``) vs the same trials one at a time (issue 27).

    python benchmarks/sweep.py [--smoke] [--trials N] [--epochs E] [--set K=V]
                               [--json F]

The sweep is ``configs/digits_sweep.yaml`` (``digits_mlp`` swept) with its
``sweep:`` section made a fixed set of trials: ``sampler: grid`` over ``N``
learning rates (``choice``: ``logspace(-4, -2, N)`` to 3 significant digits,
the weight decay left at its config value), ``pruner: none`` (every trial
trains all its epochs), objective ``val_loss`` (``min``; a float, so the rows'
objectives can be compared to float32 tolerance, where ``val_accuracy`` moves
in steps of 1/288), ``fit.verbose: 0``; everything else as shipped (20 epochs,
batch 32, ``backup: epoch``). Both rows run the same grid, so the same trials.

Each row runs in its own fresh subprocess, ``jaxfit.sweep(config, workdir,
overrides=["sweep.lanes=L"])`` in a fresh workdir, through the public API:

- **lanes-8**: packable trials train 8 at a time as one population (2 groups).
- **lanes-1**: every trial is its own run (16 groups).

"wall s" is the ``jaxfit.sweep`` call, end to end (study creation, every
group's run with its data building and compilation, the trial directories,
the report); "process s" adds starting Python and importing jax, jaxfit and
Optuna. "group runs s" sums the runs' own ``wall_time_s`` (their
``metrics.json``: data, trainer, compile, fit, evaluation, the run
directory's files); the rest of "wall s" is the sweep's own work (Optuna, each
trial's directory, ``sweep.json`` / ``best.yaml`` / ``sweep.png``). The ratio
is lanes-1 / lanes-8 (target >= 4x at 16 trials). The rows' objectives are
matched by learning rate; the largest absolute difference is printed.

``--set K=V`` (repeatable) is given to both rows (e.g. ``backup=false``, to see
what the per-epoch backups cost). ``--smoke``: 2 trials of 1 epoch, lanes 2 vs 1, both rows at the same time
(the test runs it; it proves the script works and measures nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "configs", "digits_sweep.yaml")
TARGET = 4.0
TARGET_TRIALS = 16  # the target is set for 16 trials
SIZES = {
    "full": {"trials": 16, "epochs": 20, "lanes": 8},
    "smoke": {"trials": 2, "epochs": 1, "lanes": 2},
}
LR = "optimizer.learning_rate"


def rates(count: int) -> list[float]:
    """``count`` learning rates from 1e-4 to 1e-2, log-spaced, 3 digits."""
    if count == 1:
        return [1e-3]
    return [float(f"{10 ** (-4 + 2 * i / (count - 1)):.3g}") for i in range(count)]


def write_config(folder: str, trials: int, epochs: int) -> str:
    """The benchmark's config (module docstring) in ``folder``; its path."""
    import yaml

    with open(CONFIG, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["name"] = "sweep_bench"
    raw["fit"].update(epochs=epochs, verbose=0)
    raw["sweep"] = {
        "objective": {"monitor": "val_loss", "mode": "min"},
        "sampler": "grid",
        "pruner": "none",
        "lanes": 1,
        "space": {LR: {"choice": rates(trials)}},
    }
    path = os.path.join(folder, "sweep_bench.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


# -- the child: one row in this process ------------------------------------------
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one row's sweep here; returns its measurements."""
    import jaxfit

    stamps: list[tuple[float, str]] = []

    def say(*parts: Any) -> None:
        stamps.append((time.perf_counter(), " ".join(map(str, parts))))

    start = time.perf_counter()
    result = jaxfit.sweep(
        spec["config"],
        spec["workdir"],
        overrides=[f"sweep.lanes={spec['lanes']}", *spec["overrides"]],
        say=say,
    )
    wall = time.perf_counter() - start
    sweep_dir = str(result.sweep_dir)
    with open(os.path.join(sweep_dir, "sweep.json"), encoding="utf-8") as f:
        report = json.load(f)
    groups = os.path.join(sweep_dir, "groups")
    runs = []
    for name in sorted(os.listdir(groups)):
        metrics = os.path.join(groups, name, "metrics.json")
        if os.path.isfile(metrics):
            with open(metrics, encoding="utf-8") as f:
                runs.append(float(json.load(f)["wall_time_s"]))
    first = next((t for t, line in stamps if " as group-" in line), start + wall)
    return {
        "wall_s": wall,
        "setup_s": first - start,  # before the first group: the study, the sampler
        "group_runs_s": sum(runs),
        "groups": len(runs),
        "trials": [
            [t["params"][LR], t["objective"], t["state"]] for t in report["trials_run"]
        ],
        "best_objective": result.best_value,
    }


# -- the parent: one fresh subprocess per row -------------------------------------
def start_row(
    config: str, lanes: int, folder: str, overrides: list[str]
) -> dict[str, Any]:
    """Starts row ``lanes-L`` in a fresh subprocess and a fresh workdir."""
    workdir = tempfile.mkdtemp(prefix=f"lanes{lanes}-", dir=folder)
    spec = {"config": config, "workdir": workdir, "lanes": lanes}
    spec["overrides"] = overrides
    out = os.path.join(workdir, "row.json")
    log = open(os.path.join(workdir, "output.txt"), "w", encoding="utf-8")  # noqa: SIM115
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec), "--json", out],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return {
        "lanes": lanes,
        "out": out,
        "log": log,
        "load": load,
        "start": start,
        "child": child,
    }


def finish_row(started: dict[str, Any]) -> dict[str, Any]:
    """Waits for a started row; returns its measurements."""
    code = started["child"].wait()
    process = time.perf_counter() - started["start"]
    started["log"].close()
    lanes = started["lanes"]
    if code != 0:
        with open(started["log"].name, encoding="utf-8") as f:
            raise SystemExit(f"row lanes-{lanes} failed:\n{f.read()[-3000:]}")
    with open(started["out"], encoding="utf-8") as f:
        row = json.load(f)
    row.update(
        row=f"lanes-{lanes}",
        lanes=lanes,
        process_s=process,
        load_before=started["load"],
        load_after=os.getloadavg()[0],
    )
    return row


def run_rows(
    config: str, lanes: int, folder: str, overrides: list[str], together: bool
) -> list[Any]:
    """The two rows, one after the other (``together``: at the same time, the
    smoke's shortcut: its figures then mean nothing)."""
    if together:
        started = [start_row(config, n, folder, overrides) for n in (lanes, 1)]
        return [finish_row(s) for s in started]
    return [finish_row(start_row(config, n, folder, overrides)) for n in (lanes, 1)]


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest |objective difference| between two rows' trials, matched by
    learning rate (``inf`` when their learning rates or states differ)."""
    left = {lr: (obj, state) for lr, obj, state in a["trials"]}
    right = {lr: (obj, state) for lr, obj, state in b["trials"]}
    if set(left) != set(right) or any(
        left[k][1] != "COMPLETE" or right[k][1] != "COMPLETE" for k in left
    ):
        return float("inf")
    return max(abs(left[k][0] - right[k][0]) for k in left)


def table(rows: list[dict[str, Any]], smoke: bool) -> list[str]:
    """The markdown table, the ratio and the objectives' agreement."""
    lines = [
        "| row | lanes | trials | groups | wall s | trials/s | process s "
        "| group runs s | sweep's own s | best objective |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = r["wall_s"] - r["group_runs_s"]
        count = len(r["trials"])
        lines.append(
            f"| {r['row']} | {r['lanes']} | {count} | {r['groups']} "
            f"| {r['wall_s']:.2f} | {count / r['wall_s']:.3f} | {r['process_s']:.2f} "
            f"| {r['group_runs_s']:.2f} | {own:.2f} | {r['best_objective']:.6f} |"
        )
    packed, single = rows
    ratio = single["wall_s"] / packed["wall_s"]
    met = "n/a (smoke)" if smoke else ("met" if ratio >= TARGET else "missed")
    lines += [
        "",
        f"lanes-1 / lanes-{packed['lanes']} wall = {ratio:.2f}x (target >= "
        f"{TARGET:g}x at {TARGET_TRIALS} trials: {met}); process = "
        f"{single['process_s'] / packed['process_s']:.2f}x",
        f"objectives, same learning rate: max |difference| = "
        f"{max_difference(packed, single):.3g}",
        "load average (1 min) before/after: "
        + ", ".join(
            f"{r['row']} {r['load_before']:.2f}/{r['load_after']:.2f}" for r in rows
        ),
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--set", action="append", default=[], help="a --set for both rows"
    )
    parser.add_argument("--json", help="write the rows here (one JSON a line)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(child(json.loads(args.child)), f)
        return
    size = dict(SIZES["smoke" if args.smoke else "full"])
    size["trials"] = args.trials or size["trials"]
    size["epochs"] = args.epochs or size["epochs"]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as folder:
        config = write_config(folder, size["trials"], size["epochs"])
        print(
            f"sweep benchmark: {size['trials']} trials x {size['epochs']} epochs, "
            f"lanes {size['lanes']} vs 1, {os.cpu_count()} CPUs, --set {args.set}",
            flush=True,
        )
        rows = run_rows(config, size["lanes"], folder, args.set, together=args.smoke)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print("\n".join(table(rows, args.smoke)))


if __name__ == "__main__":
    main()
