"""Config checks: everything `jaxfit validate` runs and `jaxfit run` runs before
training (the schema's by-value checks, names, the fit section against the data,
the trainer's own fit checks unstarted), each error located in the YAML file.

A config's callbacks write inside their run directory only: their ``filepath``
/ ``filename`` / ``log_dir`` / ``backup_dir`` arguments (and such a default, as
TensorBoard's ``log_dir="logs"``) are relative to it; an absolute path, one
that leaves it, the run directory itself, one of the runner's own entries
(``RUN_DIR_ENTRIES``) and two callbacks on one path are refused at validate
time (``_run_path``, ``_distinct``)."""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import inspect
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, cast

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import errors, paths
from jaxfit._src.core import losses
from jaxfit._src.core import metrics as metrics_lib
from jaxfit._src.driver import trainer as trainer_lib
from jaxfit._src.driver import validate as validate_lib
from jaxfit._src.driver import yield_policy
from jaxfit._src.runner import compile_cache, datasets, optim, registry, schema, zoo
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner.schema import ConfigError, RunConfig

# The trainer's own checks of fit values that a type does not express; run by
# ``check`` so that ``jaxfit validate`` reports them with the key path.
_FIT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "validation_split": validate_lib.validation_split,
    "validation_freq": validate_lib.validation_freq,
    "class_weight": validate_lib.class_weight,
    "yield_every": yield_policy.parse,
}


# The same thing under the other method's name (tfjs' validationBatches is
# Keras' validation_steps).
_COUNTERPARTS = {
    "validation_batches": "validation_steps",
    "validation_steps": "validation_batches",
}


def _callback_class(name: str, key: str) -> Any:

    if registry.is_import_path(name):
        return registry.import_callable(name, key)
    if name not in callbacks_lib.__all__ or name in ("Callback", "MonitorCallback"):
        choices = [
            n
            for n in callbacks_lib.__all__
            if n not in ("Callback", "MonitorCallback", "History")
        ]
        raise ConfigError(
            f"{key}: unknown callback {name!r}; expected one of "
            f"{choices} or 'package.module:callable'."
        )
    return getattr(callbacks_lib, name)


def _leaves(spec: Any) -> list[tuple[str, Any]]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [(f".{k}", v) for k, v in spec.items()]
    if isinstance(spec, list):
        return [(f"[{i}]", v) for i, v in enumerate(spec)]
    return [("", spec)]


def _argument_error(
    key: str, error: BaseException, names: Any, owner: str
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
    model_args = registry.check_args(
        builder,
        config.model.args,
        "model.args",
        _MODEL_KEYS,
        strict=builder in zoo.MODELS.values(),
    )
    loader = registry.lookup(config.data.name, datasets.DATASETS, "data.name")
    data_args = registry.check_args(
        loader,
        config.data.args,
        "data.args",
        ("seed",),
        strict=loader in datasets.DATASETS.values(),
    )
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
    metric_specs = (
        config.metrics.items()
        if isinstance(config.metrics, dict)
        else [("", config.metrics)]
    )
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
        args = registry.check_args(
            cls,
            callback.args,
            f"callbacks[{i}].args",
            strict=not registry.is_import_path(callback.name),
        )
        callbacks.append(dataclasses.replace(callback, args=args))
    with tempfile.TemporaryDirectory() as run_dir:  # constructors check the values
        _callbacks(
            dataclasses.replace(config, callbacks=callbacks), run_dir, backup=False
        )
    compile_cache.checked(config.compilation_cache)
    for name, check_value in _FIT_CHECKS.items():
        if hasattr(config.fit, name):
            try:
                check_value(getattr(config.fit, name))
            except (ValueError, TypeError) as error:
                raise schema.keyed(f"fit.{name}", error, name) from None
    _trains_something(config)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, args=model_args),
        data=dataclasses.replace(config.data, args=data_args),
        optimizer=optimizer,
        callbacks=callbacks,
    )


def _trains_something(config: RunConfig) -> None:
    """A run trains at least one epoch: ``fit.initial_epoch`` < ``fit.epochs``
    (``Trainer.fit`` itself, as Keras, takes ``initial_epoch >= epochs`` as
    nothing to do; a run would end with no history to write).

    Raises:
      ConfigError: naming ``fit.initial_epoch``.
    """
    fit = cast(Any, config.fit)
    epochs, initial = getattr(fit, "epochs", None), getattr(fit, "initial_epoch", 0)
    if isinstance(epochs, int) and isinstance(initial, int) and initial >= epochs:
        raise ConfigError(
            errors.expected(
                "fit.initial_epoch",
                f"an epoch before fit.epochs ({epochs}: the index of the final "
                "epoch, as in Keras)",
                initial,
                "The run would train nothing: raise fit.epochs.",
            )
        )


