"""Yield latency: how long jaxfit goes between yield points, and how responsive
``fit_async`` leaves the event loop.

    python benchmarks/latency.py [--quick | --smoke] [--rows ROW,...] [--json F]
    python benchmarks/run.py --latency ...   # the same tables after the speed tables

Measured from outside, through the public API only, each row in its own
subprocess (as ``run.py``'s speed rows):

- **fit rows** (``<model>-<source>-<yield_every>``): a callback stamps
  ``time.perf_counter()`` at every ``on_yield`` (jaxfit calls it at every yield
  point) and at ``on_epoch_end`` (counted as a point of its own only when no
  ``on_yield`` came after the epoch's last batch). The gaps are taken between
  consecutive points, starting from the call to ``fit``; the first gap holds
  the compilation, so it is reported apart ("first gap") and the median and
  max are over the later ones. Ratios divide them by the interval
  (``"auto"`` = 125 ms, ``50`` = 50 ms). "step ms" is the wall time from the
  first yield point to the last over the steps run in between.
  Models: **heavy**, a plain-JAX MLP 256-1024-1024-1024-10 at batch 256 (a
  train step of ~20-50 ms on 2 shared CPU cores), and **tiny**,
  ``workloads.FULL["tiny"]`` (MLP 10-32-2, batch 32). Sources: in-memory
  arrays (``Trainer.fit``) and a stream (``Trainer.fit_dataset`` over a
  ``list`` of ``(x, y)`` batches).
- **async rows** (``async-<call>-<yield_every>``): an asyncio ticker task sleeps
  20 ms in a loop and records its wall-clock gaps while ``await
  trainer.fit_async(...)`` (or ``fit_dataset_async``) trains the heavy model
  on a fresh ``Trainer``, so the first compilation is inside the measured time.
  ``yield_every="auto"`` by default; ``--rows async-fit-50,async-fit_dataset-50``
  adds the 50 ms ones.

Targets (written beside each row; timing targets live here, never in the tests):
heavy model median gap <= 1.5x and max gap (after the first block) <= 3x
``yield_every``; the ticker's max gap <= 2x ``yield_every``, compilation
included; the tiny model makes few yields per epoch, at most
``ceil(steady epoch time / interval) + 1`` (the steady epoch: "step ms" times
the batches per epoch; a yield per batch would be a regression: the step count
is what matters there, not the gaps).

Full sizes: the heavy model 2 epochs of 150 steps (300 steps, ~10 s a row),
the tiny one 5 epochs of 625. ``--quick``: 2 epochs of 32 heavy steps, 3 tiny
epochs (the whole script in under a minute on 2 CPU cores); ``--smoke``
shrinks every model and runs all rows in one subprocess: it proves the script
works and measures nothing (the test uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads

HEAVY = {
    "model": "mlp",
    "sizes": [256, 1024, 1024, 1024, 10],
    "batch": 256,
    "steps": 150,  # per epoch
    "epochs": 2,
}
TINY = {**workloads.FULL["tiny"]}
SIZES = {
    "full": {"heavy": HEAVY, "tiny": TINY},
    "quick": {
        "heavy": {**HEAVY, "steps": 32},
        "tiny": {**TINY, "epochs": 3},
    },
    "smoke": {
        "heavy": {**HEAVY, "sizes": [16, 64, 64, 2], "batch": 32, "steps": 12},
        "tiny": {**TINY, "samples": 640, "epochs": 2},
    },
}
INTERVAL_MS = {"auto": 125.0, "50": 50.0}
TICK_S = 0.02
FIT_ROWS = [
    f"{model}-{source}-{every}"
    for model in ("heavy", "tiny")
    for source in ("arrays", "stream")
    for every in INTERVAL_MS
]
ASYNC_ROWS = ["async-fit-auto", "async-fit_dataset-auto"]
ROWS = FIT_ROWS + ASYNC_ROWS  # the default rows
EXTRA_ROWS = ["async-fit-50", "async-fit_dataset-50"]  # on request (--rows)
TARGETS = {
    "heavy": "median <= 1.5x, max <= 3x",
    "tiny": "yields/epoch <= ceil(steady epoch/interval) + 1",
    "async": "ticker max <= 2x (compile included)",
}


# -- the child: one or more rows in this process --------------------------------
def _spec(model: str, size: str) -> dict[str, Any]:
    spec = dict(SIZES[size][model])
    if "steps" in spec:
        spec["samples"] = spec["steps"] * spec["batch"]
    return spec


def _yield_every(every: str) -> Any:
    return every if every == "auto" else int(every)


def _trainer(spec):
    import optax

    import jaxfit

    return jaxfit.Trainer(
        workloads.model(spec),
        optimizer=optax.adam(1e-3),
        loss="sparse_categorical_crossentropy_from_logits",
        mesh=None,
    )


def _recorder(steps_per_epoch: int):
    """A callback stamping every yield point: ``.points`` is ``[(t, step)]``
    (``step`` counts the steps run so far, over all epochs)."""
    import jaxfit

    class Recorder(jaxfit.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.points: list[tuple[float, int]] = []
            self.yields = 0

        def on_yield(self, epoch, batch, logs=None):
            self.yields += 1
            self.points.append(
                (time.perf_counter(), epoch * steps_per_epoch + batch + 1)
            )

        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * steps_per_epoch
            if not self.points or self.points[-1][1] != step:  # no yield at the end
                self.points.append((time.perf_counter(), step))

    return Recorder()


def _arguments(spec, source, every, recorder):
    """``(x, y)`` or ``(batches,)`` and the keyword arguments of the fit call."""
    x, y = workloads.data(spec)
    kwargs = {
        "epochs": spec["epochs"],
        "verbose": 0,
        "callbacks": [recorder],
        "yield_every": _yield_every(every),
    }
    if source == "arrays":
        return (x, y), {**kwargs, "batch_size": spec["batch"], "shuffle": False}
    batch = spec["batch"]
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    return (batches,), kwargs


def _gap_stats(start: float, recorder, spec, interval_ms: float) -> dict[str, Any]:
    times = [start] + [t for t, _ in recorder.points]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    later = gaps[1:]
    (t_first, s_first), (t_last, s_last) = recorder.points[0], recorder.points[-1]
    step_s = (t_last - t_first) / (s_last - s_first) if s_last > s_first else None
    batches = math.ceil(spec["samples"] / spec["batch"])
    # the steady epoch (compilation excluded) sets how many yields time asks for
    epoch_s = step_s * batches if step_s else (t_last - start) / spec["epochs"]
    return {
        "steps": s_last,
        "yields": recorder.yields,
        "yields_per_epoch": recorder.yields / spec["epochs"],
        "batches_per_epoch": batches,
        "step_ms": None if step_s is None else 1e3 * step_s,
        "first_gap_s": gaps[0],
        "median_gap_ms": 1e3 * statistics.median(later) if later else None,
        "max_gap_ms": 1e3 * max(later) if later else None,
        "epoch_s": epoch_s,
        "interval_ms": interval_ms,
        "yield_limit_per_epoch": math.ceil(1e3 * epoch_s / interval_ms) + 1,
    }


def measure_fit(row: str, size: str) -> dict[str, Any]:
    model, source, every = row.split("-")
    spec = _spec(model, size)
    steps_per_epoch = math.ceil(spec["samples"] / spec["batch"])
    recorder = _recorder(steps_per_epoch)
    args, kwargs = _arguments(spec, source, every, recorder)
    trainer = _trainer(spec)
    call = trainer.fit if source == "arrays" else trainer.fit_dataset
    start = time.perf_counter()
    call(*args, **kwargs)
    return _gap_stats(start, recorder, spec, INTERVAL_MS[every])


def measure_async(row: str, size: str) -> dict[str, Any]:
    _, call, every = row.split("-")
    spec = _spec("heavy", size)
    steps_per_epoch = math.ceil(spec["samples"] / spec["batch"])
    recorder = _recorder(steps_per_epoch)
    source = "arrays" if call == "fit" else "stream"
    args, kwargs = _arguments(spec, source, every, recorder)
    trainer = _trainer(spec)  # fresh: its first compilation is inside the run
    fit = trainer.fit_async if call == "fit" else trainer.fit_dataset_async
    ticks: list[float] = []

    async def ticker(done: asyncio.Event) -> None:
        ticks.append(time.perf_counter())
        while not done.is_set():
            await asyncio.sleep(TICK_S)
            ticks.append(time.perf_counter())

    async def main() -> float:
        done = asyncio.Event()
        task = asyncio.create_task(ticker(done))
        await asyncio.sleep(0)  # the ticker has taken its first stamp
        start = time.perf_counter()
        await fit(*args, **kwargs)
        done.set()
        await task
        return start

    start = asyncio.run(main())
    stats = _gap_stats(start, recorder, spec, INTERVAL_MS[every])
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    first_yield = recorder.points[0][0]
    after = [b - a for a, b in itertools.pairwise(ticks) if a >= first_yield]
    return {
        **stats,
        "ticks": len(gaps),
        "ticker_median_ms": 1e3 * statistics.median(gaps),
        "ticker_max_ms": 1e3 * max(gaps),
        "ticker_max_after_first_yield_ms": 1e3 * max(after) if after else None,
    }


def child(rows: list[str], size: str) -> None:
    for row in rows:
        measure = measure_async if row.startswith("async-") else measure_fit
        print(json.dumps({"row": row, "size": size, **measure(row, size)}), flush=True)


# -- the parent: subprocesses and the tables -------------------------------------
def run_rows(rows: list[str], size: str, one_process: bool = False) -> list[dict]:
    """Runs each row in its own subprocess (all in one with ``one_process``)."""
    groups = [rows] if one_process else [[row] for row in rows]
    results = []
    for group in groups:
        argv = [sys.executable, os.path.abspath(__file__), "--child", ",".join(group)]
        argv += ["--size", size]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        lines = [
            line for line in result.stdout.splitlines() if line.startswith('{"row"')
        ]
        done = {json.loads(line)["row"]: json.loads(line) for line in lines}
        error = (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
        for row in group:
            results.append(done.get(row) or {"row": row, "size": size, "error": error})
            print(f"# latency {row}: " + _summary(results[-1]), flush=True)
    return results


def _summary(r: dict) -> str:
    if "error" in r:
        return r["error"]
    if "ticker_max_ms" in r:
        return f"ticker max {r['ticker_max_ms']:.0f} ms"
    return (
        f"max gap {_ms(r['max_gap_ms'])} ms, {r['yields_per_epoch']:.1f} yields/epoch"
    )


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _x(value, interval) -> str:
    return "n/a" if value is None else f"{value / interval:.2f}x"


def _verdict(r: dict) -> str:
    if r["size"] == "smoke":
        return "n/a (smoke)"
    ok = _meets(r)
    return "n/a" if ok is None else ("met" if ok else "missed")


def _meets(r: dict) -> bool | None:
    model = r["row"].split("-")[0]
    interval = r["interval_ms"]
    if model == "async":
        return r["ticker_max_ms"] <= 2 * interval
    if model == "tiny":
        return r["yields_per_epoch"] <= r["yield_limit_per_epoch"]
    if r["max_gap_ms"] is None:
        return None
    return r["median_gap_ms"] <= 1.5 * interval and r["max_gap_ms"] <= 3 * interval


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: the fit table, then the fit_async table."""
    fit = [r for r in rows if not r["row"].startswith("async-")]
    lines = [
        "### yield latency: gaps between yield points",
        "",
        "| row | step ms | steps | yields | yields/epoch | batches/epoch | "
        "first gap s (compile) | median gap ms | max gap ms | median / interval | "
        "max / interval | target | verdict |",
        "|" + "---|" * 13,
    ]
    for r in fit:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['error']} |" + " |" * 11)
            continue
        interval = r["interval_ms"]
        lines.append(
            f"| {r['row']} | {_step(r['step_ms'])} | {r['steps']} | {r['yields']} | "
            f"{r['yields_per_epoch']:.1f} | {r['batches_per_epoch']} | "
            f"{r['first_gap_s']:.2f} | {_ms(r['median_gap_ms'])} | "
            f"{_ms(r['max_gap_ms'])} | {_x(r['median_gap_ms'], interval)} | "
            f"{_x(r['max_gap_ms'], interval)} | {TARGETS[r['row'].split('-')[0]]}"
            f"{_tiny_limit(r)} | {_verdict(r)} |"
        )
    lines += [
        "",
        "### yield latency: fit_async responsiveness (a 20 ms asyncio ticker)",
        "",
        "| row | step ms | ticks | ticker median ms | ticker max ms | "
        "max / interval | max after first yield ms | first gap s (compile) | "
        "target | verdict |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        if not r["row"].startswith("async-"):
            continue
        if "error" in r:
            lines.append(f"| {r['row']} | {r['error']} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['row']} | {_step(r['step_ms'])} | {r['ticks']} | "
            f"{r['ticker_median_ms']:.0f} | {r['ticker_max_ms']:.0f} | "
            f"{_x(r['ticker_max_ms'], r['interval_ms'])} | "
            f"{_ms(r['ticker_max_after_first_yield_ms'])} | {r['first_gap_s']:.2f} | "
            f"{TARGETS['async']} | {_verdict(r)} |"
        )
    return lines + [""]


def _step(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _tiny_limit(r: dict) -> str:
    return f" (= {r['yield_limit_per_epoch']})" if r["row"].startswith("tiny-") else ""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="fewer steps")
    sizes.add_argument(
        "--smoke", action="store_true", help="toy sizes, one subprocess (tests)"
    )
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--json", help="write one JSON line per row here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child.split(","), args.size)
        return []
    rows = [row for row in args.rows.split(",") if row]
    for row in rows:
        if row not in ROWS + EXTRA_ROWS:
            parser.error(f"--rows: unknown {row!r}; expected {ROWS + EXTRA_ROWS}")
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    results = run_rows(rows, size, one_process=args.smoke)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            for result in results:
                f.write(json.dumps(result) + "\n")
    print("\n".join(table(results)))
    return results


if __name__ == "__main__":
    main()
