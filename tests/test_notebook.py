"""notebooks/01_quickstart.ipynb stays true to the code: its cells run in order."""

import ast
import asyncio
import json
import pathlib

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"


def test_quickstart_notebook_runs(capsys):
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        # top-level await, as a notebook kernel allows it
        code = compile(source, str(NOTEBOOK), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # noqa: S307
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert "epochs," in capsys.readouterr().out
    assert namespace["history"].epoch == [0, 1, 2, 3, 4]