def load(
    path: str | os.PathLike[str], overrides: tuple[str, ...] | list[str] = ()
) -> RunConfig:
    """The validated config at ``path`` (with ``--set`` overrides), fully checked."""
    return _load(path, overrides)[0]


def _load(
    path: str | os.PathLike[str], overrides: tuple[str, ...] | list[str] = ()
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
        trainer_cls.fit_dataset if streaming else trainer_cls.fit
    )
    defaults = schema.defaults(type(config.fit))
    arguments = {}
    for name, value in schema.to_dict(config.fit).items():
        if name in accepted:
            arguments[name] = value
        elif name not in defaults or value != defaults[name]:
            raise ConfigError(_misplaced(config, name, streaming))
    if (
        streaming
        and data.validation is None
        and arguments.get("validation_batches") is not None
    ):
        raise ConfigError(
            f"fit.validation_batches: the dataset from data.name "
            f"{config.data.name!r} has no 'validation' stream to "
            "limit; return one with the 'train' stream, or remove "
            "fit.validation_batches."
        )
    return arguments


def _misplaced(config: RunConfig, name: str, streaming: bool) -> str:
    if streaming:
        what = (
            "applies to in-memory arrays only (Trainer.fit); the dataset from "
            f"data.name {config.data.name!r} returns streams, trained with "
            "Trainer.fit_dataset"
        )
    else:
        what = (
            "applies to streams of batches only (Trainer.fit_dataset); the dataset "
            f"from data.name {config.data.name!r} returns arrays, trained with "
            "Trainer.fit"
        )
    other = _COUNTERPARTS.get(name)
    kind = "streams" if streaming else "arrays"
    fix = f"use fit.{other} (the same limit, for {kind})" if other else "remove it"
    return f"fit.{name}: {what}; {fix}."


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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
    fit_fields = {f.name for f in dataclasses.fields(cast(Any, config.fit))}
    if name in fit_fields:
        return schema.keyed(f"fit.{name}", message, name)
    if name in _TOP_LEVEL:
        return ConfigError(message)
    if name in _MODEL_ARGS or "the model cannot be applied" in message:
        return ConfigError(
            f"model.name: expected {config.model.name!r} to take the "
            f"data of data.name {config.data.name!r}: {message}"
        )
    leaf = name.rsplit(": ", 1)[-1]
    if leaf.startswith("y") and config.loss is not None:
        return ConfigError(
            f"loss: expected labels that suit it from data.name "
            f"{config.data.name!r}: {message}"
        )
    if leaf.startswith("y") and config.metrics is not None:
        return ConfigError(
            f"metrics: expected labels that suit them from data.name "
            f"{config.data.name!r}: {message}"
        )
    return ConfigError(
        f"data.name: expected data from {config.data.name!r} that "
        f"suits the config: {message}"
    )


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
            trainer.fit_dataset(
                train,
                validation_data=data.validation,
                callbacks=[_stop_before_training()],
                **arguments,
            )
        else:
            trainer.fit(
                data.x_train,
                data.y_train,
                callbacks=[_stop_before_training()],
                **arguments,
            )
    except _Checked:
        pass
    return data


def _check_test_split(config: RunConfig, data: Any, trainer: Any) -> None:
    """The final evaluation's checks on the test arrays (a stream's batches are
    checked as they are read)."""
    if _streaming(data) or data.x_test is None:
        return
    try:
        trainer.evaluate(
            data.x_test,
            data.y_test,
            batch_size=config.fit.batch_size,
            callbacks=[_stop_before_training()],
        )
    except _Checked:
        pass
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"data.name: expected a test split from "
            f"{config.data.name!r} that the model and the loss take, "
            f"got: {error}"
        ) from None


def _unlocated(message: str) -> str:
    return message


_PATH_ARGS = ("filepath", "filename", "log_dir", "backup_dir")  # in the run dir

# What the runner itself writes into a run directory (and the path policy's
# marker): a callback's path may not be one of them or inside one.
RUN_DIR_ENTRIES = (
    "config.yaml",
    "run.log",
    "history.json",
    "history.csv",
    "metrics.json",
    "curves.png",
    "checkpoint",
    "backup",
    paths.MARKER,
)


_MODEL_KEYS = ("sample_x", "num_outputs", "seed")


