"""benchmarks/sweep.py runs end to end (``--smoke``: 2 trials of 1 epoch).

Timings are not asserted (they live in benchmarks/RESULTS.md); this proves the
script's table comes out with numbers and that its two rows ran the same trials:
the packed row's objectives equal the one-at-a-time row's, learning rate by
learning rate.
"""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sweep.py")
NUMBER = r"-?\d+(?:\.\d+)?"


def test_sweep_benchmark_smoke_prints_a_table_of_numbers(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [r["row"] for r in rows] == ["lanes-2", "lanes-1"]
    assert [r["groups"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("wall_s", "process_s", "group_runs_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["process_s"] > row["wall_s"] > row["group_runs_s"]
        assert [t[0] for t in row["trials"]] == [1e-4, 1e-2]
        assert all(t[2] == "COMPLETE" for t in row["trials"])
    packed, single = ([t[1] for t in r["trials"]] for r in rows)
    np.testing.assert_allclose(packed, single, rtol=1e-5)
    assert rows[0]["best_objective"] == min(packed)

    text = result.stdout
    for name in ("lanes-2", "lanes-1"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 9 and all(re.fullmatch(NUMBER, c) for c in cells), line
    verdict = re.search(rf"lanes-1 / lanes-2 wall = ({NUMBER})x .*n/a \(smoke\)", text)
    assert verdict is not None, text
    assert float(verdict.group(1)) == round(rows[1]["wall_s"] / rows[0]["wall_s"], 2)
    assert re.search(r"max \|difference\| = \S+", text), text
