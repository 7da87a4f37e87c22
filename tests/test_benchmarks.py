"""The benchmark harness runs on a fresh install: a row per available implementation.

Timings are not asserted (they live in benchmarks/RESULTS.md); this only proves that
`python benchmarks/run.py --quick` works end to end, with tiny sizes.
"""

import importlib.util
import json
import os
import subprocess
import sys

RUN = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "run.py")
IMPLS = ["jaxfit", "jaxfit-batch", "handloop", "scan", "keras", "keras-spe32", "flax-nnx"]


def _available(impl):
    needs = {"keras": "keras", "keras-spe32": "keras", "flax-nnx": "flax"}.get(impl)
    return needs is None or importlib.util.find_spec(needs) is not None


def test_run_quick_produces_a_row_per_available_implementation(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, RUN, "--quick", "--workloads", "tiny", "--impls", ",".join(IMPLS),
         "--json", str(out), "--set", "samples=256", "--set", "epochs=2"],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["impl"] for r in rows] == IMPLS
    for row in rows:
        if _available(row["impl"]):
            assert "error" not in row and "skipped" not in row, row
            assert row["epochs"] == 2 and row["steady_epoch_s"] > 0
            assert row["compiles_after_first_epoch"] == 0
            assert 0.0 < row["final_loss"] < 1.0  # a real, finite loss
        else:
            assert "skipped" in row
    table = result.stdout
    assert "| jaxfit |" in table and "**verdict tiny**: jaxfit/scan = " in table
    assert "jaxfit/handloop = " in table
