"""Bounded config input (issue 22): whatever a config file holds, `jaxfit validate`
and `jaxfit run` answer with the same one-line error naming the file and the line,
before anything is created, and fast: alias bombs, recursive aliases, deep nesting,
duplicate keys, bytes that are not UTF-8, files that are not files; run names that
are not one path component, a seed no PRNG takes, a layer too large for memory.
"""

import os
import re
import time
import tracemalloc

import pytest
from runner_helpers import run_cli as _cli
from runner_helpers import tiny_config
from runner_helpers import write_config as _write

import jaxfit

BASE = tiny_config("  epochs: 1\n  batch_size: 16\n", "backup: false\n")
# BASE's lines: 1 name, 2 model:, 3 name, 4 data:, 5 name, 6 optimizer:, 7 name,
# 8 learning_rate, 9 fit:, 10 epochs, 11 batch_size, 12 backup

MLP = BASE.replace(
    "  name: runner_helpers:linear_model\n", "  name: mlp\n  args:\n    hidden: [8]\n"
)  # model.args.hidden is line 5


def _laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level a list of ``width`` aliases of the last."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


BOMB = (
    BASE.replace("backup: false\n", "")
    + "environment:\n"
    + "".join(f"  {line}\n" for line in _laughs(9).splitlines())
)
assert len(BOMB.encode()) < 700  # a few hundred bytes; 9**9 strings expanded


