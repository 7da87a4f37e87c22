"""Every install line a user reads installs this project: its distribution is
``jaxfit-trainer`` (``jaxfit`` on PyPI is an unrelated project).

An install line is ``pip install``, ``pip3 install``, ``python -m pip install``,
``uv pip install``, ``%pip install`` or ``!pip install`` in README.md,
CONTRIBUTING.md, docs/**/*.md and the notebooks' cells, in a code block or in
inline code. Each requirement it names must be this project: the checkout
(``.``, ``-e ".[run]"``), the wheel or sdist ``python -m build`` makes
(``dist/jaxfit_trainer-...``), or ``jaxfit-trainer[...] @ git+URL`` with URL
pyproject's ``[project.urls] Repository``. The Colab cell's git line is installed
too (from this checkout, ``--no-deps --dry-run``), so pip checks the name against
the metadata it builds.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME = "jaxfit-trainer"
REPOSITORY = re.search(
    r'^Repository = "([^"]+)"$',
    (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
    re.M,
).group(1)
GIT_URL = f"git+{REPOSITORY}"
# (file, requirement) pairs allowed to name something else, each exactly once
EXCEPTIONS = {
    # a contributor's tool, installed beside the project (CONTRIBUTING, pre-commit)
    ("CONTRIBUTING.md", "pre-commit"),
    # the one warning that `pip install jaxfit` gets another project
    ("docs/getting-started.md", "jaxfit"),
}
COMMAND = re.compile(r"(?:^|[\s`(!%/])(?:uv\s+)?(?:python3?\s+-m\s+)?pip3?\s+install\s")
# options whose value is not a requirement (a requirements file is not allowed)
VALUE_OPTIONS = {"-t", "--target", "-d", "--dest", "--prefix", "--root", "--report"}
VALUE_OPTIONS |= {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}


def sources() -> dict[str, list[str]]:
    """``{relative path: texts}``: the Markdown files and each notebook cell."""
    found = {
        p: [p.read_text(encoding="utf-8")]
        for p in [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
        + sorted((ROOT / "docs").rglob("*.md"))
    }
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        found[path] = ["".join(cell["source"]) for cell in cells]
    return {p.relative_to(ROOT).as_posix(): texts for p, texts in found.items()}


def install_lines(text: str) -> list[str]:
    """The install commands of a text, from ``install`` on to the end of the
    command (the line's end, a closing backtick, ``&&``, ``;``, ``|``, ``#``)."""
    commands = []
    for line in text.splitlines():
        for match in COMMAND.finditer(line):
            start = match.end()
            inline = line[: match.start() + 1].count("`") % 2 == 1
            rest = line[start:].split("`")[0] if inline else line[start:]
            commands.append("install " + rest.strip())
    return commands


def requirements(command: str) -> list[str]:
    """What an install command asks for (``-e`` values included, options not)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)[1:]  # after "install"
    found, skip = [], False
    for token in tokens:
        if token in (";", "&&", "|", "||", "&"):
            break
        if skip:
            skip = False
        elif token in ("-r", "--requirement", "-c", "--constraint"):
            found.append(f"<requirements file {token}>")
            skip = True
        elif token in VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            found.append(token)
    return found


def problem(requirement: str) -> str | None:
    """Why ``requirement`` does not install this project, or None if it does."""
    path = re.sub(r"\[[^\]]*\]$", "", requirement)  # a path's extras
    if path in (".", "./") or (path.startswith(("./", "../", "/", "dist/"))):
        wheel = path.endswith((".whl", ".tar.gz"))
        if wheel and not os.path.basename(path).startswith("jaxfit_trainer-"):
            return f"the file {path!r} is not jaxfit-trainer's wheel or sdist"
        if not wheel and path not in (".", "./"):
            return f"the path {path!r} is not this checkout ('.')"
        return None
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return f"{requirement!r} is not a requirement, a path or a wheel"
    if canonicalize_name(parsed.name) == "jaxfit":
        return (
            "a bare 'jaxfit' is an unrelated PyPI project; this one is jaxfit-trainer"
        )
    if canonicalize_name(parsed.name) != NAME:
        return f"{parsed.name!r} is not {NAME}"
    if parsed.url is not None and parsed.url != GIT_URL:
        return f"the URL {parsed.url!r} is not pyproject's Repository ({GIT_URL})"
    if parsed.url is None:
        return f"{NAME} is not on PyPI: install a checkout, the wheel or {GIT_URL}"
    return None


def checked() -> tuple[list[tuple[str, str]], list[str]]:
    """``([(file, command)], [problems])`` over every source."""
    commands, problems, used = [], [], set()
    for path, texts in sources().items():
        for text in texts:
            for command in install_lines(text):
                commands.append((path, command))
                for requirement in requirements(command):
                    key = (path, requirement)
                    if key in EXCEPTIONS and key not in used:
                        used.add(key)
                        continue
                    why = problem(requirement)
                    if why:
                        problems.append(f"{path}: pip {command}: {why}")
    problems += [f"{p}: the allowed {r!r} is gone" for p, r in EXCEPTIONS - used]
    return commands, problems


def test_every_install_line_installs_this_project():
    commands, problems = checked()
    assert not problems, "\n".join(problems)
    files = {path for path, _ in commands}
    # the lines are really found: the README's two set-ups and its docs line, the
    # guide's three ways, the notebook's Colab line, CONTRIBUTING's set-ups
    assert len(commands) >= 12, commands
    assert {"README.md", "CONTRIBUTING.md", "docs/getting-started.md"} <= files
    assert "notebooks/quickstart.ipynb" in files
    colab = [c for p, c in commands if p == "notebooks/quickstart.ipynb"]
    guide = [c for p, c in commands if p == "docs/getting-started.md"]
    assert [requirements(c) for c in colab] == [[f"{NAME}[examples,plot] @ {GIT_URL}"]]
    assert requirements(colab[0])[0] in {r for c in guide for r in requirements(c)}


@pytest.mark.parametrize(
    "line, why",
    [
        ("pip install jaxfit", "bare 'jaxfit'"),
        ('Run `%pip install "jaxfit[examples,plot]"` first.', "bare 'jaxfit'"),
        ("!pip install -q jaxfit-trainer", "not on PyPI"),
        ('uv pip install "jax[tpu]"', "'jax' is not jaxfit-trainer"),
        ("python -m pip install dist/jaxfit-0.1.0-py3-none-any.whl", "not jaxfit-t"),
        ("pip install -e ../elsewhere && jaxfit run x", "not this checkout"),
        ("pip install -r requirements.txt", "not a requirement"),
        (f"pip install 'jaxfit-trainer @ git+{REPOSITORY}x'", "not pyproject's"),
    ],
)
def test_the_rule_catches_what_installs_something_else(line, why):
    (command,) = install_lines(line)
    found = [problem(r) for r in requirements(command)]
    assert any(w and why in w for w in found), (line, found)


@pytest.mark.parametrize(
    "line, wanted",
    [
        ('.venv/bin/pip install -e ".[run]" && .venv/bin/jaxfit run x', ".[run]"),
        ("pip install -q dist/jaxfit_trainer-0.1.0-py3-none-any.whl", None),
        (f'%pip install "jaxfit-trainer[plot] @ git+{REPOSITORY}"  # Colab', None),
    ],
)
def test_the_rule_passes_this_project(line, wanted):
    (command,) = install_lines(line)
    found = requirements(command)
    assert len(found) == 1 and problem(found[0]) is None, found
    assert wanted is None or found == [wanted]


def test_the_colab_line_installs_a_project_named_jaxfit_trainer(tmp_path):
    """The notebook's git line, pointed at this checkout's HEAD: pip clones it,
    builds its metadata (hatchling in build isolation) and refuses a name that
    differs from the requirement's."""
    head = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("the checkout is not a git repository with a commit")
    commands, _ = checked()
    (colab,) = [c for p, c in commands if p == "notebooks/quickstart.ipynb"]
    (requirement,) = requirements(colab)
    local = requirement.replace(
        GIT_URL, f"git+file://localhost{ROOT}@{head.stdout.strip()}"
    )
    report = tmp_path / "report.json"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--dry-run", "-q"]
        + ["--ignore-installed", "--report", str(report), local],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (item,) = json.loads(report.read_text(encoding="utf-8"))["install"]
    assert item["metadata"]["name"] == NAME
    assert item["download_info"]["url"].startswith(f"file://localhost{ROOT}")
    assert set(item["requested_extras"]) == {"examples", "plot"}
