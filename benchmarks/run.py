"""jaxfit side by side with a hand-written JAX loop, the lax.scan bound, Keras 3, Flax.

    python benchmarks/run.py [--quick] [--workloads tiny,mlp] [--impls jaxfit,scan]
                             [--json results.jsonl] [--repeat N] [--set key=value]

Every implementation trains the same model on the same synthetic data (float32,
fixed seed) with Adam 1e-3, the same batch size and number of epochs, each in its
own subprocess (``benchmarks/impls.py``), and reports the first epoch (compile
included), the steady epoch (median of the later epochs), steps/s, samples/s,
backend compiles after the first epoch (``jax.monitoring``), peak device memory
(``device.memory_stats()``, where the backend reports it) and the final loss.
Each row's steady time is divided by ``scan``'s and ``handloop``'s, and each
workload ends with a verdict line: ``jaxfit/scan``, ``jaxfit/handloop``,
``jaxfit/keras``, ``first epoch jaxfit/handloop``, then the stream ratios
(``Trainer.fit_dataset``): ``jaxfit-list/jaxfit`` (fit_dataset on a list of the
same batches vs fit, steady epoch), ``jaxfit-list/handloop-stream`` (vs a hand
loop on the same batches), ``jaxfit-grain/jaxfit`` and ``first epoch
jaxfit-list/handloop``, each where its rows ran.

The stream rows (``jaxfit-list``, ``jaxfit-gen``, ``jaxfit-grain``,
``jaxfit-tfdata``, ``handloop-stream``, ``keras-gen``, ``keras-pydataset``,
``keras-pydataset-spe32``; see ``impls.py``) train on the same batches in the
same per-epoch order as ``handloop`` and ``scan``. Keras, Flax and grain are
optional: a missing one is a skipped row.
``--repeat N`` runs every row N times and keeps the fastest steady epoch (shared
machines are noisy; ratios from one run, side by side, are what to read).
``--set key=value`` overrides a workload size (the tests shrink everything).
``--latency`` adds the yield-latency tables after the speed tables
(``benchmarks/latency.py``: gaps between yield points for a heavy and a tiny
model, arrays and a stream, and ``fit_async``'s event-loop responsiveness; at
its ``--quick`` sizes with ``--quick``); its rows go to ``--json`` too, each
with a ``"row"`` key instead of ``"impl"``. ``--workloads ""`` runs no speed
rows (``--workloads "" --latency``: the latency tables alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import latency
import workloads

IMPLS = [
    "jaxfit",
    "jaxfit-batch",
    "handloop",
    "scan",
    "keras",
    "keras-spe32",
    "flax-nnx",
    # the stream rows: Trainer.fit_dataset and what it is compared with
    "jaxfit-list",
    "jaxfit-gen",
    "jaxfit-grain",
    "jaxfit-tfdata",
    "handloop-stream",
    "keras-gen",
    "keras-pydataset",
    "keras-pydataset-spe32",
]
OPTIONAL = {
    "keras": "keras",
    "keras-spe32": "keras",
    "flax-nnx": "flax",
    "jaxfit-grain": "grain",
    "keras-gen": "keras",
    "keras-pydataset": "keras",
    "keras-pydataset-spe32": "keras",
}
# (numerator, denominator, which time) for the verdict's stream ratios
STREAM_VERDICT = [
    ("jaxfit-list", "jaxfit", "steady"),
    ("jaxfit-list", "handloop-stream", "steady"),
    ("jaxfit-grain", "jaxfit", "steady"),
    ("jaxfit-list", "handloop", "first"),
]


def run_one(impl: str, workload: str, quick: bool, sets: list[str]) -> dict:
    argv = [sys.executable, os.path.join(HERE, "impls.py"), impl, workload]
    argv += ["--quick"] if quick else []
    argv += [f"--set={item}" for item in sets]
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        missing = OPTIONAL.get(impl)
        if missing and f"No module named '{missing}'" in result.stderr:
            return {
                "impl": impl,
                "workload": workload,
                "skipped": f"{missing} is not installed",
            }
        return {
            "impl": impl,
            "workload": workload,
            "error": result.stderr.strip().splitlines()[-1][:200],
        }
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fmt_bytes(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: one table per workload, ratios, and the verdict."""
    lines = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        group = [r for r in rows if r["workload"] == workload]
        timed = {r["impl"]: r for r in group if "steady_epoch_s" in r}
        scan, hand = timed.get("scan"), timed.get("handloop")
        lines += [
            f"### {workload}",
            "",
            "| impl | first epoch s | steady epoch s | steps/s | samples/s | "
            "compiles after epoch 1 | peak memory | final loss | / scan | "
            "/ handloop |",
            "|" + "---|" * 10,
        ]
        for r in group:
            if "steady_epoch_s" not in r:
                lines.append(
                    f"| {r['impl']} | {r.get('skipped') or r.get('error')} |" + " |" * 8
                )
                continue

            def ratio(ref, r=r):
                return (
                    f"{r['steady_epoch_s'] / ref['steady_epoch_s']:.2f}x"
                    if ref
                    else "n/a"
                )

            lines.append(
                f"| {r['impl']} | {r['first_epoch_s']:.2f} | {r['steady_epoch_s']:.4f} | "
                f"{r['steps_per_s']:.0f} | {r['samples_per_s']:.0f} | "
                f"{r['compiles_after_first_epoch']} | "
                f"{_fmt_bytes(r['peak_memory_bytes'])} | {r['final_loss']:.4f} | "
                f"{ratio(scan)} | {ratio(hand)} |"
            )
        verdict = []
        jaxfit = timed.get("jaxfit")
        if jaxfit:
            for name in ("scan", "handloop", "keras"):
                if name in timed:
                    value = jaxfit["steady_epoch_s"] / timed[name]["steady_epoch_s"]
                    verdict.append(f"jaxfit/{name} = {value:.2f}x")
            if hand:
                verdict.append(
                    "first epoch jaxfit/handloop = "
                    f"{jaxfit['first_epoch_s'] / hand['first_epoch_s']:.2f}x"
                )
        for top, bottom, which in STREAM_VERDICT:
            if top in timed and bottom in timed:
                key = f"{which}_epoch_s"
                value = timed[top][key] / timed[bottom][key]
                prefix = "first epoch " if which == "first" else ""
                verdict.append(f"{prefix}{top}/{bottom} = {value:.2f}x")
        if verdict:
            lines += ["", f"**verdict {workload}**: " + ", ".join(verdict)]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores"
    )
    parser.add_argument("--workloads", default=",".join(workloads.FULL))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--json", help="write one JSON line per row here")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a workload size",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="also print the yield-latency tables (benchmarks/latency.py)",
    )
    args = parser.parse_args(argv)
    names = [name for name in args.workloads.split(",") if name]
    impls = args.impls.split(",")
    for name in names:
        if name not in workloads.FULL:
            parser.error(
                f"--workloads: unknown {name!r}; expected {list(workloads.FULL)}"
            )
    for impl in impls:
        if impl not in IMPLS:
            parser.error(f"--impls: unknown {impl!r}; expected {IMPLS}")
    rows = []
    for name in names:
        for impl in impls:
            runs = [
                run_one(impl, name, args.quick, args.sets)
                for _ in range(max(1, args.repeat))
            ]
            timed = [r for r in runs if "steady_epoch_s" in r]
            best = min(timed, key=lambda r: r["steady_epoch_s"]) if timed else runs[0]
            rows.append(best)
            print(
                f"# {name} / {impl}: "
                + (
                    f"{best['steady_epoch_s']:.4f} s/epoch"
                    if timed
                    else best.get("skipped") or best.get("error")
                ),
                flush=True,
            )
    latency_rows = (
        latency.run_rows(latency.ROWS, "quick" if args.quick else "full")
        if args.latency
        else []
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            for row in rows + latency_rows:
                f.write(json.dumps(row) + "\n")
    print("\n".join(table(rows)))
    if latency_rows:
        print("\n".join(latency.table(latency_rows)))
    return rows + latency_rows


if __name__ == "__main__":
    main()
