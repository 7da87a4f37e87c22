"""benchmarks/population.py runs end to end (``--smoke``: tiny sizes).

Timings are not asserted (they live in benchmarks/RESULTS.md); this proves the
script's rows and tables come out with numbers, and that its two time rows train
the same configurations: each member's final loss equals its sequential
trainer's.
"""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "population.py")
NUMBER = r"-?\d+(?:\.\d+)?"


def test_population_benchmark_smoke_prints_tables_of_numbers(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        r["row"]: r
        for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())
    }
    assert list(rows) == ["population", "sequential", "memory-1", "memory-2"]
    for row in rows.values():
        assert "error" not in row, row
        for key in ("end_to_end_s", "build_s", "first_epochs_s", "steady_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["peak_rss_kib"] >= row["built_rss_kib"] >= row["base_rss_kib"] > 0
    pop, seq = rows["population"], rows["sequential"]
    assert pop["members"] == seq["members"] == 2 and pop["epochs"] == 2
    assert len(pop["final_losses"]) == len(seq["final_losses"]) == 2
    np.testing.assert_allclose(pop["final_losses"], seq["final_losses"], rtol=1e-4)
    assert pop["yields"] >= 1 and seq["yields"] >= 2

    text = result.stdout
    for row in ("population", "sequential"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {row} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 6 and all(re.fullmatch(NUMBER, c) for c in cells), line
    verdict = re.search(
        rf"end to end = ({NUMBER})x .* steady epochs = ({NUMBER})x", text
    )
    assert verdict is not None, text
    expected = seq["end_to_end_s"] / pop["end_to_end_s"]
    assert float(verdict.group(1)) == round(expected, 2)
    assert "n/a (smoke)" in text
    memory = [ln for ln in text.splitlines() if re.match(r"\| [12] \|", ln)]
    assert len(memory) == 2
    for line in memory:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(re.fullmatch(NUMBER, c) for c in cells[:6]), line
