"""``run(config, workdir)``: one experiment from a config, into a run directory.

Order of work: load and check the config (schema, names, arguments and their
values: ``check``), build the data, the model (on two samples) and the trainer,
then create ``<workdir>/<name>-<timestamp>/`` and call ``fit``, which checks its
arguments against the data and traces the model and the loss abstractly before
its first step; if those checks refuse the config (or Ctrl-C comes before
training begins) the fresh run directory is removed: a bad config leaves nothing
behind. ``validate`` runs the same checks, stopping the ``fit`` call at
``on_train_begin``. The run directory holds:

    config.yaml    the resolved config (after --set) with an ``environment``
                   section: jaxfit / jax / jaxlib / optax versions and devices
    run.log        everything the run printed
    history.json   History (``epoch`` and each key per epoch); history.csv too
    curves.png     the learning curves (History.plot)
    metrics.json   the final evaluation on the test split, the last epoch's logs,
                   how training ended (``last_epoch``, ``stopped_early``) and
                   which epoch's weights it ends with (``weights_epoch``); epoch
                   numbers there count from 1, as printed (History.epoch and
                   history.json's ``epoch`` list count from 0, as Keras')
    checkpoint/    the final TrainState (trainer.save, the config in metadata)
    backup/        BackupAndRestore while running (removed at a normal end);
                   ``jaxfit run --resume RUN_DIR`` continues a killed run from it

Ctrl-C prints one line (where the run stopped, and ``resume with: jaxfit run
--resume RUN_DIR``), also into run.log, and raises ``RunInterrupted`` (the CLI
exits 130). A resumed run continues from the newest backup; the lines the
epochs after it had written to run.log and to CSVLogger files are dropped first,
so none appears twice.

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

Multi-process runs (``jax.process_count() > 1``): every process builds, trains,
evaluates and saves (orbax's writes are collective), but only process 0 creates
the run directory (its path is broadcast to the others), prints, and writes the
plain files (config.yaml, run.log, history, curves.png, metrics.json). Each
process uses the compilation cache directory on its own host; JAX writes its
entries from process 0 and every process reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src.runner import compile_cache, schema
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner.build import (  # noqa: F401
    DEFAULTS,
    _data,
    _model,
    _prepare,
    _Prepared,
)
from jaxfit._src.runner.checks import (  # noqa: F401
    _COUNTERPARTS,
    _FIT_CHECKS,
    _MODEL_ARGS,
    _MODEL_KEYS,
    _PATH_ARGS,
    _TOP_LEVEL,
    _argument_error,
    _callback_class,
    _callbacks,
    _check_fit,
    _check_test_split,
    _Checked,
    _first_line,
    _in_run_dir,
    _leaves,
    _load,
    _located,
    _misplaced,
    _stop_before_training,
    _streaming,
    _trainer_error,
    _unlocated,
    check,
    fit_arguments,
    load,
)
from jaxfit._src.runner.rundir import (  # noqa: F401
    _EPOCH_LINE,
    _MAX_PATH,
    _appending_csv,
    _environment,
    _format,
    _last_interruption,
    _logging_to,
    _make_run_dir,
    _plot,
    _position_words,
    _process_index,
    _resume_point,
    _shared_path,
    _silent,
    _stopped_at,
    _Tee,
    _Tracker,
    _trim_for_resume,
    _write_json,
    show,
)
from jaxfit._src.runner.schema import ConfigError, RunConfig


@dataclasses.dataclass
class RunResult:
    """What ``run`` returns: the run directory, the History and the final metrics."""

    run_dir: str
    history: Any
    metrics: dict[str, Any]


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
      workdir: where run directories are created. Defaults to `"runs"`.
      overrides: ``key.path=value`` strings (the CLI's ``--set``). Defaults to `()`.
      resume: a run directory of a killed run to continue (its config.yaml and
        backup/ are used, and its outputs completed in place). Defaults to `None`.
      compilation_cache: JAX's persistent compilation cache directory (a relative
        path is in the current directory), or ``False`` for none. Defaults to
        `None`: the config's ``compilation_cache`` (``<workdir>/.jax_cache``
        unless set; a resumed run's workdir is its run directory's parent).

    Raises:
      ConfigError: an invalid config (nothing is created).
      RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``); it has printed one line,
        where the run stopped and ``resume with: jaxfit run --resume RUN_DIR``,
        also into run.log.
    """
    config, locate, resumed = _resolve(config, overrides, resume)
    made_workdir = resumed is None and not os.path.isdir(workdir)
    home = workdir if resumed is None else os.path.dirname(resumed)
    from_config = compilation_cache is None
    with contextlib.ExitStack() as stack:
        with _located(locate if from_config else _unlocated):
            cache = stack.enter_context(
                compile_cache.enabled(  # before any compile
                    compile_cache.directory(
                        config.compilation_cache, compilation_cache, home
                    )
                )
            )
        return _run(config, locate, resumed, workdir, made_workdir, cache)