# (name, the config's bytes, --set overrides, the message (a regex), the line the
# error points at, or the --set it names)
CASES = [
    (
        "alias bomb",
        BOMB.encode(),
        [],
        r"environment\.l\d\[\d\]: expected a config of at most 100,000 values with "
        r"its aliases expanded, got more \(an alias bomb\?\)",
        18,  # l5, the level that passes 100,000
    ),
    (
        "recursive alias",
        (BASE + "environment: &e {again: *e}\n").encode(),
        [],
        r"environment\.again: the alias \*e is inside the value it names \(a "
        r"recursive alias\)",
        13,
    ),
    (
        "recursive list",
        BASE.replace("  epochs: 1\n", "  epochs: &x [1, *x]\n").encode(),
        [],
        r"fit\.epochs\[1\]: the alias \*x is inside the value it names",
        10,
    ),
    (
        "too many aliases",
        (
            BASE + "environment:\n  a: &a 1\n  b: [" + ", ".join(["*a"] * 101) + "]\n"
        ).encode(),
        [],
        r"environment\.b\[100\]: expected at most 100 alias uses \(\*name\) in a "
        r"config, got more",
        15,
    ),
    (
        "deep nesting",
        (BASE + "environment: " + "[" * 70 + "]" * 70 + "\n").encode(),
        [],
        r"environment(\[0\])+.*: expected lists and mappings nested at most 64 deep",
        13,
    ),
    (
        "duplicate key",
        BASE.replace("  batch_size: 16\n", "  batch_size: 16\n  epochs: 3\n").encode(),
        [],
        r"^jaxfit \w+: fit\.epochs: duplicate key, first at line 10; a key may "
        r"appear once in a mapping",
        12,
    ),
    (
        "duplicate section",
        (BASE + "fit:\n  epochs: 2\n").encode(),
        [],
        r"fit: duplicate key, first at line 9",
        13,
    ),
    (
        "not UTF-8",
        BASE.replace("name: tiny", "name: caf\xe9").encode("latin-1"),
        [],
        r"config: expected UTF-8 text, got the byte 0xe9 at offset 9 \(line 1, "
        r"column 10\), which is not UTF-8; save the file as UTF-8",
        1,
    ),
    (
        "UTF-16",
        BASE.encode("utf-16"),
        [],
        r"config: expected UTF-8 text, got the byte 0xff at offset 0 \(line 1",
        1,
    ),
    (
        "a NUL byte",
        BASE.replace("  epochs: 1", "  epochs: 1\x00").encode(),
        [],
        r"config: not valid YAML: the character #x0000 is not allowed",
        10,
    ),
    (
        "invalid YAML",
        BASE.replace("  epochs: 1", "  epochs: 1: 2").encode(),
        [],
        r"config: not valid YAML: mapping values are not allowed here",
        10,
    ),
    (
        "an impossible date",
        (BASE + "environment: {created: 2024-13-45}\n").encode(),
        [],
        r"config: cannot read the value '2024-13-45': month must be in 1\.\.12",
        13,
    ),
    # --set values are read by the same bounded reader
    (
        "duplicate key in --set",
        BASE.encode(),
        ["environment={a: 1, a: 2}"],
        r"a: duplicate key, first at line 1",
        "--set environment={a: 1, a: 2}",
    ),
    # run names: one path component (paths.component), checked by the schema
    (
        "name escaping the workdir",
        BASE.replace("name: tiny", "name: ../../escaped").encode(),
        [],
        r"^jaxfit \w+: name: expected a name that is one path component .* but it "
        r"starts with '\.\.', got '\.\./\.\./escaped' \(str\)",
        1,
    ),
    (
        "absolute name",
        BASE.replace("name: tiny", "name: /tmp/elsewhere").encode(),
        [],
        r"name: expected a name that is one path component .* holds a path separator",
        1,
    ),
    (
        "name with NUL",
        BASE.replace("name: tiny", 'name: "ti\\0ny"').encode(),
        [],
        r"name: .* holds a control character, got 'ti\\x00ny' \(str\)",
        1,
    ),
    (
        "name with an escape sequence",
        BASE.replace("name: tiny", 'name: "\\e[31mred"').encode(),
        [],
        r"name: .* holds a control character, got '\\x1b\[31mred' \(str\)",
        1,
    ),
    (
        "name of 300 characters",
        BASE.replace("name: tiny", "name: " + "n" * 300).encode(),
        [],
        r"name: .* it is 300 characters long",
        1,
    ),
    (
        "empty name",
        BASE.replace("name: tiny", 'name: ""').encode(),
        [],
        r"name: .* but it is empty",
        1,
    ),
    (
        "name from --set",
        BASE.encode(),
        ["name=a/b"],
        r"name: .* holds a path separator",
        "--set name=a/b",
    ),
    # values the runner used to fail on raw, or blame on another key
    (
        "huge seed",
        (BASE + f"seed: {2**70}\n").encode(),
        [],
        r"^jaxfit \w+: seed: expected an integer in \[0, 2\*\*32\) .*, got "
        rf"{2**70} \(int\)",
        13,
    ),
    (
        "a seed past 2**32",
        (BASE + f"seed: {2**32}\n").encode(),
        [],
        r"^jaxfit \w+: seed: expected an integer in \[0, 2\*\*32\)",
        13,
    ),
    (
        "oversized dataset",
        BASE.replace(
            "runner_helpers:tiny_data",
            f"synthetic_regression\n  args: {{num_samples: {10**12}}}",
        ).encode(),
        [],
        r"^jaxfit \w+: data\.args\.num_samples: expected a dataset that fits in the "
        rf"host's memory \(.*\), got {10**12} \(int\)",
        6,
    ),
    (
        "nothing to train",
        BASE.replace("  epochs: 1\n", "  epochs: 1\n  initial_epoch: 1\n").encode(),
        [],
        r"^jaxfit \w+: fit\.initial_epoch: expected an epoch before fit\.epochs",
        11,
    ),
    (
        "oversized hidden layer",
        MLP.replace("[8]", f"[{10**12}]").encode(),
        [],
        r"^jaxfit \w+: model\.args\.hidden\[0\]: expected a model whose parameters "
        rf"fit in .*, got {10**12} \(int\): Dense_0/kernel alone is \(3, {10**12}\)",
        5,
    ),
]


