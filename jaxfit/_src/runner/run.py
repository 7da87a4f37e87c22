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

Multi-process runs (``jax.process_count() > 1``): every process builds, trains,
evaluates and saves (orbax's writes are collective), but only process 0 creates
the run directory (its path is broadcast to the others), prints, and writes the
plain files (config.yaml, run.log, history, curves.png, metrics.json).
"""

from __future__ import annotations

import collections.abc
import contextlib
import csv
import dataclasses
import datetime
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterator, TextIO

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.core import losses
from jaxfit._src.core import metrics as metrics_lib
from jaxfit._src.core.model import Model
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import trainer as trainer_lib
from jaxfit._src.driver.trainer import Trainer
from jaxfit._src.driver import validate as validate_lib
from jaxfit._src.driver import yield_policy
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import datasets, optim, registry, schema, zoo
from jaxfit._src.runner.schema import ConfigError, RunConfig

_PATH_ARGS = ("filepath", "filename", "log_dir", "backup_dir")  # made run-relative
_MODEL_KEYS = ("sample_x", "num_outputs", "seed")
_MAX_PATH = 4096  # bytes of a run directory path broadcast to the other processes
DEFAULTS = {"classification": ("sparse_categorical_crossentropy_from_logits",
                               ["accuracy"]),
            "regression": ("mse", ["mae"])}
# The trainer's own checks of fit values that a type does not express; run by
# ``check`` so that ``jaxfit validate`` reports them with the key path.
_FIT_CHECKS = {
    "validation_split": validate_lib.validation_split,
    "validation_freq": validate_lib.validation_freq,
    "class_weight": validate_lib.class_weight,
    "yield_every": yield_policy.parse,
}
# The same thing under the other method's name (tfjs' validationBatches is
# Keras' validation_steps).
_COUNTERPARTS = {"validation_batches": "validation_steps",
                 "validation_steps": "validation_batches"}


@dataclasses.dataclass
class RunResult:
    """What ``run`` returns: the run directory, the History and the final metrics."""

    run_dir: str
    history: Any
    metrics: dict[str, Any]


def _callback_class(name: str, key: str) -> Any:

    if registry.is_import_path(name):
        return registry.import_callable(name, key)
    if name not in callbacks_lib.__all__ or name in ("Callback", "MonitorCallback"):
        choices = [n for n in callbacks_lib.__all__
                   if n not in ("Callback", "MonitorCallback", "History")]
        raise ConfigError(f"{key}: unknown callback {name!r}; expected one of "
                          f"{choices} or 'package.module:callable'.")
    return getattr(callbacks_lib, name)


def _leaves(spec: Any) -> list[tuple[str, Any]]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [(f".{k}", v) for k, v in spec.items()]
    if isinstance(spec, list):
        return [(f"[{i}]", v) for i, v in enumerate(spec)]
    return [("", spec)]


def _argument_error(key: str, error: BaseException, names: Any, owner: str
                    ) -> ConfigError:
    """``key.<argument>: ...`` from a constructor's ``"<argument>: expected ..."``
    (or ``"<owner>: <argument>: ..."``), else ``key: ...``."""
    message = str(error).removeprefix(f"{owner}: ")
    name = message.split(":", 1)[0]
    if name in names:
        return ConfigError(f"{key}.{message}")
    return ConfigError(f"{key}: {owner}: {message}")


def check(config: RunConfig) -> RunConfig:
    """Every check that needs no data: names, imports, arguments and their values.

    Returns:
      The config with the arguments of the callables it names converted by their
      signatures (``peak_value: 3e-3`` read as a string by PyYAML is a float).

    Raises:
      ConfigError: naming the config key.
    """

    builder = registry.lookup(config.model.name, zoo.MODELS, "model.name")
    model_args = registry.check_args(builder, config.model.args, "model.args",
                                     _MODEL_KEYS, strict=builder in zoo.MODELS.values())
    loader = registry.lookup(config.data.name, datasets.DATASETS, "data.name")
    data_args = registry.check_args(loader, config.data.args, "data.args", ("seed",),
                                    strict=loader in datasets.DATASETS.values())
    optimizer = optim.check(config.optimizer)
    for suffix, name in _leaves(config.loss):
        if registry.is_import_path(name):
            registry.import_callable(name, f"loss{suffix}")
            continue
        try:
            losses.get(name)
        except (ValueError, TypeError) as error:
            raise schema.keyed(f"loss{suffix}", error, "loss") from None
    probe = jax.ShapeDtypeStruct((1, 2), np.float32)
    metric_specs = config.metrics.items() if isinstance(config.metrics, dict) else [
        ("", config.metrics)]
    for output, names in metric_specs:
        for suffix, name in _leaves(names):
            key = f"metrics{'.' + output if output else ''}{suffix}"
            try:
                metrics_lib.resolve(name, probe, probe)
            except (ValueError, TypeError) as error:
                raise schema.keyed(key, error, "metrics") from None
    callbacks = []
    for i, callback in enumerate(config.callbacks):
        cls = _callback_class(callback.name, f"callbacks[{i}].name")
        args = registry.check_args(cls, callback.args, f"callbacks[{i}].args",
                                   strict=not registry.is_import_path(callback.name))
        callbacks.append(dataclasses.replace(callback, args=args))
    with tempfile.TemporaryDirectory() as run_dir:  # constructors check the values
        _callbacks(dataclasses.replace(config, callbacks=callbacks), run_dir,
                   backup=False)
    for name, check_value in _FIT_CHECKS.items():
        if hasattr(config.fit, name):
            try:
                check_value(getattr(config.fit, name))
            except (ValueError, TypeError) as error:
                raise schema.keyed(f"fit.{name}", error, name) from None
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, args=model_args),
        data=dataclasses.replace(config.data, args=data_args), optimizer=optimizer,
        callbacks=callbacks)


def load(path: str | os.PathLike[str], overrides: tuple[str, ...] | list[str] = ()
         ) -> RunConfig:
    """The validated config at ``path`` (with ``--set`` overrides), fully checked."""
    return _load(path, overrides)[0]


def _load(path: str | os.PathLike[str], overrides: tuple[str, ...] | list[str] = ()
          ) -> tuple[RunConfig, Callable[[str], str]]:
    config, _, locate = config_lib.load_located(path, overrides)
    with _located(locate):
        config = check(config)
    return config, locate


@contextlib.contextmanager
def _located(locate: Callable[[str], str]) -> Iterator[None]:
    """Adds the file line (or ``--set``) of its key path to a ``ConfigError``
    (once: an error that has it already passes unchanged)."""
    try:
        yield
    except ConfigError as error:
        if error.located:
            raise
        raise ConfigError(locate(str(error)), located=True) from None


def validate(path: str | os.PathLike[str],
             overrides: tuple[str, ...] | list[str] = ()) -> tuple[RunConfig, str]:
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


def _streaming(data: Any) -> bool:
    return isinstance(data, datasets.StreamDataset)


def fit_arguments(config: RunConfig, data: Any) -> dict[str, Any]:
    """The ``fit`` section as keyword arguments of ``Trainer.fit`` (arrays) or
    ``Trainer.fit_dataset`` (streams).

    A key only the other method takes is dropped at its default and a
    ``ConfigError`` otherwise; so is ``validation_batches`` without a
    validation stream.
    """
    streaming = _streaming(data)
    trainer_cls = trainer_lib.Trainer
    accepted = schema.trainer_arguments(
        trainer_cls.fit_dataset if streaming else trainer_cls.fit)
    defaults = schema.defaults(type(config.fit))
    arguments = {}
    for name, value in schema.to_dict(config.fit).items():
        if name in accepted:
            arguments[name] = value
        elif name not in defaults or value != defaults[name]:
            raise ConfigError(_misplaced(config, name, streaming))
    if streaming and data.validation is None and arguments.get(
            "validation_batches") is not None:
        raise ConfigError(f"fit.validation_batches: the dataset from data.name "
                          f"{config.data.name!r} has no 'validation' stream to "
                          "limit; return one with the 'train' stream, or remove "
                          "fit.validation_batches.")
    return arguments


def _misplaced(config: RunConfig, name: str, streaming: bool) -> str:
    if streaming:
        what = ("applies to in-memory arrays only (Trainer.fit); the dataset from "
                f"data.name {config.data.name!r} returns streams, trained with "
                "Trainer.fit_dataset")
    else:
        what = ("applies to streams of batches only (Trainer.fit_dataset); the dataset "
                f"from data.name {config.data.name!r} returns arrays, trained with "
                "Trainer.fit")
    other = _COUNTERPARTS.get(name)
    kind = "streams" if streaming else "arrays"
    fix = f"use fit.{other} (the same limit, for {kind})" if other else "remove it"
    return f"fit.{name}: {what}; {fix}."


def _environment() -> dict[str, Any]:
    return {"versions": orbax_io.versions(),
            "devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(),
            "created": datetime.datetime.now().isoformat(timespec="seconds")}


def _make_run_dir(workdir: str, name: str) -> str:
    """``<workdir>/<name>-<timestamp>``; never an existing directory."""
    os.makedirs(workdir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(workdir, f"{name}-{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.mkdir(path)  # atomic: fails if another run took the name
            return os.path.abspath(path)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory next to {base!r}")


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _logging_to(path: str) -> Iterator[None]:
    """Copies stdout and stderr into ``path`` while the run lasts."""
    with open(path, "a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def _data(config: RunConfig) -> datasets.Dataset | datasets.StreamDataset:
    loader = registry.lookup(config.data.name, datasets.DATASETS, "data.name")
    return datasets.as_dataset(
        registry.call(loader, config.data.args, {"seed": config.seed}), "data.name")


@dataclasses.dataclass
class _Prepared:
    """What a run needs before its run directory exists, every check passed."""

    data: Any
    trainer: Any
    arguments: dict[str, Any]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _model(config: RunConfig, data: Any) -> Any:
    """The model from ``model.name`` on two samples of the data."""

    builder = registry.lookup(config.model.name, zoo.MODELS, "model.name")
    builtin = builder in zoo.MODELS.values()
    try:
        model = registry.call(builder, config.model.args, {
            "sample_x": data.sample_x, "num_outputs": data.num_outputs,
            "seed": config.seed})
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - a built-in's failure is the config's
        if not builtin and not isinstance(error, (TypeError, ValueError)):
            raise  # a bug in user code: its own traceback
        shapes = jax.tree.map(lambda a: tuple(np.shape(a)), data.sample_x)
        raise ConfigError(
            f"model.name: expected {config.model.name!r} with model.args "
            f"{dict(config.model.args)} to build on the data of data.name "
            f"{config.data.name!r} (sample x of shape {shapes}), got "
            f"{type(error).__name__}: {_first_line(error)}") from None
    if not isinstance(model, Model):
        raise ConfigError(f"model.name: expected {config.model.name!r} to build a "
                          f"jaxfit.Model (see jaxfit.from_flax), got "
                          f"{type(model).__name__}.")
    return model


# Where an error of the trainer's checks points in the config: its argument name
# (the text before the first colon) to the config key.
_TOP_LEVEL = ("loss", "loss_weights", "metrics", "precision", "seed")
_MODEL_ARGS = ("params", "state", "module", "apply_fn")


def _trainer_error(config: RunConfig, error: BaseException) -> ConfigError:
    """The trainer's own check failing, as a ``ConfigError`` on the key it is
    about: a ``fit`` argument, ``loss`` / ``metrics`` (labels that do not suit
    them), ``model.name`` (a model that does not take the data) or ``data.name``."""
    message = str(error)
    name = message.split(":", 1)[0].strip()
    fit_fields = {f.name for f in dataclasses.fields(config.fit)}
    if name in fit_fields:
        return schema.keyed(f"fit.{name}", message, name)
    if name in _TOP_LEVEL:
        return ConfigError(message)
    if name in _MODEL_ARGS or "the model cannot be applied" in message:
        return ConfigError(f"model.name: expected {config.model.name!r} to take the "
                           f"data of data.name {config.data.name!r}: {message}")
    leaf = name.rsplit(": ", 1)[-1]
    if leaf.startswith("y") and config.loss is not None:
        return ConfigError(f"loss: expected labels that suit it from data.name "
                           f"{config.data.name!r}: {message}")
    if leaf.startswith("y") and config.metrics is not None:
        return ConfigError(f"metrics: expected labels that suit them from data.name "
                           f"{config.data.name!r}: {message}")
    return ConfigError(f"data.name: expected data from {config.data.name!r} that "
                       f"suits the config: {message}")


class _Checked(Exception):
    """Raised by ``_StopBeforeTraining``: the call passed every check."""


def _stop_before_training() -> Any:
    """A callback that ends a ``fit`` / ``evaluate`` call at its first hook: after
    the call has checked its arguments and traced the model and the loss
    abstractly, before any step is compiled or run (``trainer.state`` unchanged)."""

    class _StopBeforeTraining(callbacks_lib.Callback):
        def on_train_begin(self, logs=None):
            raise _Checked

        def on_test_begin(self, logs=None):
            raise _Checked

    return _StopBeforeTraining()


def _check_fit(data: Any, trainer: Any, arguments: dict[str, Any]) -> Any:
    """The trainer's own checks of the fit call, without training: the call is
    made with a callback that stops it at ``on_train_begin``. Returns the data (a
    one-shot training iterator gets its first batch back)."""
    arguments = {**arguments, "verbose": 0}
    try:
        if _streaming(data):
            train = data.train
            if isinstance(train, collections.abc.Iterator):  # read once: put it back
                first = list(itertools.islice(train, 1))
                data = dataclasses.replace(data, train=itertools.chain(first, train))
                train = iter(first)
            trainer.fit_dataset(train, validation_data=data.validation,
                                callbacks=[_stop_before_training()], **arguments)
        else:
            trainer.fit(data.x_train, data.y_train,
                        callbacks=[_stop_before_training()], **arguments)
    except _Checked:
        pass
    return data


def _check_test_split(config: RunConfig, data: Any, trainer: Any) -> None:
    """The final evaluation's checks on the test arrays (a stream's batches are
    checked as they are read)."""
    if _streaming(data) or data.x_test is None:
        return
    try:
        trainer.evaluate(data.x_test, data.y_test, batch_size=config.fit.batch_size,
                         callbacks=[_stop_before_training()])
    except _Checked:
        pass
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.name: expected a test split from "
                          f"{config.data.name!r} that the model and the loss take, "
                          f"got: {error}") from None


def _prepare(config: RunConfig, check_fit: bool = True) -> _Prepared:
    """The data, the model and the trainer, and every check of the fit call that
    ``Trainer.fit`` makes before its first step (``check_fit``: what ``jaxfit
    validate`` runs; ``run`` has the real call make them, see ``_train``)."""

    data = _data(config)
    arguments = fit_arguments(config, data)
    model = _model(config, data)
    loss, metrics = DEFAULTS[data.task]
    try:
        trainer = Trainer(
            model, optimizer=optim.build(config.optimizer),
            loss=config.loss if config.loss is not None else loss,
            metrics=config.metrics if config.metrics is not None else metrics,
            loss_weights=config.loss_weights, seed=config.seed,
            precision=config.precision)
        if check_fit:
            data = _check_fit(data, trainer, arguments)
        _check_test_split(config, data, trainer)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise _trainer_error(config, error) from None
    return _Prepared(data, trainer, arguments)


def _in_run_dir(args: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Relative ``filepath`` / ``filename`` / ``log_dir`` / ``backup_dir`` arguments
    made relative to the run directory."""
    args = dict(args)
    for name in _PATH_ARGS:
        if isinstance(args.get(name), str) and not os.path.isabs(args[name]):
            args[name] = os.path.join(run_dir, args[name])
    return args