def _run_path(value: str, run_dir: str, key: str) -> str:
    """``value``, a callback's path argument, inside ``run_dir``.

    A config's callbacks write into their run directory only: a path is
    relative to it, and one that is absolute, leaves it (``..``, a symbolic
    link), names the run directory itself, or names one of the runner's own
    files (``RUN_DIR_ENTRIES``) is refused. (In Python, a callback takes any
    path its own policy allows.)

    Raises:
      ConfigError: naming ``key``.
    """
    fix = (
        "a config's callbacks write into the run directory: give a relative "
        "path such as 'logs' or 'training.csv'"
    )
    if "\0" in value:
        raise ConfigError(
            errors.expected(key, "a path without NUL characters", value).rstrip(".")
        )
    if os.path.isabs(value) or value.startswith("~"):
        raise ConfigError(
            errors.expected(key, "a path relative to the run directory", value, fix)
        )
    relative = os.path.normpath(value) if value.strip() else "."
    first = relative.split(os.sep, 1)[0]
    if relative == "." or first == os.pardir:
        raise ConfigError(
            errors.expected(key, "a path inside the run directory", value, fix)
        )
    if any(first == name or first.startswith(name + ".") for name in RUN_DIR_ENTRIES):
        raise ConfigError(
            errors.expected(
                key,
                "a path that is none of the run directory's own entries "
                f"({', '.join(RUN_DIR_ENTRIES)})",
                value,
                "Name another file or directory.",
            )
        )
    if paths.within(run_dir, relative) is None:  # a symbolic link out of it
        raise ConfigError(
            errors.expected(key, "a path inside the run directory", value, fix)
        )
    return os.path.join(run_dir, relative)


def _in_run_dir(
    args: dict[str, Any], run_dir: str, key: str = "callbacks.args"
) -> dict[str, Any]:
    """The ``filepath`` / ``filename`` / ``log_dir`` / ``backup_dir`` arguments
    made paths in the run directory (see ``_run_path``; ``key`` is the args'
    config key, for the messages).

    Raises:
      ConfigError: a path that is absolute or leaves the run directory.
    """
    args = dict(args)
    for name in _PATH_ARGS:
        if isinstance(args.get(name), str):
            args[name] = _run_path(args[name], run_dir, f"{key}.{name}")
    return args


def _path_defaults(cls: Any) -> dict[str, str]:
    """The path arguments ``cls`` defaults to a string (``TensorBoard``'s
    ``log_dir="logs"``): given explicitly, so they land in the run directory
    rather than in the working directory."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.default
        for name, p in parameters.items()
        if name in _PATH_ARGS and isinstance(p.default, str)
    }


def _distinct(args: dict[str, Any], key: str, taken: list[tuple[str, str]]) -> None:
    """No two callbacks of a config write to one path, or one inside another's
    (``taken``: the earlier ``(relative path, key)``, added to).

    Raises:
      ConfigError: naming this argument and the earlier one.
    """
    for name in _PATH_ARGS:
        value = args.get(name)
        if not isinstance(value, str):
            continue
        relative = os.path.normpath(value)
        for other, other_key in taken:
            if os.path.commonpath([relative, other]) in (relative, other):
                raise ConfigError(
                    errors.expected(
                        f"{key}.{name}",
                        f"a path of its own, not {other_key}'s or one inside it",
                        value,
                    ).rstrip(".")
                )
        taken.append((relative, f"{key}.{name}"))


def _callbacks(config: RunConfig, run_dir: str, backup: bool = True) -> list[Any]:
    """The config's callbacks (paths in ``run_dir``, see ``_run_path``; no two on
    one path), and BackupAndRestore.

    Raises:
      ConfigError: a path refused, or a constructor refusing its arguments,
        naming ``callbacks[i].args.<argument>``.
    """

    built: list[Any] = []
    taken: list[tuple[str, str]] = []
    for i, callback in enumerate(config.callbacks):
        cls = _callback_class(callback.name, f"callbacks[{i}].name")
        key = f"callbacks[{i}].args"
        args = {**_path_defaults(cls), **callback.args}
        resolved = _in_run_dir(args, run_dir, key)
        _distinct(args, key, taken)
        try:
            built.append(cls(**resolved))
        except (TypeError, ValueError) as error:
            raise _argument_error(
                f"callbacks[{i}].args", error, callback.args, callback.name
            ) from None
    if backup and config.backup is not False:
        built.append(
            callbacks_lib.BackupAndRestore(
                os.path.join(run_dir, "backup"), save_freq=config.backup
            )
        )
    return built
