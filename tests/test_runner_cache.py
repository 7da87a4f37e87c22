"""JAX's persistent compilation cache in ``jaxfit run``: a run writes its compiled
programs into ``<workdir>/.jax_cache`` (or the configured directory), a second run
of the same config in a fresh process loads them instead of compiling, ``false``
writes nothing, JAX's settings are as before once ``run`` returns, and a bad value
is a one-line config error naming the key.

Cache traffic is counted with ``jax.monitoring``: JAX records
``/jax/compilation_cache/cache_hits`` for each program loaded from the cache and
``/jax/compilation_cache/cache_misses`` for each program compiled and written to it
(``jax/_src/compiler.py``, ``compilation_cache.py``);
``/jax/core/compile/backend_compile_duration`` times every compile request, a
cache hit included.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from runner_helpers import CACHE, run_dirs, tiny_config
from runner_helpers import run_cli as _cli
from runner_helpers import write_config as _write

import jaxfit

TESTS = pathlib.Path(__file__).resolve().parent
# yield_every: epoch: the same blocks, whatever the clock, so the same programs
CONFIG = tiny_config(
    "  epochs: 2\n  batch_size: 16\n  yield_every: epoch\n", "backup: false\n"
)
SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)
HITS = "/jax/compilation_cache/cache_hits"
WRITES = "/jax/compilation_cache/cache_misses"  # compiled, then written
COMPILE = "/jax/core/compile/backend_compile_duration"

# ``jaxfit run ARGV...`` in this (fresh) process; prints the cache events as JSON.
WORKER = f"""
import json, sys
import jax
counts = {{"hits": 0, "writes": 0, "requests": 0}}
def on_event(event, **kwargs):
    if event == {HITS!r}:
        counts["hits"] += 1
    elif event == {WRITES!r}:
        counts["writes"] += 1
def on_duration(event, duration, **kwargs):
    if event == {COMPILE!r}:
        counts["requests"] += 1
jax.monitoring.register_event_listener(on_event)
jax.monitoring.register_event_duration_secs_listener(on_duration)
from jaxfit import cli
code = cli.main(sys.argv[1:])
print("COUNTS " + json.dumps(counts))
sys.exit(code)
"""


def _entries(path):
    """The programs in a cache directory (JAX names them ``<key>-cache``)."""
    path = pathlib.Path(path)
    return (
        sorted(p.name for p in path.iterdir() if p.name.endswith("-cache"))
        if (path.is_dir())
        else []
    )


def _settings():
    return {name: getattr(jax.config, name) for name in SETTINGS}


def _fresh_run(*argv):
    """``jaxfit run ARGV...`` in a new process: its cache event counts."""
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    result = subprocess.run(
        [sys.executable, "-c", WORKER, "run", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [
        line for line in result.stdout.splitlines() if line.startswith("COUNTS ")
    ]
    return json.loads(line.removeprefix("COUNTS "))


@pytest.fixture
def cache_events():
    """Counts this process's cache hits and writes while the test runs."""
    counts = {"hits": 0, "writes": 0}

    def on_event(event, **kwargs):
        del kwargs
        if event == HITS:
            counts["hits"] += 1
        elif event == WRITES:
            counts["writes"] += 1

    jax.monitoring.register_event_listener(on_event)
    yield counts
    jax.monitoring.unregister_event_listener(on_event)


def test_a_second_run_in_a_fresh_process_loads_its_programs_from_the_cache(tmp_path):
    config = _write(tmp_path, CONFIG)
    workdir = tmp_path / "runs"
    cold = _fresh_run(config, "--workdir", str(workdir))
    written = _entries(workdir / CACHE)
    assert cold["hits"] == 0 and cold["writes"] > 0
    assert len(written) == cold["writes"]  # every program it compiled, small or not
    warm = _fresh_run(config, "--workdir", str(workdir))
    assert warm["hits"] == cold["writes"] and warm["writes"] == 0  # none compiled
    assert warm["requests"] - warm["hits"] < cold["requests"]
    assert _entries(workdir / CACHE) == written
    assert len(run_dirs(workdir)) == 2


def test_jax_settings_are_restored_after_a_run(tmp_path):
    # The process has a cache of its own (a user's): the run's programs go to the
    # run's cache, and after the run the user's cache is the one used again.
    mine = tmp_path / "mine"
    saved = _settings()
    try:
        jax.config.update("jax_compilation_cache_dir", str(mine))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax_cache.reset_cache()
        jax.jit(lambda x: x * 3.0 + 1.0)(np.ones(7, np.float32))
        before, settings = _entries(mine), _settings()
        assert len(before) == 1
        jaxfit.run(_write(tmp_path, CONFIG), str(tmp_path / "runs"))
        assert _settings() == settings
        assert _entries(mine) == before
        assert _entries(tmp_path / "runs" / CACHE)
        jax.jit(lambda x: x * 5.0 - 2.0)(np.ones(7, np.float32))
        assert len(_entries(mine)) == 2
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()
    assert _settings() == saved


