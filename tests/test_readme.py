"""README.md stays true: its quickstart runs as written, its set-up commands are
CI's, and its links into the docs resolve."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs(capsys):
    blocks = re.findall(
        r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S
    )
    assert blocks, "README.md has no python block"
    assert len(blocks[0].strip().splitlines()) <= 20
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "19" in capsys.readouterr().out


def test_readme_set_up_commands_match_ci():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert '-e ".[test]"' in text and '-e ".[test]"' in ci
    suite = "python -m pytest -q -n 2 --dist loadfile"  # two worker processes
    assert f".venv/bin/{suite} && " in text
    # the device matrix: both runs, in the README and in CI
    eight = "XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu"
    assert f"{eight} .venv/bin/{suite}\n" in text
    assert eight in ci and ci.count(f"{suite}\n") == 2
    assert 'pip install -e ".[run]" && .venv/bin/jaxfit run digits_mlp' in text


# The guide content README.md used to hold moved to docs/ (the annotated config, the
# streaming callback, the checkpoint and Flax examples): tests/test_docs_site.py runs
# and checks those examples where they are now.


def test_readme_links_into_the_docs_resolve():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert links, "README.md does not link into docs/"
    for link in links:
        assert (README.parent / link).is_file(), link
    guides = sorted(
        p.relative_to(README.parent).as_posix()
        for p in (README.parent / "docs" / "guides").glob("*.md")
    )
    assert [g for g in guides if g not in links] == [], (
        "a guide README.md does not list"
    )


def test_readme_stays_the_short_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    # the quickstart comes first, as the wheel test and the docs run it
    assert text.index("```python") < text.index("## Set-up: two commands")
