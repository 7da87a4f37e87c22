"""The benchmark harness runs on a fresh install: a row per available implementation.

Timings are not asserted (they live in benchmarks/RESULTS.md); this only proves that
`python benchmarks/run.py --quick` works end to end, with tiny sizes, for the
in-memory rows and the stream (``fit_dataset``) rows alike.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

RUN = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "run.py")
IMPLS = [
    "jaxfit",
    "jaxfit-batch",
    "handloop",
    "scan",
    "keras",
    "keras-spe32",
    "flax-nnx",
]
STREAM_IMPLS = [
    "jaxfit-list",
    "jaxfit-gen",
    "jaxfit-grain",
    "jaxfit-tfdata",
    "handloop-stream",
    "keras-gen",
    "keras-pydataset",
    "keras-pydataset-spe32",
]
NEEDS = {
    "keras": "keras",
    "keras-spe32": "keras",
    "flax-nnx": "flax",
    "jaxfit-grain": "grain",
    "keras-gen": "keras",
    "keras-pydataset": "keras",
    "keras-pydataset-spe32": "keras",
}


def _available(impl):
    needs = NEEDS.get(impl)
    return needs is None or importlib.util.find_spec(needs) is not None


def _run(tmp_path, workloads, impls):
    """Runs the harness at tiny sizes; returns (rows, printed table)."""
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            RUN,
            "--quick",
            "--workloads",
            workloads,
            "--impls",
            ",".join(impls),
            "--json",
            str(out),
            "--set",
            "samples=256",
            "--set",
            "epochs=2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return rows, result.stdout


def _check_rows(rows):
    for row in rows:
        if _available(row["impl"]):
            assert "error" not in row and "skipped" not in row, row
            assert row["epochs"] == 2 and row["steady_epoch_s"] > 0
            # every row, streams included, compiles nothing after its first epoch
            assert row["compiles_after_first_epoch"] == 0, row
            assert math.isfinite(row["final_loss"])
            assert 0.0 < row["final_loss"] < 1.0, row  # a real, finite loss
        else:
            assert "skipped" in row


def test_run_quick_produces_a_row_per_available_implementation(tmp_path):
    rows, table = _run(tmp_path, "tiny", IMPLS + STREAM_IMPLS)
    assert [r["impl"] for r in rows] == IMPLS + STREAM_IMPLS
    _check_rows(rows)
    assert "| jaxfit |" in table and "**verdict tiny**: jaxfit/scan = " in table
    assert "jaxfit/handloop = " in table
    for impl in STREAM_IMPLS:
        assert f"| {impl} |" in table
    assert "jaxfit-list/jaxfit = " in table
    assert "jaxfit-list/handloop-stream = " in table
    assert "first epoch jaxfit-list/handloop = " in table
    if _available("jaxfit-grain"):
        assert "jaxfit-grain/jaxfit = " in table
    # The JAX stream rows train on fit's batches in fit's order: the same model
    # from the same weights, so the same loss (to float rounding).
    timed = {r["impl"]: r for r in rows if "final_loss" in r}
    for impl in (
        "jaxfit-list",
        "jaxfit-gen",
        "jaxfit-grain",
        "jaxfit-tfdata",
        "handloop-stream",
    ):
        if impl in timed:
            assert math.isclose(
                timed[impl]["final_loss"], timed["jaxfit"]["final_loss"], rel_tol=1e-3
            ), (impl, timed[impl], timed["jaxfit"])


def test_stream_rows_run_the_callbacks_workload(tmp_path):
    impls = ["jaxfit-list", "handloop-stream", "keras-pydataset"]
    rows, table = _run(tmp_path, "callbacks", impls)
    assert [r["impl"] for r in rows] == impls
    _check_rows(rows)
    assert "**verdict callbacks**: jaxfit-list/handloop-stream = " in table


def test_kills_resumes_two_killed_runs_to_the_uninterrupted_one(tmp_path):
    # benchmarks/kills.py end to end at its smallest: the reference run, then two
    # trials (one kill anywhere, one in the run's last quarter), each resumed and
    # compared; the script exits 1 unless both end equal
    kills = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "kills.py")
    out = tmp_path / "kills.json"
    result = subprocess.run(
        [sys.executable, kills, "--trials", "2", "--seed", "0", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and all(row["result"] == "equal" for row in rows), rows
    assert "2 of 2 trials complete and equal" in result.stdout


LATENCY = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "latency.py")
# one row per public call (fit, fit_dataset, fit_async, fit_dataset_async), both
# models and both intervals; the full list runs in the benchmark itself
LATENCY_ROWS = [
    "heavy-arrays-auto",
    "tiny-stream-50",
    "async-fit-auto",
    "async-fit_dataset-auto",
]


def _cells(table, row):
    """``{column: cell}`` of ``row``'s line in the printed markdown tables."""
    header = None
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| row |"):
            header = cells
        elif line.startswith(f"| {row} |"):
            assert header and len(cells) == len(header), (header, cells)
            return dict(zip(header, cells))
    raise AssertionError(f"no line for {row} in:\n{table}")


def test_latency_smoke_prints_every_row_with_numbers(tmp_path):
    # benchmarks/latency.py at its smallest (toy models, all rows in one
    # subprocess). Its timing targets live in the benchmark, never here: this
    # checks that the rows are there and that their numbers parse.
    out = tmp_path / "latency.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            LATENCY,
            "--smoke",
            "--rows",
            ",".join(LATENCY_ROWS),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in rows] == LATENCY_ROWS
    for row in rows:
        assert "error" not in row, row
        # on_yield comes at least after each epoch's last batch (2 epochs)
        assert row["steps"] == 2 * row["batches_per_epoch"] and row["yields"] >= 2
    table = result.stdout
    assert "### yield latency: gaps between yield points" in table
    assert "### yield latency: fit_async responsiveness" in table
    for row in LATENCY_ROWS:
        cells = _cells(table, row)
        assert cells.pop("row") == row and cells.pop("target")
        assert cells.pop("verdict") == "n/a (smoke)"  # a toy run meets nothing
        if cells.get("max after first yield ms") == "n/a":
            # no tick began after the first yield: a toy fit ends right after it
            del cells["max after first yield ms"]
        assert len(cells) >= 6, cells
        for column, cell in cells.items():
            assert math.isfinite(float(cell.rstrip("x"))), (row, column, cell)