def _write_bytes(tmp_path, data: bytes) -> str:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "data,overrides,message,where",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_one_line_naming_file_and_line_before_anything(
    tmp_path, capsys, data, overrides, message, where
):
    if "hidden" in message:
        pytest.importorskip("flax", reason="the built-in models are Flax modules")
    config = _write_bytes(tmp_path, data)
    workdir = tmp_path / "runs"
    suffix = (
        f"({config}, line {where})" if isinstance(where, int) else f"(from {where})"
    )
    said = {}
    for command in ("validate", "run"):
        argv = [command, config] + (
            ["--workdir", str(workdir)] if command == "run" else []
        )
        for item in overrides:
            argv += ["--set", item]
        started = time.perf_counter()
        code, out, err = _cli(capsys, *argv)
        elapsed = time.perf_counter() - started
        assert code == 2 and out == "", (out, err)
        (line,) = err.strip().splitlines()  # one line
        assert line.startswith(f"jaxfit {command}: "), line
        assert re.search(message, line), line
        assert line.endswith(suffix), line
        assert elapsed < 30, elapsed  # never a hang (the bomb: see below)
        said[command] = line.removeprefix(f"jaxfit {command}: ")
    assert said["validate"] == said["run"]  # validate says what run would say
    assert not workdir.exists()  # nothing created


def test_the_alias_bomb_fails_at_once_in_little_memory(tmp_path, capsys):
    # 9 levels of 9 aliases: 387 million strings once expanded. A 280-byte bomb
    # took 44 s and 965 MB before the reader was bounded.
    config = _write_bytes(tmp_path, BOMB.encode())
    for command in ("validate", "run"):
        tracemalloc.start()
        started = time.perf_counter()
        code, _, err = _cli(capsys, command, config)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert code == 2 and "an alias bomb" in err, err
        assert elapsed < 0.5, elapsed
        assert peak < 20 * 2**20, peak
    bigger = _laughs(40, width=2)  # 2**40 values: the bound counts, never expands
    started = time.perf_counter()
    code, _, err = _cli(capsys, "validate", _write(tmp_path, BASE + bigger, "b.yaml"))
    assert code == 2 and "an alias bomb" in err, err
    assert time.perf_counter() - started < 0.5


def test_aliases_and_merges_within_the_bounds_still_work(tmp_path, capsys):
    # Anchors, aliases and a merge key overriding a merged key are not duplicates.
    text = BASE.replace(
        "fit:\n  epochs: 1\n  batch_size: 16\n",
        "defaults: &fit {epochs: 1, batch_size: 8}\n"
        "fit:\n  <<: *fit\n  batch_size: 16\n",
    )
    # `defaults` is no config key: refused by its key and line, the file read
    code, _, err = _cli(capsys, "validate", _write(tmp_path, text))
    assert code == 2 and "defaults: unknown key" in err and "line 9" in err, err
    merged = text.replace("defaults: &fit", "environment: &fit")
    result = jaxfit.run(_write(tmp_path, merged), str(tmp_path / "runs"))
    assert result.history.params["batch_size"] == 16
    assert result.history.params["epochs"] == 1


@pytest.mark.parametrize("kind", ["directory", "fifo", "too large", "missing"])
def test_a_config_that_is_not_a_readable_file_is_refused_at_once(
    tmp_path, capsys, kind
):
    path = tmp_path / "config.yaml"
    if kind == "directory":
        path.mkdir()
        expected = "a directory"
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)  # reading it would wait for a writer forever
        expected = "not a regular file"
    elif kind == "too large":
        path.write_text(BASE + "#" * (2**20), encoding="utf-8")
        expected = "at most 1,048,576 bytes"
    else:
        expected = "No such file"
    for command in ("validate", "run"):
        started = time.perf_counter()
        code, out, err = _cli(capsys, command, str(path), "--set", "seed=1")
        assert code == 2 and not out, err
        (line,) = err.strip().splitlines()
        assert expected in line and str(path) in line, line
        assert time.perf_counter() - started < 5
    assert not (tmp_path / "runs").exists()
