"""The documentation site stays true: it builds with ``mkdocs build --strict`` (broken
links and anchors, missing references and warnings fail), every public name has a
reference entry, and every ```python block in ``docs/`` runs.

A block that cannot run here (a multi-process launch, a TPU) is marked with an HTML
comment on the line before it: ``<!-- skip: why -->``. Blocks of one page share a
namespace and run in order, as a reader runs them; paths under ``/tmp/jaxfit-demo``
are redirected into the test's temporary directory.
"""

import html
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import one_device_pass

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(
    r"(?:^(<!--\s*skip\b[^>]*-->)[ \t]*\n)?^```python\n(.*?)^```", re.S | re.M
)
PUBLIC_MODULES = (
    "jaxfit",
    "jaxfit.callbacks",
    "jaxfit.losses",
    "jaxfit.metrics",
    "jaxfit.data",
    "jaxfit.distributed",
    "jaxfit.cli",
)
# optional libraries a page's examples need (all in the test extra)
NEEDS = {
    "flax": "flax",
    "eqx": "equinox",
    "BackupAndRestore": "orbax.checkpoint",
    "ModelCheckpoint": "orbax.checkpoint",
    "from_arrays": "grain",
    "jaxfit.run(": "sklearn",
    "MLflowLogger(": "mlflow",
}


def python_blocks(page: pathlib.Path) -> list[tuple[str, bool]]:
    """``(code, skipped)`` of each ```python block of a page, in order."""
    return [(code, bool(skip)) for skip, code in BLOCK.findall(page.read_text("utf-8"))]


def _block(page: str, containing: str) -> str:
    return next(code for code, _ in python_blocks(DOCS / page) if containing in code)


PAGES = sorted(
    p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if python_blocks(p)
)


def _run(code: str, namespace: dict, tmp_path: pathlib.Path, name: str) -> None:
    code = code.replace("/tmp/jaxfit-demo", str(tmp_path / "jaxfit-demo"))
    exec(compile(code, name, "exec"), namespace)


# -- the site builds --------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "mkdocstrings", "material", "mkdocs_jupyter"):
        pytest.importorskip(module, reason="the docs extra builds the site")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _text(page: pathlib.Path) -> str:
    """The visible text of a built page (tags stripped)."""
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text("utf-8"), flags=re.S)
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", raw).split()))


@one_device_pass
def test_site_builds_strict_and_every_nav_page_is_there(site):
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(config["nav"]))
    for page in listed:
        built = site / re.sub(r"(index)?\.(md|ipynb)$", "", page) / "index.html"
        assert built.is_file(), page
    # every Markdown page is reachable from the nav
    assert sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")) == sorted(
        p for p in listed if p.endswith(".md")
    )


@one_device_pass
def test_the_api_reference_renders_every_public_name_from_its_docstring(site):
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        page = "jaxfit" if module_name == "jaxfit" else module_name.split(".")[1]
        built = (site / "api" / page / "index.html").read_text("utf-8")
        text = _text(site / "api" / page / "index.html")
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            assert f'id="{module_name}.{name}"' in built, f"{module_name}.{name}"
            summary = inspect.getdoc(obj).split("\n\n")[0]
            first_words = "".join(re.sub(r"`+", "", summary).split()[:4])
            assert first_words in "".join(text.split()), (
                module_name,
                name,
                first_words,
            )
    trainer = _text(site / "api" / "jaxfit" / "index.html")
    # members, their Args tables and examples are rendered, not just headings
    for words in ("fit_dataset", "validation_data", "Returns", "Raises", ">>>"):
        assert words in trainer, words


def _section(built: str, anchor: str) -> str:
    """The HTML of one reference entry: from its heading to the next heading of
    the same or a higher level (a class's section holds its members)."""
    start = built.rindex("<h", 0, built.index(f'id="{anchor}"'))
    level = int(built[start + 2])
    ends = re.compile("|".join(f"<h{n}[ >]" for n in range(1, level + 1)))
    end = ends.search(built, start + 1)
    return built[start : end.start() if end else len(built)]


