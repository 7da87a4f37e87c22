"""notebooks/quickstart.ipynb stays true to the code: a real kernel runs every cell."""

import pathlib

import pytest
from conftest import DEVICES

NOTEBOOK = (
    pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
)


def test_quickstart_notebook_executes_without_error(tmp_path):
    nbformat = pytest.importorskip(
        "nbformat", reason="notebook tooling is a test extra"
    )
    nbclient = pytest.importorskip(
        "nbclient", reason="notebook tooling is a test extra"
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream"
    )
    assert "batches seen" in text and "val_accuracy" in text
    # the kernel inherits the device matrix: in its 8-device run the notebook
    # trains 8-way data parallel, as on a Colab TPU
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert shown.count("Device(id=") == DEVICES
