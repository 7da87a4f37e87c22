"""``run(config, workdir)``: one experiment from a config, into a run directory.

Order of work: check ``workdir`` (an existing directory, or a path to make one
at; ``""`` or a file is a ``ConfigError``), load and check the config (schema,
names, arguments and their values: ``check``), build the data, the model (on two
samples) and the trainer, then create ``<workdir>/<name>-<timestamp>/`` (always
a new directory, marked as jaxfit's) and call ``fit``, which checks its
arguments against the data and traces the model and the loss abstractly before
its first step; if those checks refuse the config (or Ctrl-C or SIGTERM comes
before training begins) the fresh run directory is removed: a bad config leaves
nothing behind. ``validate`` runs the same checks, stopping the ``fit`` call at
``on_train_begin``. The run directory holds:

    .jaxfit        jaxfit's marker: the resolved config the run began with
                   (what ``--resume`` compares config.yaml with); a run holds
                   an exclusive lock on it while it lasts
    config.yaml    the resolved config (after --set) with an ``environment``
                   section: jaxfit / jax / jaxlib / optax versions and devices
    run.log        everything the run printed, written line by line
    backup/        BackupAndRestore while running; ``jaxfit run --resume RUN_DIR``
                   continues a killed run from it. Removed last
    checkpoint/    the final TrainState (trainer.save, the config in metadata)
    history.json   History (``epoch`` and each key per epoch); history.csv too
    curves.png     the learning curves (History.plot)
    metrics.json   the final evaluation on the test split, the last epoch's logs,
                   how training ended (``last_epoch``, ``stopped_early``) and
                   which epoch's weights it ends with (``weights_epoch``); epoch
                   numbers there count from 1, as printed (History.epoch and
                   history.json's ``epoch`` list count from 0, as Keras'). The
                   completion mark: written last
    tracking.json  with ``tracking: {mlflow: ...}``: the MLflow run's id, so
                   ``--resume`` continues that run (see ``tracking``)

The ending (``ending``), once ``fit`` returns: the test evaluation, checkpoint/,
history.json and history.csv, curves.png, then metrics.json, each written
atomically (a temporary sibling renamed into place), and only then is backup/
removed. A run is complete when metrics.json exists; until then backup/ holds
the trained state, so a kill at any instant leaves either a complete run or one
that ``--resume`` completes: a run whose training had ended resumes at its end,
runs no step, and redoes the ending with the same weights (EarlyStopping's
restored best ones included), giving the same files as an uninterrupted run.

Ctrl-C prints one line (where the run stopped, and ``resume with: jaxfit run
--resume RUN_DIR``), also into run.log, and raises ``RunInterrupted`` (the CLI
exits 130); in the ending it stops the run before the next stage (a second
Ctrl-C at once). SIGTERM (preemption, ``driver.preemption``, handled while the
run lasts) stops ``fit`` at the next step boundary with a backup of that
position, or the ending before its next stage; the run prints one such line and
raises ``Preempted`` (a ``SystemExit``: exit status 143). A resumed run goes on
from the newest backup; the lines the epochs after it wrote to run.log and to
CSVLogger files are dropped first (a resumed ending prints its own again).

``--resume`` refuses, with a one-line ``ConfigError``, a directory jaxfit did
not make, a complete run, a run with ``backup: false``, a config.yaml changed
outside ``MAY_CHANGE`` and a directory another process is running (``resume``
says each, and how the run goes on).

A dataset of arrays trains with ``Trainer.fit``, one of streams with
``Trainer.fit_dataset`` (see ``datasets``); the ``fit`` section's keys are the
arguments of both, and a key that only the other method takes, set to anything
but its default, is a ``ConfigError`` before anything is created.

JAX's persistent compilation cache is on while a run lasts, in
``<workdir>/.jax_cache`` unless the config's ``compilation_cache`` (or ``run``'s
argument, the CLI's ``--compilation-cache``) says another directory or ``false``:
a second run of the same config loads its compiled programs instead of compiling
them. JAX's settings are restored when ``run`` returns (see ``compile_cache``). A
config refused before training leaves no cache directory either, if it made one.

Multi-process runs: every process builds, trains, evaluates and saves (orbax's
writes are collective); only process 0 creates the run directory (its path is
broadcast), holds its lock, prints, writes the plain files and logs to MLflow.
Between the ending's stages the processes share their preemption requests (they
stop together); backup/ is removed once metrics.json is written. Each process
uses the compilation cache directory on its own host (JAX writes its entries
from process 0, every process reads them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import paths
from jaxfit._src.driver import preemption
from jaxfit._src.runner import compile_cache, schema, tracking, yaml_reader
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import resume as resume_lib
from jaxfit._src.runner.build import DEFAULTS, _prepare, _Prepared  # noqa: F401
from jaxfit._src.runner.checks import (  # noqa: F401
    _load,
    _located,
    _streaming,
    _trainer_error,
    _unlocated,
    check,
    fit_arguments,
    load,
)
from jaxfit._src.runner.ending import _check_preemption, _end, _sigint_deferred, _Where
from jaxfit._src.runner.run_callbacks import _callbacks
from jaxfit._src.runner.rundir import (  # noqa: F401
    BACKUP,
    COMPLETE,
    MAY_CHANGE,
    _atomic,
    _checked_workdir,
    _environment,
    _locked,
    _logging_to,
    _make_run_dir,
    _process_index,
    _shared_path,
    _silent,
    _stopped_at,
    _Tracker,
)
from jaxfit._src.runner.schema import ConfigError, RunConfig
from jaxfit._src.runner.show import show  # noqa: F401


@dataclasses.dataclass
class RunResult:
    """What ``run`` returns: the run directory, the History, the final metrics and
    the trainer that trained (its weights those of checkpoint/: EarlyStopping's
    restored best ones, or the last epoch's), ready to ``predict`` / ``evaluate``
    as ``jaxfit.load_run(run_dir)`` rebuilds it later."""

    run_dir: str
    history: Any
    metrics: dict[str, Any]
    trainer: Any = None


def run(
    config: str | os.PathLike[str] | RunConfig,
    workdir: str = "runs",
    *,
    overrides: tuple[str, ...] | list[str] = (),
    resume: str | None = None,
    compilation_cache: str | os.PathLike[str] | bool | None = None,
) -> RunResult:
    """Runs one experiment and returns where it went and how it ended.

    Args:
      config: a YAML path, the name of a config shipped with jaxfit
        (``"digits_mlp"``; ``jaxfit configs`` lists them) or a ``RunConfig``.
        Ignored with ``resume``.
      workdir: where run directories are created: an existing directory (each
        run makes a new subdirectory) or one to make. Defaults to `"runs"`.
      overrides: ``key.path=value`` strings (the CLI's ``--set``). Defaults to `()`.
      resume: the run directory of a run that did not complete (killed, Ctrl-C,
        preempted, in training or in its ending) to continue: its config.yaml
        and backup/ are used, and its outputs completed in place. config.yaml
        may differ from the config the run began with only in ``MAY_CHANGE``:
        ``fit.epochs`` (upward), ``fit.verbose`` and ``compilation_cache``.
        Defaults to `None`.
      compilation_cache: JAX's persistent compilation cache directory (a relative
        path is in the current directory), or ``False`` for none. Defaults to
        `None`: the config's ``compilation_cache`` (``<workdir>/.jax_cache``
        unless set; a resumed run's workdir is its run directory's parent).

    Returns:
      The run directory, the History, the metrics written to metrics.json and
      the trainer (``RunResult.trainer``).

    Raises:
      ConfigError: an invalid config or ``workdir`` (nothing is created); with
        ``resume``, a directory that is not a run directory jaxfit made, a
        complete run, one that ran with ``backup: false``, a config.yaml changed
        outside ``MAY_CHANGE`` (naming the key), or a run directory another
        process is running (its lock is held).
      RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``); it has printed one line,
        where the run stopped and ``resume with: jaxfit run --resume RUN_DIR``,
        also into run.log.
      Preempted: SIGTERM (``driver.preemption``, a ``SystemExit`` with code 143);
        it has printed the same kind of line. Before training began, the fresh
        run directory is removed instead.
    """
    with preemption.handling(), contextlib.ExitStack() as stack:
        if resume is None:
            workdir = _checked_workdir(workdir)
        source = _source(config, resume)
        config, locate, resumed = _resolve(config, overrides, resume, stack)
        made_workdir = resumed is None and not os.path.isdir(workdir)
        home = workdir if resumed is None else os.path.dirname(resumed)
        from_config = compilation_cache is None
        with _located(locate if from_config else _unlocated):
            cache = stack.enter_context(
                compile_cache.enabled(  # before any compile
                    compile_cache.directory(
                        config.compilation_cache, compilation_cache, home
                    )
                )
            )
        return _run(
            config, locate, resumed, workdir, made_workdir, cache, stack, source
        )


def _source(config: Any, resume: str | None) -> str | None:
    """The absolute path of a new run's YAML file (config.yaml's
    ``environment.config_file``: ``--resume`` and ``jaxfit evaluate`` import
    ``module:callable`` names from its directory), or ``None``."""
    if resume is not None or not isinstance(config, (str, os.PathLike)):
        return None
    try:
        return os.path.abspath(config_lib.resolve(config))
    except (ConfigError, OSError, ValueError):
        return None


def _run(
    config: RunConfig,
    locate: Callable[[str], str],
    resumed: str | None,
    workdir: str,
    made_workdir: bool,
    cache: compile_cache.Cache,
    stack: contextlib.ExitStack,
    source: str | None = None,
) -> RunResult:
    """``run`` with JAX's compilation cache on (``cache``): what is discarded when a
    config is refused before training, the cache directory if this run made it."""
    try:
        with _located(locate):  # the fit call's own checks run in it, below
            prepared = _prepare(config, check_fit=False)
    except BaseException:
        if resumed is None:
            _discard(None, workdir if made_workdir else None, cache)
        raise
    lead = _process_index() == 0
    run_dir, built, header = _open_run_dir(config, workdir, resumed, lead, stack)
    say = print if lead else _silent
    tracker = _Tracker(config.fit.initial_epoch, lambda: say(header))
    where = _Where()
    try:
        callbacks = _run_callbacks(config, built, run_dir, locate)
        if resumed is None and lead:
            _write_config(config, run_dir, source)
        logging = (
            _logging_to(os.path.join(run_dir, "run.log"))
            if lead
            else (contextlib.nullcontext())
        )
        with logging:
            history, metrics = _train_reporting_stops(
                config, prepared, tracker, callbacks, run_dir, resumed, say, lead, where
            )
    except (RunInterrupted, preemption.Preempted):
        raise
    except (TypeError, ValueError, KeyboardInterrupt, _NotStarted) as error:
        if tracker.started:
            raise  # training had begun: the run directory stays (--resume)
        # the fit call's own checks refused the config, or Ctrl-C or SIGTERM came
        # before training began: leave nothing behind
        if resumed is None:
            _discard(
                run_dir if lead else None, workdir if made_workdir else None, cache
            )
        if isinstance(error, _NotStarted):
            raise _preempted_before_training(error, resumed, lead) from None
        if isinstance(error, (ConfigError, KeyboardInterrupt)):
            raise
        with _located(locate):
            raise _trainer_error(config, error) from None
    return RunResult(run_dir, history, metrics, prepared.trainer)


def _run_callbacks(
    config: RunConfig, built: RunConfig, run_dir: str, locate: Callable[[str], str]
) -> list[Any]:
    """The config's callbacks (from ``built``) in ``run_dir``, its MLflowLogger
    (``tracking``), and BackupAndRestore unless ``backup: false``."""
    with _located(locate):
        callbacks = _callbacks(built, run_dir, backup=False)
    callbacks += tracking.logger(config, run_dir)  # tracking: {mlflow: ...}
    if config.backup is not False:
        callbacks.append(
            callbacks_lib.BackupAndRestore(
                os.path.join(run_dir, BACKUP),
                save_freq=config.backup,
                delete_checkpoint=False,
            )
        )
    return callbacks


def _write_config(config: RunConfig, run_dir: str, source: str | None) -> None:
    """config.yaml: the resolved config with an ``environment`` section (which
    records the YAML file it came from as ``config_file``, if one)."""
    environment = _environment()
    if source is not None:
        environment["config_file"] = source
    resolved = {**schema.to_dict(config), "environment": environment}
    _atomic(
        os.path.join(run_dir, "config.yaml"),
        functools.partial(_dump_yaml, value=resolved),
    )


def _train_reporting_stops(
    config: RunConfig,
    prepared: _Prepared,
    tracker: _Tracker,
    callbacks: list[Any],
    run_dir: str,
    resumed: str | None,
    say: Callable[..., None],
    lead: bool,
    where: _Where,
) -> tuple[Any, dict[str, Any]]:
    """``_train`` with ``tracker`` first among the callbacks; Ctrl-C and SIGTERM
    once training has begun (or in a resumed run) are reported in one line and
    raised as ``RunInterrupted`` / ``Preempted``, before that as a bare
    ``KeyboardInterrupt`` or ``_NotStarted``."""
    try:
        return _train(
            config, prepared, [tracker, *callbacks], run_dir, say, lead, where
        )
    except KeyboardInterrupt:
        if resumed is None and not tracker.started:
            raise  # nothing trained yet: nothing is left (below)
        line = _stop_line("interrupted", prepared, tracker, where)
        line += _resume_words(config, run_dir, where)
        if lead:
            print(line, file=sys.stderr, flush=True)
        raise RunInterrupted(line, run_dir) from None
    except preemption.Preempted as error:
        if resumed is None and not tracker.started:
            line = "jaxfit run: preempted before training started"
            raise _NotStarted(line, error.signum) from None
        line = _stop_line(
            f"preempted ({signal.Signals(error.signum).name})",
            prepared,
            tracker,
            where,
        )
        line += _resume_words(config, run_dir, where)
        if lead:
            print(line, file=sys.stderr, flush=True)
        raise preemption.Preempted(line, error.signum) from None


def _preempted_before_training(
    error: _NotStarted, resumed: str | None, lead: bool
) -> preemption.Preempted:
    """SIGTERM before training began, once the fresh run directory is removed:
    its line printed (process 0), as the ``Preempted`` to raise."""
    line = str(error) + ("; nothing was created" if resumed is None else "")
    if lead:
        print(line, file=sys.stderr, flush=True)
    return preemption.Preempted(line, error.signum)


class _NotStarted(Exception):
    """SIGTERM before training began (turned into ``Preempted`` once the fresh
    run directory is removed)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def _dump_yaml(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml_reader._yaml().safe_dump(value, f, sort_keys=False)


def _stop_line(kind: str, prepared: _Prepared, tracker: Any, where: _Where) -> str:
    """``jaxfit run: <kind> <where it stopped>``: in training as of the trainer's
    state, or the ending's stage."""
    at = (
        _stopped_at(prepared.trainer, tracker) if where.stage is None else where.words()
    )
    return f"jaxfit run: {kind} {at}"


def _resume_words(config: RunConfig, run_dir: str, where: _Where) -> str:
    """How to go on after a stop: the resume command (or why there is none)."""
    if where.complete:
        return ""
    if config.backup is False:
        return "; it ran with backup: false, so it cannot be resumed"
    return f"; resume with: jaxfit run --resume {run_dir}"


def _resolve(
    config: Any, overrides: Any, resume: str | None, stack: contextlib.ExitStack
) -> tuple[RunConfig, Callable[[str], str], str | None]:
    """The checked config, how to locate its keys in the YAML file, and the run
    directory being resumed (``None`` for a new run), locked by ``stack``."""
    if resume is None:
        if isinstance(config, RunConfig):
            return check(config, run=True), _unlocated, None
        config, locate = _load(config, overrides, run=True)
        return config, locate, None
    return resume_lib.resumed_config(resume, overrides, stack)


def _open_run_dir(
    config: RunConfig,
    workdir: str,
    resumed: str | None,
    lead: bool,
    stack: contextlib.ExitStack,
) -> tuple[str, RunConfig, str]:
    """``(run_dir, config to build callbacks from, header line)``: a new directory
    (process 0 makes and locks it, the others are told its path), or the resumed
    one (``resume.reopened``)."""
    if resumed is None:
        made = _make_run_dir(workdir, config.name, config) if lead else None
        if made is not None:
            stack.enter_context(_locked(made))  # until the run ends
        run_dir = _shared_path(made)
        return run_dir, config, f"jaxfit run: {config.name} -> {run_dir}"
    return resume_lib.reopened(config, resumed, lead)


def _discard(
    run_dir: str | None, made_workdir: str | None, cache: compile_cache.Cache
) -> None:
    """Removes a run directory that never trained (process 0's, if marked), the
    compilation cache directory and a workdir this run made (once empty)."""
    if run_dir is not None:
        paths.remove_marked_tree(run_dir)
    cache.discard()
    if made_workdir is not None:
        with contextlib.suppress(OSError):  # only if still empty
            os.rmdir(made_workdir)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) ended a run; the message says where and how to resume.

    Attributes:
      run_dir: the run directory (``jaxfit run --resume RUN_DIR`` continues it).
    """

    def __init__(self, message: str, run_dir: str):
        super().__init__(message)
        self.run_dir = run_dir


def _train(
    config: RunConfig,
    prepared: _Prepared,
    callbacks: list[Any],
    run_dir: str,
    say: Callable[..., None],
    lead: bool,
    where: _Where,
) -> tuple[Any, dict[str, Any]]:
    """Fits, then the ending: the test evaluation and the run directory's files."""
    data, trainer, arguments = prepared.data, prepared.trainer, prepared.arguments
    _check_preemption()  # SIGTERM while the run was being built
    if _streaming(data):
        history = trainer.fit_dataset(
            data.train,
            validation_data=data.validation,
            callbacks=callbacks,
            **arguments,
        )
    else:
        history = trainer.fit(
            data.x_train, data.y_train, callbacks=callbacks, **arguments
        )
    end = functools.partial(
        _end, config, prepared, callbacks, history, run_dir, say, lead, where
    )
    with _sigint_deferred(where):  # then the MLflow run's files and status
        return history, tracking.ended(callbacks, run_dir, end)


def validate(
    path: str | os.PathLike[str], overrides: tuple[str, ...] | list[str] = ()
) -> tuple[RunConfig, str]:
    """``jaxfit validate``: every check ``run`` makes before training, and only
    those; returns the config and ``"arrays"`` or ``"streams"``.

    That is ``load``, then the data (the dataset callable is called) against the
    ``fit`` section, the model built on two samples of it, the trainer, and the
    trainer's own checks of the ``fit`` arguments with the data and the model
    traced abstractly (labels against the losses, shapes): no step is compiled
    and nothing is created.

    Raises:
      ConfigError: naming the config key.
    """
    config, locate = _load(path, overrides)
    with _located(locate):
        prepared = _prepare(config)
    return config, "streams" if _streaming(prepared.data) else "arrays"