def _visible(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _own_public_members(cls: type) -> list[str]:
    """The public names of ``dir(cls)`` that jaxfit defines (inherited from a
    jaxfit base or not); ``object``'s and the builtins' are Python's to document."""
    defined = (
        next(k for k in cls.__mro__ if name in vars(k)).__module__.split(".")[0]
        for name in dir(cls)
    )
    return [
        name
        for name, where in zip(dir(cls), defined)
        if not name.startswith("_") and where == "jaxfit"
    ]


def _is_public_class(cls: type) -> bool:
    """Whether a class is reachable under a public name (a jaxfit class: exported
    by a public module)."""
    if cls.__name__.startswith("_"):
        return False
    if not cls.__module__.startswith("jaxfit."):
        return not any(p.startswith("_") for p in cls.__module__.split("."))
    modules = map(importlib.import_module, PUBLIC_MODULES)
    return any(getattr(module, cls.__name__, None) is cls for module in modules)


def _reference_classes():
    """``(module name, class name, class)`` of every public class."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if inspect.isclass(obj := getattr(module, name)):
                yield module_name, name, obj


def _page(site: pathlib.Path, module_name: str) -> str:
    page = "jaxfit" if module_name == "jaxfit" else module_name.split(".")[1]
    return (site / "api" / page / "index.html").read_text("utf-8")


@one_device_pass
def test_every_public_member_of_trainer_and_the_callbacks_has_an_anchor(site):
    # read from the classes now, so members added later are checked too; the
    # inherited ones (save, restore, load, compile, params, state, the callback
    # hooks a subclass overrides without a docstring) included
    import jaxfit
    import jaxfit.callbacks

    classes = [("jaxfit", "Trainer", jaxfit.Trainer)] + [
        ("jaxfit.callbacks", name, getattr(jaxfit.callbacks, name))
        for name in jaxfit.callbacks.__all__
        if inspect.isclass(getattr(jaxfit.callbacks, name))
    ]
    trainer_members = _own_public_members(jaxfit.Trainer)
    for name in ("save", "restore", "load", "compile", "params", "state", "fit"):
        assert name in trainer_members, name  # what the check below covers
    missing = [
        f"{module_name}.{name}.{member}"
        for module_name, name, cls in classes
        for member in _own_public_members(cls)
        if f'id="{module_name}.{name}.{member}"' not in _page(site, module_name)
    ]
    assert not missing, "members without a reference entry:\n" + "\n".join(missing)


@one_device_pass
def test_the_reference_shows_only_public_bases(site):
    # "Bases:" names a class's public bases, in order, and no implementation base
    # (Trainer's, in jaxfit._src, are left out; its members are still there)
    for module_name, name, cls in _reference_classes():
        section = _section(_page(site, module_name), f"{module_name}.{name}")
        head = section[: re.search(r"<h\d[ >]|$", section[1:]).start() + 1]
        bases = re.search(r'<p class="doc doc-class-bases">(.*?)</p>', head, re.S)
        shown = re.findall(r"\w+", _visible(bases.group(1))) if bases else []
        # as written in the class statement (a NamedTuple's, not tuple); an
        # implicit object is not listed
        written = getattr(cls, "__orig_bases__", cls.__bases__)
        expected = [
            b.__name__ for b in written if b is not object and _is_public_class(b)
        ]
        assert shown == (["Bases"] + expected if expected else []), (name, shown)
    trainer = _section(_page(site, "jaxfit"), "jaxfit.Trainer")
    assert "jaxfit._src" not in _visible(trainer)
    assert "doc-class-bases" not in trainer


@one_device_pass
def test_signatures_are_formatted_one_parameter_a_line(site):
    import jaxfit

    trainer = _section(_page(site, "jaxfit"), "jaxfit.Trainer")
    for member, call in (
        ("Trainer", jaxfit.Trainer),
        ("Trainer.fit", jaxfit.Trainer.fit),
    ):
        entry = _section(trainer, f"jaxfit.{member}")
        block = re.search(
            r'<div class="doc-signature highlight">(.*?)</div>', entry, re.S
        )
        lines = _visible(block.group(1)).strip().splitlines()
        # ruff's layout at line_length 88: "name(", one parameter a line, ")"
        assert lines[0] == f"{member.split('.')[-1]}(", lines[:2]
        params = [p for p in inspect.signature(call).parameters if p != "self"]
        starts = [line.strip().split(":")[0].split(" ")[0] for line in lines[1:-1]]
        assert [s for s in starts if s not in ("*,", "/,")] == params
        assert all(len(line) <= 88 for line in lines), max(lines, key=len)
    # no private name in any of Trainer's signatures (defaults such as compile's
    # "left out" sentinel are shown as ...)
    signatures = re.findall(
        r'<div class="doc-signature highlight">(.*?)</div>', trainer, re.S
    )
    private = {
        m for sig in signatures for m in re.findall(r"(?<![\w.])_\w+", _visible(sig))
    }
    assert not private, private
    # annotations link to their entries (signature_crossrefs)
    assert 'href="#jaxfit.History"' in _section(trainer, "jaxfit.Trainer.fit")


@one_device_pass
def test_the_notebook_page_renders_its_cells(site):
    text = _text(site / "notebooks" / "quickstart" / "index.html")
    assert "jaxfit.Trainer" in text and "history" in text
    built = (site / "notebooks" / "quickstart" / "index.html").read_text("utf-8")
    assert "<img" in built and "data:image/png" in built  # the stored plot
    assert "batches seen" in text  # the stored numbers


@one_device_pass
def test_the_performance_page_quotes_the_measured_results(site):
    text = _text(site / "guides" / "performance" / "index.html")
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text("utf-8")
    verdict = re.search(r"\*\*verdict tiny\*\*: ([^\n]+)", results).group(1)
    assert " ".join(verdict.split()[:3]) in text


def test_every_public_name_has_a_reference_entry():
    entries = "".join(p.read_text("utf-8") for p in (DOCS / "api").glob("*.md"))
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if inspect.ismodule(getattr(module, name)):
                continue
            # the name itself, or (a function wrapped at the public module, which
            # griffe reads as an attribute) its function under the public anchor
            assert (
                f"::: {module_name}.{name}\n" in entries
                or f"[](){{#{module_name}.{name}}}\n:::" in entries
            ), f"{module_name}.{name}"


# -- the examples run -------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    code = "".join(c for c, skipped in blocks if not skipped)
    for marker, module in NEEDS.items():
        if marker in code:
            pytest.importorskip(module, reason=f"the page's examples need {module}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for i, (block, skipped) in enumerate(blocks):
        if not skipped:
            _run(block, namespace, tmp_path, f"docs/{page}, block {i + 1}")


def test_skip_markers_are_rare():
    skipped = [
        (page, code) for page in PAGES for code, s in python_blocks(DOCS / page) if s
    ]
    assert len(skipped) <= 3, skipped


# -- what the pages promise, checked as strongly as README's tests did -------------


def test_the_getting_started_quickstart_is_the_readmes():
    readme = re.findall(
        r"```python\n(.*?)```", (ROOT / "README.md").read_text("utf-8"), re.S
    )
    assert python_blocks(DOCS / "getting-started.md")[0][0] == readme[0]


def test_streaming_callback_example_runs():
    import queue

    import optax
    from conftest import linear_apply, linear_params, regression_data

    import jaxfit

    namespace: dict = {}
    exec(
        compile(
            _block("guides/callbacks.md", "class StreamLogs"), "callbacks.md", "exec"
        ),
        namespace,
    )
    sink: queue.Queue = queue.Queue()
    x, y = regression_data(n=12)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )
    trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        yield_every="batch",
        verbose=0,
        callbacks=[namespace["StreamLogs"](sink)],
    )
    items = [sink.get_nowait() for _ in range(sink.qsize())]
    assert [(e, b) for e, b, _ in items] == [(e, b) for e in range(2) for b in range(3)]
    assert all("loss" in logs for _, _, logs in items)


def test_checkpoint_example_runs(tmp_path, capsys):
    pytest.importorskip("orbax.checkpoint", reason="checkpoints are the ckpt extra")
    example = _block(
        "guides/checkpoints.md", 'BackupAndRestore("/tmp/jaxfit-demo/backup"'
    )
    _run(example, {}, tmp_path, "checkpoints.md")
    epochs, best_step = map(int, capsys.readouterr().out.split())
    assert epochs == 5 and 4 <= best_step <= 20
    demo = tmp_path / "jaxfit-demo"
    # the backup is gone; .jaxfit marks the directory BackupAndRestore made
    assert sorted(p.name for p in demo.iterdir()) == [".jaxfit", "best", "final"]


def test_resume_example_resumes_exactly(tmp_path, capsys):
    pytest.importorskip("orbax.checkpoint", reason="checkpoints are the ckpt extra")
    _run(
        _block("guides/checkpoints.md", "simulated preemption"),
        {},
        tmp_path,
        "checkpoints.md",
    )
    assert capsys.readouterr().out.split("\n")[0] == "[0, 1, 2, 3, 4, 5] True"


def test_flax_example_runs():
    pytest.importorskip("flax", reason="from_flax needs the flax extra")
    namespace: dict = {}
    exec(
        compile(
            _block("guides/modules.md", "jaxfit.from_flax(Net()"), "modules.md", "exec"
        ),
        namespace,
    )
    assert namespace["history"].epoch == [0, 1, 2]
    assert "batch_stats" in namespace["trainer"].state.model_state


def test_annotated_config_is_the_shipped_one():
    text = (DOCS / "guides" / "runner.md").read_text("utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    shipped = next(
        p
        for p in (
            ROOT / "jaxfit" / "configs" / "digits_mlp.yaml",
            ROOT / "configs" / "digits_mlp.yaml",
        )
        if p.is_file()
    )
    assert shipped.read_text("utf-8") in blocks


def test_the_errors_page_shows_what_jaxfit_says(capsys):
    text = (DOCS / "guides" / "errors.md").read_text("utf-8")
    shown = re.search(
        r"```text\n(.*?)```", text[text.index("## An example") :], re.S
    ).group(1)
    exec(compile(_block("guides/errors.md", "labels[7] = 5"), "errors.md", "exec"), {})
    message, steps = capsys.readouterr().out.strip().rsplit("\n", 1)
    assert " ".join(message.split()) == " ".join(shown.split()[:-1]) and steps == "0"
    assert shown.split()[-1] == "0"
