"""README.md stays true: its quickstart runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no python block"
    assert len(blocks[0].strip().splitlines()) <= 20
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "19" in capsys.readouterr().out


def test_readme_set_up_commands_match_ci():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert '-e ".[test]"' in text and '-e ".[test]"' in ci
    assert "python -m pytest -q" in text and "python -m pytest -q" in ci
    assert "jaxfit.examples.digits" in text
