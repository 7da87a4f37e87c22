"""The habits CI enforces, as tests: ruff lint and format, mypy on the package.

The settings live in pyproject.toml ([tool.ruff], [tool.mypy]); CONTRIBUTING.md has
the same commands. Each runs the tool from this interpreter's environment.
"""

import os
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