def test_settings_are_restored_and_nothing_is_left_when_a_config_is_refused(
    tmp_path, capsys
):
    # refused by the fit call's own checks, after the model and the run directory
    # were made (and some programs compiled)
    saved = _settings()
    config = _write(tmp_path, CONFIG.replace("linear_model", "wide_model"))
    code, _, err = _cli(capsys, "run", config, "--workdir", str(tmp_path / "runs"))
    assert code == 2 and "model.name:" in err
    assert not (tmp_path / "runs").exists()
    assert _settings() == saved


def test_compilation_cache_false_writes_nothing(tmp_path, cache_events):
    saved = _settings()
    workdir = tmp_path / "runs"
    result = jaxfit.run(
        _write(tmp_path, CONFIG + "compilation_cache: false\n"), str(workdir)
    )
    assert result.history.epoch == [0, 1]
    assert cache_events == {"hits": 0, "writes": 0}
    assert run_dirs(workdir) == sorted(workdir.iterdir())  # no cache directory
    assert _settings() == saved


def test_the_directory_comes_from_the_config_or_the_command_line(
    tmp_path, capsys, cache_events
):
    # the config's relative path is in the workdir; --compilation-cache wins (a
    # relative path there is in the current directory, as --workdir's)
    config = _write(tmp_path, CONFIG + "compilation_cache: cache\n")
    workdir = tmp_path / "runs"
    assert _cli(capsys, "run", config, "--workdir", str(workdir))[0] == 0
    assert _entries(workdir / "cache") and not (workdir / CACHE).exists()
    other = tmp_path / "other"
    assert (
        _cli(
            capsys,
            "run",
            config,
            "--workdir",
            str(workdir),
            "--compilation-cache",
            str(other),
        )[0]
        == 0
    )
    assert _entries(other)
    writes = cache_events["writes"]
    assert (
        _cli(
            capsys,
            "run",
            config,
            "--workdir",
            str(tmp_path / "off"),
            "--compilation-cache",
            "off",
        )[0]
        == 0
    )
    assert cache_events["writes"] == writes
    assert not (tmp_path / "off" / CACHE).exists()
    import yaml

    (run_dir, *_) = sorted(workdir.glob("tiny-*"))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["compilation_cache"] == "cache"


@pytest.mark.parametrize(
    "line,message",
    [
        (
            "compilation_cache: 3",
            r"compilation_cache: expected one of False or a string, got 3 \(int\)",
        ),
        (
            "compilation_cache: ''",
            r"compilation_cache: expected a directory or false \(off\), got \"\" \(str\)",
        ),
        (
            "compilation_cache: true",
            r"compilation_cache: expected one of False or a string, got True \(bool\)",
        ),
    ],
)
def test_a_bad_value_is_a_one_line_config_error_naming_the_key(
    tmp_path, capsys, line, message
):
    import re

    config = _write(tmp_path, CONFIG + line + "\n")
    workdir = tmp_path / "runs"
    for command in ("validate", "run"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == "", (out, err)
        (text,) = err.strip().splitlines()
        assert re.search(message, text), text
        assert text.endswith(f"({config}, line 14)"), text
    assert not workdir.exists()


def test_a_directory_that_cannot_be_made_is_a_config_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    config = _write(tmp_path, CONFIG + f"compilation_cache: {blocker}\n")
    workdir = tmp_path / "runs"
    code, _, err = _cli(capsys, "run", config, "--workdir", str(workdir))
    assert code == 2
    (text,) = err.strip().splitlines()
    assert text.startswith(
        f"jaxfit run: compilation_cache: cannot create the directory '{blocker}'"
    )
    assert text.endswith(f"({config}, line 14)"), text
    code, _, err = _cli(
        capsys,
        "run",
        _write(tmp_path, CONFIG, "plain.yaml"),
        "--workdir",
        str(workdir),
        "--compilation-cache",
        str(blocker / "sub"),
    )
    assert code == 2 and "compilation_cache: cannot create" in err
    assert ", line " not in err  # the command line's value, not the file's
    assert not workdir.exists()
    with pytest.raises(SystemExit):  # argparse: exit status 2
        _cli(capsys, "run", config, "--compilation-cache", "")
