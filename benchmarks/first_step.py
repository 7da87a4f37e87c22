"""Time to the first step of ``jaxfit run``: JAX's compilation cache cold and warm.

    python benchmarks/first_step.py [CONFIG] [--set key.path=value ...] [--repeat N]

Runs ``python -m jaxfit run CONFIG`` (default: the shipped
``configs/digits_mlp.yaml``), each run in a fresh process, in three ways per repeat:
``off`` (``--compilation-cache off``), ``cold`` (a new workdir, so an empty
``<workdir>/.jax_cache``) and ``warm`` (the same config again in cold's workdir,
whose cache cold filled). A first, discarded run warms the disk cache of the Python
libraries. The runner's own defaults are used otherwise.

Each run's config is a copy of CONFIG with one more callback, ``Clock`` below,
which writes wall-clock timestamps: ``on_train_begin`` (every check passed, the
data loaded and the model built), the first ``on_yield`` (the first block of train
steps has run on the device: the *first step*), ``on_epoch_begin``/``on_epoch_end``
of the first epoch; and, from ``jax.monitoring``, the compile requests and cache
hits of the whole process. The table reports, per way (the median over repeats):

- ``to train begin``: from launching the process to ``on_train_begin``;
- ``to first step``: from launching the process to the first step;
- ``first epoch``: ``on_epoch_begin`` to ``on_epoch_end`` of epoch 1 (its compile
  included, and validation's);
- ``total``: from launching the process to its exit (the test evaluation, the
  checkpoint and the plots included);
- ``compiles`` / ``hits``: backend compile requests / those loaded from the cache.

then the ratios cold/warm (how many times sooner warm gets there). Clock adds no
batch hooks (``on_yield`` is one the runner overrides anyway), so the programs
compiled are the same as without it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "digits_mlp.yaml")
WAYS = ("off", "cold", "warm")
COLUMNS = [
    ("to train begin s", "train_begin"),
    ("to first step s", "first_step"),
    ("first epoch s", "first_epoch"),
    ("total s", "total"),
]


# -- in the child: the Clock callback (the config names it first_step:Clock) ------

_COUNTS = {"compiles": 0, "hits": 0}
_STAMPS: dict[str, float] = {}
_PATH: list[str] = []


def _write_stamps() -> None:
    if _PATH:
        with open(_PATH[0], "w", encoding="utf-8") as f:
            json.dump({**_STAMPS, **_COUNTS}, f)


def _listen() -> None:
    """Counts compile requests and cache hits in this process (from the import of
    this module: when the runner checks the config, before anything compiles)."""
    import jax

    def on_event(event, **kwargs):
        del kwargs
        if event == "/jax/compilation_cache/cache_hits":
            _COUNTS["hits"] += 1

    def on_duration(event, duration, **kwargs):
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            _COUNTS["compiles"] += 1

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    atexit.register(_write_stamps)


if __name__ != "__main__":
    _listen()
    import jaxfit

    class Clock(jaxfit.callbacks.Callback):
        """Writes wall-clock timestamps of a run's first step and epoch to ``path``
        (JSON, rewritten at each and at exit)."""

        def __init__(self, path: str):
            super().__init__()
            _PATH[:] = [path]

        def _stamp(self, name: str) -> None:
            if name not in _STAMPS:
                _STAMPS[name] = time.time()
                _write_stamps()

        def on_train_begin(self, logs=None):
            self._stamp("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                self._stamp("epoch_begin")

        def on_yield(self, epoch, batch, logs=None):
            self._stamp("first_step")

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self._stamp("epoch_end")


# -- in the parent --------------------------------------------------------------------


def _config_with_clock(config: str, stamps: str, out: str) -> str:
    """A copy of ``config`` with the Clock callback appended; its path."""
    import yaml

    with open(config, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["callbacks"] = [
        *(raw.get("callbacks") or []),
        {"name": "first_step:Clock", "args": {"path": stamps}},
    ]
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return out


def run_once(
    config: str, workdir: str, sets: list[str], scratch: str, cache: str | None = None
) -> dict[str, float]:
    """One ``jaxfit run`` in a new process: its times (seconds) and counts."""
    stamps = os.path.join(scratch, f"stamps-{time.monotonic_ns()}.json")
    copy = _config_with_clock(config, stamps, stamps.replace(".json", ".yaml"))
    argv = [sys.executable, "-m", "jaxfit", "run", copy, "--workdir", workdir]
    for item in sets:
        argv += ["--set", item]
    if cache is not None:
        argv += ["--compilation-cache", cache]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [HERE, ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    start = time.time()
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    end = time.time()
    if result.returncode != 0:
        raise SystemExit(
            f"jaxfit run failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    with open(stamps, encoding="utf-8") as f:
        seen = json.load(f)
    return {
        "train_begin": seen["train_begin"] - start,
        "first_step": seen["first_step"] - start,
        "first_epoch": seen["epoch_end"] - seen["epoch_begin"],
        "total": end - start,
        "compiles": seen["compiles"],
        "hits": seen["hits"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="passed to jaxfit run",
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    config = os.path.abspath(args.config)
    rows: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as scratch:
        run_once(config, os.path.join(scratch, "warm-up"), args.sets, scratch, "off")
        for i in range(args.repeat):
            workdir = os.path.join(scratch, f"runs-{i}")
            rows["off"].append(
                run_once(
                    config, os.path.join(scratch, f"off-{i}"), args.sets, scratch, "off"
                )
            )
            rows["cold"].append(run_once(config, workdir, args.sets, scratch))
            rows["warm"].append(run_once(config, workdir, args.sets, scratch))
    import jax

    print(
        f"jaxfit run {os.path.relpath(config, ROOT)}"
        f"{''.join(' --set ' + s for s in args.sets)}: median of {args.repeat}, "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__}"
    )
    print()
    print(
        "| cache | "
        + " | ".join(name for name, _ in COLUMNS)
        + " | compiles | cache hits |"
    )
    print("|---" * (len(COLUMNS) + 3) + "|")
    medians = {
        way: {
            key: statistics.median(r[key] for r in rows[way])
            for key in [*(key for _, key in COLUMNS), "compiles", "hits"]
        }
        for way in WAYS
    }
    for way in WAYS:
        m = medians[way]
        print(
            f"| {way} | "
            + " | ".join(f"{m[key]:.2f}" for _, key in COLUMNS)
            + f" | {m['compiles']:.0f} | {m['hits']:.0f} |"
        )
    print(
        "| cold/warm | "
        + " | ".join(
            f"{medians['cold'][key] / medians['warm'][key]:.2f}x" for _, key in COLUMNS
        )
        + " | | |"
    )
    print()
    for way in WAYS:
        print(
            f"{way}: to first step "
            + ", ".join(f"{r['first_step']:.2f}" for r in rows[way])
            + " s"
        )
    ratio = medians["cold"]["first_step"] / medians["warm"]["first_step"]
    print(f"warm reaches its first step {ratio:.2f}x sooner than cold")


if __name__ == "__main__":
    main()
