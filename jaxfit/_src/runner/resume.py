"""``jaxfit run --resume RUN_DIR``: what it refuses, and where the run goes on.

``--resume`` refuses, with a one-line ``ConfigError``: a directory jaxfit did not
make, a complete run, a run with ``backup: false``, a config.yaml changed since
the run began (naming the key; only ``MAY_CHANGE`` may change: ``fit.epochs``
upward, ``fit.verbose`` and ``compilation_cache``), and a directory another
process is running (it holds the directory's lock, which the operating system
releases however that process ends). ``resumed_config`` makes those checks (and
takes the lock); ``reopened`` drops the lines and CSV rows the epochs after the
newest backup had written, so none appears twice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

from jaxfit._src import paths
from jaxfit._src.runner import rundir
from jaxfit._src.runner.checks import _load
from jaxfit._src.runner.resume_trim import _appending_csv, _trim_for_resume
from jaxfit._src.runner.rundir import (
    COMPLETE,
    _config_change,
    _locked,
    _marker,
    _position_words,
    _resume_point,
    _training_ended,
)
from jaxfit._src.runner.schema import ConfigError, RunConfig


def resumed_config(
    resume: str, overrides: Iterable[str], stack: contextlib.ExitStack
) -> tuple[RunConfig, Callable[[str], str], str]:
    """The checked config of the run directory ``resume``, how to locate its keys
    in its config.yaml, and the directory (absolute), locked by ``stack`` on
    process 0.

    Raises:
      ConfigError: ``--set`` given, or the directory refused (see the module
        docstring).
    """
    run_dir = os.path.abspath(os.fspath(resume))
    if overrides:
        raise ConfigError("--set: cannot change the config of a resumed run.")
    expected = "--resume: expected a run directory made by jaxfit run, got"
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{expected} {run_dir!r}, which is not a directory.")
    marker = _marker(run_dir)
    if marker is None or not isinstance(marker.get("config"), dict):
        raise ConfigError(
            f"{expected} {run_dir!r}, which has no run marker ({paths.MARKER}) "
            "holding the config the run began with."
        )
    if rundir._process_index() == 0:
        stack.enter_context(_locked(run_dir))  # until the run ends
    if os.path.exists(os.path.join(run_dir, COMPLETE)):
        raise ConfigError(
            f"--resume: {run_dir!r} finished already (it has {COMPLETE}); "
            "start a new run instead."
        )
    config, locate = _load(os.path.join(run_dir, "config.yaml"))
    change = _config_change(marker["config"], config)
    if change is not None:
        raise ConfigError(locate(change))
    if config.backup is False:
        raise ConfigError(
            f"--resume: {run_dir!r} ran with backup: false; there is "
            "nothing to resume from."
        )
    reached = _resume_point(config, run_dir)[0]
    if reached > config.fit.epochs:
        raise ConfigError(
            locate(
                f"fit.epochs: expected at least {reached}, the epochs the run's "
                f"newest backup had trained, got {config.fit.epochs}."
            )
        )
    return config, locate, run_dir


def reopened(config: RunConfig, resumed: str, lead: bool) -> tuple[str, RunConfig, str]:
    """``(run_dir, config to build callbacks from, header line)`` of the resumed
    run directory, with the lines and CSV rows after its backup dropped (process
    0; they come again)."""
    epoch, batch, stopped = _resume_point(config, resumed)
    if lead:
        _trim_for_resume(config, resumed, epoch)
    words = (
        "after its training ended: writing the run's files"
        if _training_ended(epoch, batch, stopped, config.fit.epochs)
        else _position_words(epoch, batch, config.fit.epochs, None, "at")
    )
    return (
        resumed,
        _appending_csv(config),
        f"jaxfit run: resuming {config.name} in {resumed} {words}",
    )
