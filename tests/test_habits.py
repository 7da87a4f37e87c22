"""The habits CI enforces, as tests: ruff lint and format, mypy on the package, and
a house you can read (no module over 500 lines, no function over 50).

The settings live in pyproject.toml ([tool.ruff], [tool.mypy]); CONTRIBUTING.md has
the same commands. Each runs the tool from this interpreter's environment.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ["jaxfit", "tests", "benchmarks"]


def _run(*argv):
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [("ruff", "check", *PATHS), ("ruff", "format", "--check", *PATHS)],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff_is_clean(argv):
    result = _run(*argv)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_is_clean_on_the_package():
    result = _run("mypy", "jaxfit")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 50  # its body, without the docstring


def _modules():
    return sorted(pathlib.Path(ROOT, "jaxfit").rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (lines): {long}"


def _body_lines(node):
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = body[1].lineno if docstring and len(body) > 1 else first.lineno
    return node.end_lineno - start + 1


def test_no_function_is_over_50_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if function and (n := _body_lines(node)) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}::{node.name}"] = n
    assert not long, f"split these functions (body lines): {long}"