def _run(
    config: RunConfig,
    locate: Callable[[str], str],
    resumed: str | None,
    workdir: str,
    made_workdir: bool,
    cache: compile_cache.Cache,
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
    run_dir, built, header = _open_run_dir(config, workdir, resumed, lead)
    say = print if lead else _silent
    tracker = _Tracker(config.fit.initial_epoch, lambda: say(header))
    try:
        with _located(locate):
            callbacks = _callbacks(built, run_dir)
        if resumed is None and lead:
            resolved = {**schema.to_dict(config), "environment": _environment()}
            with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
                config_lib._yaml().safe_dump(resolved, f, sort_keys=False)
        logging = (
            _logging_to(os.path.join(run_dir, "run.log"))
            if lead
            else (contextlib.nullcontext())
        )
        with logging:
            try:
                history, metrics = _train(
                    config, prepared, [tracker, *callbacks], run_dir, say, lead
                )
            except KeyboardInterrupt:
                if resumed is None and not tracker.started:
                    raise  # nothing trained yet: nothing is left (below)
                raise _interrupted(
                    config, prepared.trainer, tracker, run_dir, lead
                ) from None
    except RunInterrupted:
        raise
    except (TypeError, ValueError, KeyboardInterrupt) as error:
        if tracker.started:
            raise  # training had begun: the run directory stays (--resume)
        # the fit call's own checks refused the config, or Ctrl-C came before
        # training began: leave nothing behind
        if resumed is None:
            _discard(
                run_dir if lead else None, workdir if made_workdir else None, cache
            )
        if isinstance(error, (ConfigError, KeyboardInterrupt)):
            raise
        with _located(locate):
            raise _trainer_error(config, error) from None
    return RunResult(run_dir, history, metrics)


def _resolve(
    config: Any, overrides: Any, resume: str | None
) -> tuple[RunConfig, Callable[[str], str], str | None]:
    """The checked config, how to locate its keys in the YAML file, and the run
    directory being resumed (``None`` for a new run)."""
    if resume is None:
        if isinstance(config, RunConfig):
            return check(config), _unlocated, None
        config, locate = _load(config, overrides)
        return config, locate, None
    run_dir = os.path.abspath(resume)
    if overrides:
        raise ConfigError("--set: cannot change the config of a resumed run.")
    config, locate = _load(os.path.join(run_dir, "config.yaml"))
    if os.path.exists(os.path.join(run_dir, "history.json")):
        raise ConfigError(
            f"--resume: {run_dir!r} finished already (it has "
            "history.json); start a new run instead."
        )
    if config.backup is False:
        raise ConfigError(
            f"--resume: {run_dir!r} ran with backup: false; there is "
            "nothing to resume from."
        )
    return config, locate, run_dir


def _open_run_dir(
    config: RunConfig, workdir: str, resumed: str | None, lead: bool
) -> tuple[str, RunConfig, str]:
    """``(run_dir, config to build callbacks from, header line)``: a new directory
    (process 0 makes it, the others are told its path), or the resumed one with
    the lines and CSV rows after its backup dropped (they come again)."""
    if resumed is None:
        run_dir = _shared_path(_make_run_dir(workdir, config.name) if lead else None)
        return run_dir, config, f"jaxfit run: {config.name} -> {run_dir}"
    start = _resume_point(config, resumed)
    if lead:
        _trim_for_resume(config, resumed, start[0])
    return (
        resumed,
        _appending_csv(config),
        (
            f"jaxfit run: resuming {config.name} in {resumed} "
            f"{_position_words(*start, config.fit.epochs, None, 'at')}"
        ),
    )


def _interrupted(
    config: RunConfig, trainer: Any, tracker: Any, run_dir: str, lead: bool
) -> RunInterrupted:
    """Ctrl-C during training: one line (where, and how to resume) on stderr.
    fit has stopped its background work (feeders, checkpoint writes) in its
    ``finally`` before this runs."""
    line = f"jaxfit run: interrupted {_stopped_at(trainer, tracker)}; " + (
        f"resume with: jaxfit run --resume {run_dir}"
        if config.backup is not False
        else "it ran with backup: false, so it cannot be resumed"
    )
    if lead:
        print(line, file=sys.stderr, flush=True)
    return RunInterrupted(line, run_dir)


def _discard(
    run_dir: str | None, made_workdir: str | None, cache: compile_cache.Cache
) -> None:
    """Removes a run directory that never trained (process 0's), the compilation
    cache directory if this run made it, and a workdir made for them."""
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
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
) -> tuple[Any, dict[str, Any]]:
    """Fits, evaluates on the test split, and writes the run directory's files."""
    data, trainer, arguments = prepared.data, prepared.trainer, prepared.arguments
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
    metrics: dict[str, Any] = {
        "final_epoch": {key: values[-1] for key, values in history.history.items()}
    }
    ending, lines = _ending(config, callbacks, history)
    metrics.update(ending)
    for line in lines:
        say(line)
    if _streaming(data) and data.test is not None:
        metrics["test"] = trainer.evaluate_dataset(data.test)
    elif not _streaming(data) and data.x_test is not None:
        metrics["test"] = trainer.evaluate(
            data.x_test, data.y_test, batch_size=config.fit.batch_size
        )
    if "test" in metrics:
        say("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in metrics["test"].items()))
    if lead:
        _write_json(os.path.join(run_dir, "history.json"), history.to_dict())
        history.to_csv(os.path.join(run_dir, "history.csv"))
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
        _plot(history, os.path.join(run_dir, "curves.png"))
    trainer.save(
        os.path.join(run_dir, "checkpoint"),  # every process: orbax
        metadata={"config": schema.to_dict(config)},
    )
    say(f"run directory: {run_dir}")
    return history, metrics


def _ending(
    config: RunConfig, callbacks: list[Any], history: Any
) -> tuple[dict[str, Any], list[str]]:
    """How training ended, for metrics.json and run.log: the last epoch, whether
    a callback stopped it early, and which epoch's weights the run ends with (the
    test evaluation's and checkpoint/'s). Epochs count from 1, as printed."""

    last = history.epoch[-1] + 1 if history.epoch else config.fit.initial_epoch
    out: dict[str, Any] = {
        "last_epoch": last,
        "weights_epoch": last,
        "weights": "the last epoch's",
    }
    lines = []
    names = [c.name for c in config.callbacks]
    built = [c for c in callbacks if not isinstance(c, _Tracker)]
    for i, callback in enumerate(built[: len(names)]):
        if not isinstance(callback, callbacks_lib.EarlyStopping):
            continue
        who = f"callbacks[{i}] {names[i]}"
        if callback.stopped_epoch > 0:
            out["stopped_early"] = {
                "by": who,
                "epoch": callback.stopped_epoch + 1,
                "monitor": callback.monitor,
                "patience": callback.patience,
            }
            lines.append(
                f"early stopping: {who} ended the run after epoch "
                f"{callback.stopped_epoch + 1}/{config.fit.epochs}: "
                f"{callback.monitor} did not improve for "
                f"{callback.patience} epoch"
                f"{'' if callback.patience == 1 else 's'}"
            )
        if callback.restore_best_weights and callback.best_weights is not None:
            out["weights_epoch"] = callback.best_epoch + 1
            out["weights"] = (
                f"restored by {who} (restore_best_weights): the best "
                f"{callback.monitor}, {callback.best:.6g}"
            )
            lines.append(
                f"weights: epoch {callback.best_epoch + 1}'s, restored by "
                f"{who} (best {callback.monitor}: {callback.best:.4f}); "
                "checkpoint/ and the test evaluation use them"
            )
    if "stopped_early" not in out and last < config.fit.epochs:
        out["stopped_early"] = {"by": "stop_training", "epoch": last}
        lines.append(
            f"stopped: training ended after epoch {last}/{config.fit.epochs} "
            "(stop_training)"
        )
    return out, lines


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
