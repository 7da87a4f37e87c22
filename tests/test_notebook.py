"""notebooks/quickstart.ipynb stays true to the code: a real kernel runs every cell,
and the outputs stored in the file (the docs site shows them: the numbers, the
plot) are this test's own, from the cells as they are now.

To refresh the stored outputs after editing a cell, run this test on one device
with ``JAXFIT_STORE_NOTEBOOK=1``::

    JAXFIT_STORE_NOTEBOOK=1 .venv/bin/python -m pytest -q tests/test_notebook.py

It executes the notebook, writes the outputs back (without execution timings or
widget views, which the site cannot show) and records the sha256 of the code
cells' sources in the notebook's metadata (``jaxfit.outputs_from_sha256``).
"""

import hashlib
import json
import os
import pathlib

import pytest
from conftest import DEVICES

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
)
STORE = "JAXFIT_STORE_NOTEBOOK=1 .venv/bin/python -m pytest -q tests/test_notebook.py"
WIDGET = "application/vnd.jupyter.widget-view+json"


def sources_sha256(cells) -> str:
    """The sha256 of the code cells' sources, in order."""
    code = [cell["source"] for cell in cells if cell["cell_type"] == "code"]
    joined = [s if isinstance(s, str) else "".join(s) for s in code]
    return hashlib.sha256(json.dumps(joined).encode()).hexdigest()


def kinds(cell) -> set[str]:
    """What a code cell shows: stream names and the mime types of its results."""
    found = set()
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            found.add(output["name"])
        found |= set(output.get("data", {})) - {WIDGET}
    return found


def _final_lines(text: str) -> str:
    """What a terminal shows of ``text``: each line as its last ``\\r`` left it."""
    lines = []
    for line in text.split("\n"):
        parts = [part for part in line.split("\r") if part]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def clean(notebook, nbformat) -> None:
    """An executed notebook's outputs as a page shows them: no widget views (the
    site cannot run them), the progress bar's final line per epoch (its refreshes
    merged, as a terminal shows them), no warning that this headless kernel lacks
    ipywidgets, no execution timings."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        merged: list = []
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET, None)
            output.get("metadata", {}).pop(WIDGET, None)
            if output["output_type"] != "stream":
                merged.append(output)
            elif merged and merged[-1].get("name") == output["name"]:
                merged[-1]["text"] += output["text"]
            else:
                merged.append(
                    nbformat.v4.new_output(
                        "stream", name=output["name"], text=output["text"]
                    )
                )
        for output in merged:
            if output["output_type"] == "stream":
                text = _final_lines(output["text"])
                kept = [line for line in text.split("\n") if not _noise(line)]
                output["text"] = "\n".join(kept)
        cell.outputs = [o for o in merged if o.get("text", True)]
    notebook.metadata.pop("widgets", None)


def _noise(line: str) -> bool:
    return "IProgress not found" in line or "from .autonotebook import" in line


def store(notebook, nbformat) -> None:
    """Writes a cleaned, executed notebook back with its sources' hash."""
    notebook.metadata["jaxfit"] = {
        "outputs_from_sha256": sources_sha256(notebook.cells)
    }
    nbformat.write(notebook, NOTEBOOK)


def test_the_stored_outputs_are_from_the_current_sources():
    stored = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    recorded = stored["metadata"].get("jaxfit", {}).get("outputs_from_sha256")
    assert recorded == sources_sha256(stored["cells"]), (
        "notebooks/quickstart.ipynb: a code cell changed since its outputs were "
        f"stored; refresh them with: {STORE}"
    )
    plot = [c for c in stored["cells"] if "history.plot(" in "".join(c["source"])]
    assert ["image/png" in kinds(c) for c in plot] == [True]


def test_quickstart_notebook_executes_without_error(tmp_path):
    nbformat = pytest.importorskip(
        "nbformat", reason="notebook tooling is a test extra"
    )
    nbclient = pytest.importorskip(
        "nbclient", reason="notebook tooling is a test extra"
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    stored = [kinds(c) for c in notebook.cells if c.cell_type == "code"]
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    clean(notebook, nbformat)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in code_cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream"
    )
    assert "batches seen" in text and "val_accuracy" in text
    # the kernel inherits the device matrix: in its 8-device run the notebook
    # trains 8-way data parallel, as on a Colab TPU
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert shown.count("Device(id=") == DEVICES
    if os.environ.get("JAXFIT_STORE_NOTEBOOK") == "1":
        assert DEVICES == 1, "store the outputs of a one-device run"
        store(notebook, nbformat)
        return
    # every cell that shows something here has the same kinds of output stored
    executed = [kinds(cell) for cell in code_cells]
    missing = [(i, e - s) for i, (e, s) in enumerate(zip(executed, stored)) if e - s]
    assert not missing, f"stored outputs lack (code cell, kinds) {missing}: {STORE}"
    assert "image/png" in set().union(*executed)
