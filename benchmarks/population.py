"""Population training vs sequential trainers: time and memory (issue 26).

    python benchmarks/population.py [--quick | --smoke] [--members N] [--epochs E]
                                    [--samples S] [--batch B] [--json F]

Measured from outside, through the public API only, each row in its own fresh
subprocess (so every row pays its own compilations, as a user's script would):

- **population**: one ``Trainer(init, ..., population=N, hyperparams=
  {"learning_rate": rates})`` and its ``fit``: N members as one program.
- **sequential**: N plain ``Trainer(init, ..., seed=seed + i)`` fits one after
  the other in one process, member ``i`` with ``rates[i]``: the same
  configurations (member ``i`` of the population trains exactly as this
  trainer ``i``).

The model is the tiny MLP of ``workloads.FULL["tiny"]`` (10-32-2, an init
function so each seed has its own weights), Adam through
``optax.inject_hyperparams`` with rates ``logspace(-4, -2, N)``, sparse
categorical cross-entropy from logits, ``verbose=0``, ``yield_every="auto"``.
"end to end" is the wall time from building the trainer(s) to the last
``fit`` returning (compilation included); "steady" sums the epochs after each
fit's first (a callback stamps ``on_epoch_begin`` / ``on_epoch_end``);
"yields" counts ``on_yield`` calls (the sync points inside epochs), to show a
population syncs no more than one plain fit. Ratios are sequential /
population. Targets: >= 4x end to end, >= 1.5x steady.

**memory**: one fresh subprocess per N in ``--memory-members`` (1, 4, 16)
fits a population of N for 2 epochs of 256 samples and reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), the peak before the trainer
was built (imports and data), what the trainer and its fit added, that divided
by N, and the growth per member added since the previous row (linear growth:
a steady figure in the last column). These rows train a wider MLP,
10-1024-1024-2 (~1.06M params, 4 MiB a member, 12 MiB with Adam's moments):
the tiny MLP's member (~400 params) is far below the RSS's noise of a few MiB
from run to run, so its rows could show no growth at all.

Full sizes (16 members x 10 epochs of 20,000 samples, batch 32, as the tiny
workload of ``run.py``): 32-34 s on 2 shared CPU cores. ``--quick``: 8 members x 4 epochs of 2,048
samples; ``--smoke``: 2 members x 2 epochs of 256 samples, memory at 1 and 2
(the test runs it; it proves the script works and measures nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads

WIDE = [10, 1024, 1024, 2]  # the memory rows' MLP: ~1.06M params a member
SIZES = {
    "full": {"members": 16, "epochs": 10, "samples": 20_000, "memory": "1,4,16"},
    "quick": {"members": 8, "epochs": 4, "samples": 2048, "memory": "1,4,8"},
    "smoke": {
        "members": 2,
        "epochs": 2,
        "samples": 256,
        "memory": "1,2",
        "memory_sizes": [10, 64, 2],
    },
}
MEMORY_SAMPLES = 256  # 8 batches an epoch: the peak is reached at any length
SEED = 0
TARGETS = {"end_to_end": 4.0, "steady": 1.5}
TARGET_SIZE = (16, 10)  # (members, epochs) the targets are set for


# -- the child: one row in this process ------------------------------------------
def _spec(row: str, args: dict[str, Any]) -> dict[str, Any]:
    if row.startswith("memory-"):
        sizes = args["memory_sizes"]
        return {**workloads.FULL["tiny"], "sizes": sizes, "samples": MEMORY_SAMPLES}
    return {**workloads.FULL["tiny"], "samples": args["samples"]}


def _init(sizes: list[int]):
    import jax
    import jax.numpy as jnp

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        glorot = jax.nn.initializers.glorot_uniform()
        return [
            {"w": glorot(k, (a, b), jnp.float32), "b": jnp.zeros((b,), jnp.float32)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])
        ]

    return init


def _apply(params, x):
    import jax

    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _rates(n: int) -> list[float]:
    import numpy as np

    return [float(r) for r in np.logspace(-4, -2, n)]


def _trainer(spec: dict[str, Any], members: int | None, rate_or_rates: Any, seed: int):
    import optax

    import jaxfit

    population = {} if members is None else {"population": members}
    if members is not None:
        population["hyperparams"] = {"learning_rate": rate_or_rates}
    rate = 1e-3 if members is not None else rate_or_rates
    return jaxfit.Trainer(
        _apply,
        _init(spec["sizes"]),
        optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=rate),
        loss="sparse_categorical_crossentropy_from_logits",
        seed=seed,
        **population,
    )


def _recorder():
    """A callback stamping each epoch's begin and end, counting yields."""
    import jaxfit

    class Recorder(jaxfit.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[float] = []
            self.yields = 0
            self._begin = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._begin = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self._begin)

        def on_yield(self, epoch, batch, logs=None):
            self.yields += 1

    return Recorder()