def _callbacks(config: RunConfig, run_dir: str, backup: bool = True) -> list[Any]:
    """The config's callbacks (paths in ``run_dir``), and BackupAndRestore."""

    built = []
    for i, callback in enumerate(config.callbacks):
        cls = _callback_class(callback.name, f"callbacks[{i}].name")
        try:
            built.append(cls(**_in_run_dir(callback.args, run_dir)))
        except (TypeError, ValueError) as error:
            raise _argument_error(f"callbacks[{i}].args", error, callback.args,
                                  callback.name) from None
    if backup and config.backup is not False:
        built.append(callbacks_lib.BackupAndRestore(
            os.path.join(run_dir, "backup"), save_freq=config.backup))
    return built


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)


def run(config: str | os.PathLike[str] | RunConfig, workdir: str = "runs", *,
        overrides: tuple[str, ...] | list[str] = (), resume: str | None = None
        ) -> RunResult:
    """Runs one experiment and returns where it went and how it ended.

    Args:
      config: a YAML path or a ``RunConfig``. Ignored with ``resume``.
      workdir: where run directories are created. Defaults to `"runs"`.
      overrides: ``key.path=value`` strings (the CLI's ``--set``). Defaults to `()`.
      resume: a run directory of a killed run to continue (its config.yaml and
        backup/ are used, and its outputs completed in place). Defaults to `None`.

    Raises:
      ConfigError: an invalid config (nothing is created).
      RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``); it has printed one line,
        where the run stopped and ``resume with: jaxfit run --resume RUN_DIR``,
        also into run.log.
    """
    locate: Callable[[str], str] = _unlocated
    if resume is not None:
        run_dir = os.path.abspath(resume)
        if overrides:
            raise ConfigError("--set: cannot change the config of a resumed run.")
        config, locate = _load(os.path.join(run_dir, "config.yaml"))
        if os.path.exists(os.path.join(run_dir, "history.json")):
            raise ConfigError(f"--resume: {run_dir!r} finished already (it has "
                              "history.json); start a new run instead.")
        if config.backup is False:
            raise ConfigError(f"--resume: {run_dir!r} ran with backup: false; there is "
                              "nothing to resume from.")
    elif not isinstance(config, RunConfig):
        config, locate = _load(config, overrides)
    else:
        config = check(config)
    with _located(locate):  # the fit call's own checks run in it, below
        prepared = _prepare(config, check_fit=False)
    trainer = prepared.trainer
    lead = _process_index() == 0
    fresh = resume is None
    if fresh:
        made_workdir = not os.path.isdir(workdir)
        run_dir = _shared_path(_make_run_dir(workdir, config.name) if lead else None)
        built = config
        header = f"jaxfit run: {config.name} -> {run_dir}"
    else:  # the resumed epochs' lines come again: drop them from run.log and CSVs
        start = _resume_point(config, run_dir)
        if lead:
            _trim_for_resume(config, run_dir, start[0])
        built = _appending_csv(config)
        header = (f"jaxfit run: resuming {config.name} in {run_dir} "
                  f"{_position_words(*start, config.fit.epochs, None, 'at')}")
    say = print if lead else _silent
    tracker = _Tracker(config.fit.initial_epoch, lambda: say(header))
    try:
        with _located(locate):
            callbacks = _callbacks(built, run_dir)
        if fresh and lead:
            resolved = {**schema.to_dict(config), "environment": _environment()}
            with open(os.path.join(run_dir, "config.yaml"), "w",
                      encoding="utf-8") as f:
                config_lib._yaml().safe_dump(resolved, f, sort_keys=False)
        logging = _logging_to(os.path.join(run_dir, "run.log")) if lead else (
            contextlib.nullcontext())
        with logging:
            try:
                history, metrics = _train(config, prepared, [tracker, *callbacks],
                                          run_dir, say, lead)
            except KeyboardInterrupt:
                if fresh and not tracker.started:
                    raise  # nothing trained yet: nothing is left (below)
                # fit has stopped its background work (feeders, checkpoint writes)
                # in its `finally` before this runs
                line = (f"jaxfit run: interrupted {_stopped_at(trainer, tracker)}; "
                        + (f"resume with: jaxfit run --resume {run_dir}"
                           if config.backup is not False else
                           "it ran with backup: false, so it cannot be resumed"))
                if lead:
                    print(line, file=sys.stderr, flush=True)
                raise RunInterrupted(line, run_dir) from None
    except RunInterrupted:
        raise
    except (TypeError, ValueError, KeyboardInterrupt) as error:
        if tracker.started:
            raise  # training had begun: the run directory stays (--resume)
        # the fit call's own checks refused the config, or Ctrl-C came before
        # training began: leave nothing behind
        if fresh and lead:
            shutil.rmtree(run_dir, ignore_errors=True)
            if made_workdir:
                with contextlib.suppress(OSError):  # only if still empty
                    os.rmdir(workdir)
        if isinstance(error, (ConfigError, KeyboardInterrupt)):
            raise
        with _located(locate):
            raise _trainer_error(config, error) from None
    return RunResult(run_dir, history, metrics)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) ended a run; the message says where and how to resume.

    Attributes:
      run_dir: the run directory (``jaxfit run --resume RUN_DIR`` continues it).
    """

    def __init__(self, message: str, run_dir: str):
        super().__init__(message)
        self.run_dir = run_dir


def _train(config: RunConfig, prepared: _Prepared, callbacks: list[Any],
           run_dir: str, say: Callable[..., None], lead: bool
           ) -> tuple[Any, dict[str, Any]]:
    """Fits, evaluates on the test split, and writes the run directory's files."""
    data, trainer, arguments = prepared.data, prepared.trainer, prepared.arguments
    if _streaming(data):
        history = trainer.fit_dataset(data.train, validation_data=data.validation,
                                      callbacks=callbacks, **arguments)
    else:
        history = trainer.fit(data.x_train, data.y_train, callbacks=callbacks,
                              **arguments)
    metrics: dict[str, Any] = {"final_epoch": {
        key: values[-1] for key, values in history.history.items()}}
    ending, lines = _ending(config, callbacks, history)
    metrics.update(ending)
    for line in lines:
        say(line)
    if _streaming(data) and data.test is not None:
        metrics["test"] = trainer.evaluate_dataset(data.test)
    elif not _streaming(data) and data.x_test is not None:
        metrics["test"] = trainer.evaluate(data.x_test, data.y_test,
                                           batch_size=config.fit.batch_size)
    if "test" in metrics:
        say("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in metrics["test"].items()))
    if lead:
        _write_json(os.path.join(run_dir, "history.json"), history.to_dict())
        history.to_csv(os.path.join(run_dir, "history.csv"))
        _write_json(os.path.join(run_dir, "metrics.json"), metrics)
        _plot(history, os.path.join(run_dir, "curves.png"))
    trainer.save(os.path.join(run_dir, "checkpoint"),  # every process: orbax
                 metadata={"config": schema.to_dict(config)})
    say(f"run directory: {run_dir}")
    return history, metrics


def _ending(config: RunConfig, callbacks: list[Any], history: Any
            ) -> tuple[dict[str, Any], list[str]]:
    """How training ended, for metrics.json and run.log: the last epoch, whether
    a callback stopped it early, and which epoch's weights the run ends with (the
    test evaluation's and checkpoint/'s). Epochs count from 1, as printed."""

    last = history.epoch[-1] + 1 if history.epoch else config.fit.initial_epoch
    out: dict[str, Any] = {"last_epoch": last, "weights_epoch": last,
                           "weights": "the last epoch's"}
    lines = []
    names = [c.name for c in config.callbacks]
    built = [c for c in callbacks if not isinstance(c, _Tracker)]
    for i, callback in enumerate(built[:len(names)]):
        if not isinstance(callback, callbacks_lib.EarlyStopping):
            continue
        who = f"callbacks[{i}] {names[i]}"
        if callback.stopped_epoch > 0:
            out["stopped_early"] = {"by": who, "epoch": callback.stopped_epoch + 1,
                                    "monitor": callback.monitor,
                                    "patience": callback.patience}
            lines.append(f"early stopping: {who} ended the run after epoch "
                         f"{callback.stopped_epoch + 1}/{config.fit.epochs}: "
                         f"{callback.monitor} did not improve for "
                         f"{callback.patience} epoch"
                         f"{'' if callback.patience == 1 else 's'}")
        if callback.restore_best_weights and callback.best_weights is not None:
            out["weights_epoch"] = callback.best_epoch + 1
            out["weights"] = (f"restored by {who} (restore_best_weights): the best "
                              f"{callback.monitor}, {callback.best:.6g}")
            lines.append(f"weights: epoch {callback.best_epoch + 1}'s, restored by "
                         f"{who} (best {callback.monitor}: {callback.best:.4f}); "
                         "checkpoint/ and the test evaluation use them")
    if "stopped_early" not in out and last < config.fit.epochs:
        out["stopped_early"] = {"by": "stop_training", "epoch": last}
        lines.append(f"stopped: training ended after epoch {last}/{config.fit.epochs} "
                     "(stop_training)")
    return out, lines


def _position_words(epoch: int, batch: int, epochs: int | None, steps: int | None,
                    preposition: str = "in") -> str:
    """Where a run stands, 1-based as the progress lines count: ``in epoch 3/4
    after batch 2/8``, ``after epoch 2/4``; ``preposition="at"`` for where one
    starts (``at epoch 3/4``)."""
    def of(n: int, total: int | None) -> str:
        return f"{n}/{total}" if total else str(n)

    if preposition == "at":
        words = f"at epoch {of(epoch + 1, epochs)}"
        return words + (f", after batch {of(batch, steps)}" if batch else "")
    if batch == 0:
        return "before the first batch" if epoch == 0 else (
            f"after epoch {of(epoch, epochs)}")
    return f"in epoch {of(epoch + 1, epochs)} after batch {of(batch, steps)}"


class _Tracker(callback_lib.Callback):
    """Whether training has begun (``fit`` passed its checks: ``begin`` is called
    then), and where it stands as its callbacks see it: ``(epoch, batches
    done)``."""

    def __init__(self, epoch: int, begin: Callable[[], None]):
        super().__init__()
        self.epoch, self.batch = epoch, 0
        self.started = False
        self._begin = begin

    def on_train_begin(self, logs=None):
        self.started = True
        self._begin()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.batch = epoch, 0

    def on_yield(self, epoch, batch, logs=None):
        self.epoch, self.batch = epoch, batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.batch = epoch + 1, 0


def _stopped_at(trainer: Any, tracker: _Tracker) -> str:
    """Where an interrupted fit stopped: as of ``trainer.state`` where the trainer
    tells (the steps dispatched before Ctrl-C finish), else as of the last yield
    point."""
    position = getattr(getattr(trainer, "session", None), "position", None) or (
        getattr(trainer, "_position", None))
    epoch, batch = (position.epoch, position.batch) if hasattr(
        position, "batch") else (tracker.epoch, tracker.batch)
    params = trainer.history.params if trainer.history is not None else {}
    return _position_words(epoch, batch, params.get("epochs"), params.get("steps"))


def _resume_point(config: RunConfig, run_dir: str) -> tuple[int, int]:
    """``(epoch, batch)`` (0-based) where ``--resume`` continues: the newest
    complete backup's position, or the start."""

    backups = callbacks_lib.BackupAndRestore(
        os.path.join(run_dir, "backup"))._backups()
    if not backups:
        return config.fit.initial_epoch, 0
    position = orbax_io.read_info(backups[-1][1]).get("position") or {}
    return int(position.get("epoch", 0)), int(position.get("batch", 0))


_EPOCH_LINE = re.compile(r"^Epoch (\d+)[/:]")


def _trim_for_resume(config: RunConfig, run_dir: str, epoch: int) -> None:
    """Drops what the epochs from ``epoch`` (0-based) on left in run.log (``Epoch
    N/..`` and ``Epoch N: ..`` lines) and in CSVLogger files: the resumed run
    writes them again."""
    path = os.path.join(run_dir, "run.log")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        kept = [line for line in lines if not (
            (match := _EPOCH_LINE.match(line)) and int(match.group(1)) > epoch)]
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
    for callback in config.callbacks:
        if callback.name != "CSVLogger":
            continue
        args = _in_run_dir(callback.args, run_dir)
        path, separator = args.get("filename"), args.get("separator", ",")
        if not isinstance(path, str) or not os.path.isfile(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter=separator))
        kept_rows = rows[:1] + [row for row in rows[1:]
                                if row and row[0].isdigit() and int(row[0]) < epoch]
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=separator).writerows(kept_rows)


