"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel, and
the wheel, installed into a fresh virtual environment (its dependencies from the
package index, nothing from this checkout or this environment), runs the README's
quickstart and the ``jaxfit`` command on the configs it ships.

The distribution is ``jaxfit-trainer`` (``jaxfit`` on PyPI is another project); the
import name and the command are ``jaxfit``. The shipped configs' one copy is the
repository's top-level ``configs/``: a checkout finds them there, the wheel carries
them as ``jaxfit/configs/``.

The wheel test installs jax and the ``run`` extra into a new environment: about a
minute with a warm pip cache, a few more on a cold one. Also here: the shipped
configs by name and ``jaxfit configs`` in this process (fast).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest
from conftest import one_device_pass
from runner_helpers import run_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"  # the one copy: the wheel carries it as jaxfit/configs
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))
DIST = "jaxfit_trainer"  # the distribution jaxfit-trainer, in file names
VERSION = re.search(
    r'^__version__ = "([^"]+)"$',
    (ROOT / "jaxfit" / "__init__.py").read_text(encoding="utf-8"),
    re.M,
).group(1)


# --- the shipped configs, in this process ------------------------------------------


def test_configs_lists_the_shipped_ones(capsys):
    code, out, err = run_cli(capsys, "configs")
    assert code == 0 and not err
    assert SHIPPED == [
        "digits_cnn.yaml",
        "digits_mlp.yaml",
        "digits_population.yaml",
        "digits_sweep.yaml",
        "regression.yaml",
    ]
    # a checkout (or an editable install) reads the top-level configs/, the one copy
    assert out.startswith(f"shipped configs ({CONFIGS}):\n"), out
    assert not (ROOT / "jaxfit" / "configs").exists()
    for name in SHIPPED:
        assert re.search(rf"^  {name[:-5]} +\S", out, re.M), out  # name and summary
    assert "jaxfit run NAME" in out and "jaxfit configs DIR" in out


def test_configs_copies_into_dir_and_never_overwrites(capsys, tmp_path):
    target = tmp_path / "mine"
    code, out, err = run_cli(capsys, "configs", str(target))
    assert code == 0 and not err
    assert sorted(p.name for p in target.iterdir() if p.name != ".jaxfit") == SHIPPED
    for name in SHIPPED:
        assert (target / name).read_bytes() == (CONFIGS / name).read_bytes()
        assert f"  {name}" in out
    (target / "digits_mlp.yaml").write_text("edited", encoding="utf-8")
    code, out, err = run_cli(capsys, "configs", str(target))
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("jaxfit configs: DIR: ")
    assert "digits_mlp.yaml" in err and "nothing was copied" in err
    assert (target / "digits_mlp.yaml").read_text(encoding="utf-8") == "edited"
    code, _, err = run_cli(capsys, "configs", str(target / "digits_mlp.yaml"))
    assert code == 2 and "is a file, not a directory" in err


def test_a_config_by_name(capsys, tmp_path, monkeypatch):
    pytest.importorskip("flax", reason="the built-in models are Flax modules")
    monkeypatch.chdir(tmp_path)
    for name in ("regression", "regression.yaml"):
        code, out, err = run_cli(capsys, "validate", name)
        assert code == 0, err
        assert out.startswith(f"{name}: valid (synthetic_regression: model mlp")
    code, out, err = run_cli(capsys, "validate", "regresion")
    assert code == 2 and not out and err.count("\n") == 1
    assert err.startswith(
        "jaxfit validate: config: no file 'regresion' and no "
        "shipped config of that name (shipped: digits_cnn, "
    )
    # a file in the current directory comes before a shipped config of that name
    (tmp_path / "regression.yaml").write_text("name: [", encoding="utf-8")
    code, _, err = run_cli(capsys, "validate", "regression.yaml")
    assert code == 2 and "not valid YAML" in err and "(regression.yaml, line 1)" in err


# --- the built package --------------------------------------------------------------