def _fit(trainer, spec, epochs, recorder):
    x, y = workloads.data(spec)
    history = trainer.fit(
        x, y, batch_size=spec["batch"], epochs=epochs, verbose=0, callbacks=[recorder]
    )
    return history


def measure(row: str, args: dict[str, Any]) -> dict[str, Any]:
    """One row: ``population``, ``sequential`` or ``memory-<N>``."""
    import jax
    import numpy as np
    import optax  # noqa: F401  (imports are no trainer's time or memory)

    import jaxfit  # noqa: F401

    spec = _spec(row, args)
    workloads.data(spec)  # nor is the data's
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = int(row.split("-")[1]) if row.startswith("memory-") else args["members"]
    epochs = 2 if row.startswith("memory-") else args["epochs"]
    rates = _rates(n)
    recorders, losses, build, built_rss = [], [], 0.0, 0
    start = time.perf_counter()
    for i in range(n if row == "sequential" else 1):
        recorders.append(_recorder())
        began = time.perf_counter()
        if row == "sequential":
            trainer = _trainer(spec, None, rates[i], SEED + i)
        else:
            trainer = _trainer(spec, n, rates, SEED)
        build += time.perf_counter() - began
        built_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        history = _fit(trainer, spec, epochs, recorders[-1])
        losses += list(np.atleast_1d(np.asarray(history.history["loss"][-1])))
    total = time.perf_counter() - start
    return {
        "row": row,
        "platform": jax.default_backend(),
        "devices": len(jax.devices()),
        "members": n,
        "epochs": epochs,
        "end_to_end_s": total,
        "build_s": build,
        "first_epochs_s": sum(r.epochs[0] for r in recorders),
        "steady_s": sum(sum(r.epochs[1:]) for r in recorders),
        "yields": sum(r.yields for r in recorders),
        "final_losses": [float(v) for v in losses],
        "base_rss_kib": base_rss,
        "built_rss_kib": built_rss,  # the peak once the (last) trainer was built
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


# -- the parent: subprocesses and the tables -------------------------------------
def run_row(row: str, args: dict[str, Any]) -> dict[str, Any]:
    argv = [sys.executable, os.path.abspath(__file__), "--child", row]
    argv += ["--args", json.dumps(args)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith('{"row"')]
    if result.returncode != 0 or not lines:
        error = (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"row": row, "error": error}
    return json.loads(lines[-1])


def _ratio(top: float, bottom: float) -> str:
    return f"{top / bottom:.2f}x" if bottom > 0 else "n/a"


def _verdict(value: float, target: float, smoke: bool, row: dict) -> str:
    if smoke:
        return "n/a (smoke)"
    if (row["members"], row["epochs"]) != TARGET_SIZE:
        return "n/a (the targets are for 16 members x 10 epochs)"
    return "met" if value >= target else "missed"


def time_table(pop: dict, seq: dict, smoke: bool = False) -> list[str]:
    """Markdown lines: the population row, the sequential row, the ratios."""
    lines = [
        f"### {pop['members']} members x {pop['epochs']} epochs: time "
        f"({pop['devices']} {pop['platform']} device(s))",
        "",
        "| row | end to end s (compile included) | building trainers s "
        "| first epochs s | steady epochs s | yields | final loss (members' mean) |",
        "|" + "---|" * 7,
    ]
    for r in (pop, seq):
        mean = sum(r["final_losses"]) / len(r["final_losses"])
        lines.append(
            f"| {r['row']} | {r['end_to_end_s']:.2f} | {r['build_s']:.2f} | "
            f"{r['first_epochs_s']:.2f} | "
            f"{r['steady_s']:.3f} | {r['yields']} | {mean:.4f} |"
        )
    end = seq["end_to_end_s"] / pop["end_to_end_s"]
    steady = seq["steady_s"] / pop["steady_s"] if pop["steady_s"] > 0 else 0.0
    lines += [
        "",
        f"**verdict**: sequential/population end to end = "
        f"{_ratio(seq['end_to_end_s'], pop['end_to_end_s'])} (target >= 4x: "
        f"{_verdict(end, TARGETS['end_to_end'], smoke, pop)}), steady epochs = "
        f"{_ratio(seq['steady_s'], pop['steady_s'])} (target >= 1.5x: "
        f"{_verdict(steady, TARGETS['steady'], smoke, pop)})",
        "",
    ]
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    """Markdown lines: peak RSS per N, per member, and the growth per member."""
    lines = [
        "### memory: peak RSS by members (a fresh process each)",
        "",
        "| members | peak RSS MiB | before the trainer MiB | after building it MiB "
        "| added MiB | added per member MiB "
        "| growth per member since the previous row MiB |",
        "|" + "---|" * 7,
    ]
    previous = None
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['error']} |" + " |" * 5)
            continue
        peak, base = r["peak_rss_kib"] / 1024, r["base_rss_kib"] / 1024
        built = r["built_rss_kib"] / 1024
        growth = "n/a"
        if previous is not None:
            step = (peak - previous[1]) / (r["members"] - previous[0])
            growth = f"{step:.2f}"
        lines.append(
            f"| {r['members']} | {peak:.1f} | {base:.1f} | {built:.1f} | "
            f"{peak - base:.1f} | "
            f"{(peak - base) / r['members']:.2f} | {growth} |"
        )
        previous = (r["members"], peak)
    return lines + [""]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="a smaller run")
    sizes.add_argument("--smoke", action="store_true", help="proves it runs")
    parser.add_argument("--members", type=int, help="members (default: by size)")
    parser.add_argument("--epochs", type=int, help="epochs (default: by size)")
    parser.add_argument("--samples", type=int, help="samples (default: by size)")
    parser.add_argument("--memory-members", help="N,... (default: by size)")
    parser.add_argument(
        "--tables", default="time,memory", help="time, memory or both (default)"
    )
    parser.add_argument("--json", help="write one JSON line per row here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    ns = _parse(argv)
    if ns.child:
        print(json.dumps(measure(ns.child, json.loads(ns.args))), flush=True)
        return []
    size = SIZES["smoke" if ns.smoke else "quick" if ns.quick else "full"]
    args = {
        "members": ns.members or size["members"],
        "epochs": ns.epochs or size["epochs"],
        "samples": ns.samples or size["samples"],
        "memory_sizes": size.get("memory_sizes", WIDE),
    }
    memory = [int(n) for n in (ns.memory_members or size["memory"]).split(",")]
    tables = ns.tables.split(",")
    names = ["population", "sequential"] if "time" in tables else []
    names += [f"memory-{n}" for n in memory] if "memory" in tables else []
    rows = []
    for row in names:
        rows.append(run_row(row, args))
        print(f"# {row}: " + json.dumps(rows[-1])[:160], flush=True)
    if ns.json:
        with open(ns.json, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    _print_tables(rows, ns.smoke)
    return rows


def _print_tables(rows: list[dict], smoke: bool) -> None:
    by_row = {r["row"]: r for r in rows}
    pop, seq = by_row.get("population"), by_row.get("sequential")
    if pop is not None and seq is not None:
        if "error" in pop or "error" in seq:
            print(f"time rows failed: {pop.get('error')} / {seq.get('error')}")
        else:
            print("\n".join(time_table(pop, seq, smoke=smoke)))
    memory = [r for r in rows if r["row"].startswith("memory-")]
    if memory:
        print("\n".join(memory_table(memory)))


if __name__ == "__main__":
    main()