def _appending_csv(config: RunConfig) -> RunConfig:
    """A resumed run's CSVLoggers append to what the first part wrote."""
    return dataclasses.replace(config, callbacks=[
        dataclasses.replace(c, args={**c.args, "append": True})
        if c.name == "CSVLogger" else c for c in config.callbacks])


def _unlocated(message: str) -> str:
    return message


def _silent(*args: Any, **kwargs: Any) -> None:
    del args, kwargs


def _process_index() -> int:
    """This process's index (0 writes the run directory); a seam for tests."""
    return jax.process_index()


def _shared_path(path: str | None) -> str:
    """Process 0's ``path``, on every process."""
    if jax.process_count() == 1:
        assert path is not None
        return path
    from jax.experimental import multihost_utils

    buffer = np.zeros(_MAX_PATH, np.uint8)
    if path is not None:
        encoded = os.fsencode(path)
        if len(encoded) > _MAX_PATH:
            raise ValueError(f"workdir: the run directory path is longer than "
                             f"{_MAX_PATH} bytes: {path!r}")
        buffer[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8)
    return os.fsdecode(shared.tobytes().rstrip(b"\0"))


def _plot(history: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure = history.plot()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def show(run_dir: str | os.PathLike[str]) -> str:
    """A summary of a finished (or running) run directory."""
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"run_dir: expected a jaxfit run directory (with "
                          f"config.yaml), got {run_dir!r}.")
    with open(path, encoding="utf-8") as f:
        config = config_lib._yaml().safe_load(f)
    environment = config.get("environment") or {}
    lines = [f"run: {config['name']}  ({run_dir})",
             f"model: {config['model']['name']} {config['model']['args'] or ''}".rstrip(),
             f"data: {config['data']['name']} {config['data']['args'] or ''}".rstrip(),
             f"optimizer: {config['optimizer']['name']} "
             f"learning_rate={config['optimizer']['learning_rate']}",
             f"created: {environment.get('created', '?')} on "
             f"{environment.get('backend', '?')}, jax "
             f"{environment.get('versions', {}).get('jax', '?')}"]
    history_path = os.path.join(run_dir, "history.json")
    if not os.path.isfile(history_path):
        backup = os.path.isdir(os.path.join(run_dir, "backup"))
        lines.append("status: not finished" + (" (resume with jaxfit run --resume "
                                               f"{run_dir})" if backup else ""))
        stopped = _last_interruption(run_dir)
        if stopped:
            lines.append(f"last: {stopped}")
        return "\n".join(lines)
    with open(history_path, encoding="utf-8") as f:
        history = json.load(f)
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    # Epochs count from 1 here, as in the progress lines and run.log (history.json's
    # "epoch" list is History.epoch: 0-based, as Keras').
    epochs = config.get("fit", {}).get("epochs")
    lines.append(f"epochs: {len(history['epoch'])}" + (
        f" (the last: {metrics['last_epoch']}/{epochs})" if "last_epoch" in metrics
        else ""))
    stopped = metrics.get("stopped_early")
    if stopped:
        lines.append(f"stopped early: by {stopped['by']} after epoch "
                     f"{stopped['epoch']}")
    if "weights_epoch" in metrics:
        lines.append(f"weights: epoch {metrics['weights_epoch']}'s "
                     f"({metrics.get('weights', '')})")
    lines.append("final epoch: " + _format(metrics["final_epoch"]))
    if "val_loss" in history:
        values = history["val_loss"]
        epochs_of = history["epoch"][-len(values):]
        best = int(np.nanargmin(values))
        lines.append(f"best val_loss: {values[best]:.4f} at epoch "
                     f"{epochs_of[best] + 1}")
    if "test" in metrics:
        lines.append("test: " + _format(metrics["test"]))
    lines.append("files: " + ", ".join(sorted(os.listdir(run_dir))))
    return "\n".join(lines)


def _last_interruption(run_dir: str) -> str | None:
    """The last ``jaxfit run: interrupted ...`` line of run.log, if any."""
    path = os.path.join(run_dir, "run.log")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        found = [line.strip() for line in f
                 if line.startswith("jaxfit run: interrupted")]
    return found[-1].removeprefix("jaxfit run: ").split(";")[0] if found else None


def _format(values: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