def archive_bytes(wheel: pathlib.Path, name: str) -> bytes:
    """One file of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name)


def _run(*argv, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``(wheel, sdist)`` built by ``python -m build`` (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT, timeout=600)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


@one_device_pass
def test_wheel_holds_what_an_installed_user_needs(dists):
    wheel, _ = dists
    assert wheel.name == f"{DIST}-{VERSION}-py3-none-any.whl"
    # the getting-started guide's wheel line names this file
    guide = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert f'pip install "dist/{wheel.name}[run]"' in guide
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{DIST}-{VERSION}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "jaxfit/py.typed" in names
    assert {f"jaxfit/configs/{name}" for name in SHIPPED} <= names
    for name in SHIPPED:  # the top-level configs/, byte for byte
        assert (
            archive_bytes(wheel, f"jaxfit/configs/{name}")
            == (CONFIGS / name).read_bytes()
        )
    assert f"{info}/licenses/LICENSE" in names
    assert {"jaxfit/__init__.py", "jaxfit/cli.py", "jaxfit/_src/app/cli.py"} <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert "\nName: jaxfit-trainer\n" in metadata
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata
    assert "\nClassifier: Typing :: Typed\n" in metadata
    assert "\nProject-URL: Changelog, " in metadata
    assert "jaxfit = jaxfit.cli:main" in entry_points


@one_device_pass
def test_sdist_holds_license_changelog_and_readme(dists):
    _, sdist = dists
    top = f"{DIST}-{VERSION}"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for name in (
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "jaxfit/py.typed",
        *(f"configs/{c}" for c in SHIPPED),
    ):
        assert f"{top}/{name}" in names, name
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert (
        "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    )
    assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """``(bin directory, a work directory, environment)``: the wheel with its ``run``
    extra in a fresh virtual environment (no system site-packages)."""
    wheel, _ = dists
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", venv, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run(
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "-q",
        f"{wheel}[run]",
        timeout=1500,
        env=env,
    )
    work = base / "work"  # not the checkout: `import jaxfit` must find the wheel's,
    work.mkdir()  # and no configs/ here: the shipped ones come from the package
    return bin_dir, work, env


@one_device_pass
def test_installed_wheel_runs_the_quickstart_and_the_command(installed):
    bin_dir, work, env = installed
    python, jaxfit = bin_dir / "python", bin_dir / "jaxfit"
    kwargs = {"cwd": work, "env": env, "timeout": 600}

    where = _run(
        python,
        "-c",
        "import jaxfit; print(jaxfit.__file__, jaxfit.__version__)",
        **kwargs,
    ).stdout.split()
    assert pathlib.Path(where[0]).is_relative_to(bin_dir.parent), where
    assert where[1] == VERSION

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    (work / "quickstart.py").write_text(quickstart, encoding="utf-8")
    assert "19" in _run(python, "quickstart.py", **kwargs).stdout

    help_text = _run(jaxfit, "--help", **kwargs).stdout
    for command in ("run", "validate", "show", "configs"):
        assert command in help_text
    assert _run(jaxfit, "--version", **kwargs).stdout.strip() == f"jaxfit {VERSION}"

    listed = _run(jaxfit, "configs", **kwargs).stdout
    assert str(bin_dir.parent) in listed  # the configs inside the installed package
    assert re.search(r"^shipped configs \(.*[/\\]jaxfit[/\\]configs\):$", listed, re.M)
    for name in SHIPPED:
        assert f"  {name[:-5]} " in listed
    _run(jaxfit, "configs", "mine", **kwargs)
    assert (
        sorted(p.name for p in (work / "mine").iterdir() if p.name != ".jaxfit")
        == SHIPPED
    )

    assert not (work / "configs").exists()  # by name, from the package alone
    out = _run(jaxfit, "validate", "digits_mlp", **kwargs).stdout
    assert out.startswith("digits_mlp: valid (digits_mlp: model mlp, data digits")
    out = _run(
        jaxfit,
        "run",
        "digits_mlp",
        "--set",
        "fit.epochs=1",
        "--workdir",
        "runs",
        "--compilation-cache",
        "off",
        **kwargs,
    ).stdout
    (run_dir,) = (work / "runs").iterdir()
    assert "run directory: " in out and run_dir.name in out
    assert {"metrics.json", "history.json", "curves.png", "checkpoint"} <= {
        p.name for p in run_dir.iterdir()
    }

    # the finished run, used afterwards: load_run rebuilds the trainer that trained
    (work / "reload.py").write_text(RELOAD, encoding="utf-8")
    out = _run(python, "reload.py", **kwargs).stdout
    assert "load_run predicts as the trainer that trained: (1797, 10)" in out, out


# run in the installed wheel's environment: a 1-epoch digits_mlp from Python, then
# jaxfit.load_run on its directory predicts what run()'s own trainer predicts, on the
# digits' raw inputs (the run's test split among them)
RELOAD = """\
import numpy as np
from sklearn.datasets import load_digits

import jaxfit

r = jaxfit.run("digits_mlp", "api_runs", overrides=["fit.epochs=1"],
               compilation_cache=False)
t = jaxfit.load_run(r.run_dir)
x = load_digits().data.astype(np.float32)
loaded, trained = np.asarray(t.predict(x)), np.asarray(r.trainer.predict(x))
np.testing.assert_allclose(loaded, trained, rtol=1e-6)
print("load_run predicts as the trainer that trained:", loaded.shape)
"""
