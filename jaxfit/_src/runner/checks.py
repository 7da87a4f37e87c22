"""Config checks: everything `jaxfit validate` runs and `jaxfit run` runs before
training (the schema's by-value checks, names, the fit section against the data,
the trainer's own fit checks unstarted), each error located in the YAML file.

``check`` goes section by section: model, data, optimizer, loss, metrics,
callbacks (built by ``run_callbacks``, whose docstring says where their paths
may point), the compilation cache, the population (``population.check``),
tracking (``tracking.check``: no store is made), then the fit values, and last
the sections that the layers above the runner read (``SECTION_CHECKS``).

``SECTION_CHECKS`` is how a section the runner only carries is checked by
``jaxfit validate`` without an upward import: the package that reads it
registers its checks (``register_section``) when it is imported (the
``sweep:`` section: ``jaxfit._src.sweep.spec``). A section of ``CHECKED_ABOVE``
whose package was not imported is a ``ConfigError``, never left unchecked.
``jaxfit run`` refuses a ``sweep:`` section before anything is written
(``check(config, run=True)``).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, cast

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import errors
from jaxfit._src.core import losses
from jaxfit._src.core import metric_objects as metrics_lib
from jaxfit._src.driver import trainer as trainer_lib
from jaxfit._src.driver import validate as validate_lib
from jaxfit._src.driver import yield_policy
from jaxfit._src.runner import (
    compile_cache,
    datasets,
    monitor_checks,
    optim,
    population,
    registry,
    run_callbacks,
    schema,
    tracking,
    zoo,
)
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


# {section: (check(config), check(config, data, trainer) or None)}, filled by
# ``register_section``; run for a config whose section is not None.
SECTION_CHECKS: dict[
    str,
    tuple[Callable[[RunConfig], None], Callable[[RunConfig, Any, Any], None] | None],
] = {}


# The sections a package above the runner reads and checks (``register_section``).
CHECKED_ABOVE = {"sweep": "jaxfit._src.sweep"}


def register_section(
    name: str,
    check: Callable[[RunConfig], None],
    with_data: Callable[[RunConfig, Any, Any], None] | None = None,
) -> None:
    """Registers the checks of the top-level section ``name`` (a ``RunConfig``
    field the runner does not read itself), run by ``check`` (``check(config)``)
    and, once the data and the trainer are built (``jaxfit validate``, ``jaxfit
    run``), by the test split's checks (``with_data(config, data, trainer)``).
    Each raises ``ConfigError`` naming its key path."""
    SECTION_CHECKS[name] = (check, with_data)


def _refuse_sweep(config: RunConfig) -> None:
    """``jaxfit run`` of a config with a ``sweep:`` section: a one-line error."""
    if getattr(config, "sweep", None) is not None:
        raise ConfigError(
            f"sweep: config {config.name!r} has a sweep: section (many runs): run "
            "it with `jaxfit sweep CONFIG`, or remove the section."
        )


def _leaves(spec: Any) -> list[tuple[str, Any]]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [(f".{k}", v) for k, v in spec.items()]
    if isinstance(spec, list):
        return [(f"[{i}]", v) for i, v in enumerate(spec)]
    return [("", spec)]


def check(config: RunConfig, *, run: bool = False) -> RunConfig:
    """Every check that needs no data: names, imports, arguments and their values.

    Args:
      config: the config, as the schema made it.
      run: for ``jaxfit run``: a ``sweep:`` section is refused first. Defaults to
        `False`.

    Returns:
      The config with the arguments of the callables it names converted by their
      signatures (``peak_value: 3e-3`` read as a string by PyYAML is a float).

    Raises:
      ConfigError: naming the config key.
    """
    if run:
        _refuse_sweep(config)
    model_args, data_args = _model_and_data_args(config)
    optimizer = optim.check(config.optimizer)
    _check_losses(config)
    _check_metrics(config)
    callbacks = _checked_callbacks(config)
    optim.check_lr_control(optimizer, callbacks)
    compile_cache.checked(config.compilation_cache)
    config = population.check(dataclasses.replace(config, optimizer=optimizer))
    tracking.check(config)
    _check_fit_values(config)
    _trains_something(config)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, args=model_args),
        data=dataclasses.replace(config.data, args=data_args),
        optimizer=optimizer,
        callbacks=callbacks,
    )
    for name, package in CHECKED_ABOVE.items():
        if getattr(config, name, None) is None:
            continue
        if name not in SECTION_CHECKS:  # never unchecked: a wiring bug, said
            raise ConfigError(
                f"{name}: this section is checked by {package}, which was not "
                f"imported (import {package} first)."
            )
        SECTION_CHECKS[name][0](config)
    return config


def _model_and_data_args(config: RunConfig) -> tuple[Any, Any]:
    """``model.args`` and ``data.args`` checked against (and converted by) the
    signatures of the model builder and the dataset loader they name."""
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
    return model_args, data_args


def _check_losses(config: RunConfig) -> None:
    """Each loss name (or import path) of ``loss`` resolves."""
    for suffix, name in _leaves(config.loss):
        if registry.is_import_path(name):
            registry.import_callable(name, f"loss{suffix}")
            continue
        try:
            losses.get(name)
        except (ValueError, TypeError) as error:
            raise schema.keyed(f"loss{suffix}", error, "loss") from None


def _check_metrics(config: RunConfig) -> None:
    """Each metric name of ``metrics`` (per output, if a mapping) resolves."""
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


def _checked_callbacks(config: RunConfig) -> list[Any]:
    """The config's callbacks with their arguments converted by the classes'
    signatures, once each has been built in a temporary run directory (the
    constructors check the values)."""
    callbacks = []
    for i, callback in enumerate(config.callbacks):
        cls = run_callbacks._callback_class(callback.name, f"callbacks[{i}].name")
        args = registry.check_args(
            cls,
            callback.args,
            f"callbacks[{i}].args",
            strict=not registry.is_import_path(callback.name),
        )
        callbacks.append(dataclasses.replace(callback, args=args))
    with tempfile.TemporaryDirectory() as run_dir:  # constructors check the values
        run_callbacks._callbacks(
            dataclasses.replace(config, callbacks=callbacks), run_dir, backup=False
        )
    return callbacks


def _check_fit_values(config: RunConfig) -> None:
    """The trainer's own checks of the fit values (``_FIT_CHECKS``)."""
    for name, check_value in _FIT_CHECKS.items():
        if hasattr(config.fit, name):
            try:
                check_value(getattr(config.fit, name))
            except (ValueError, TypeError) as error:
                raise schema.keyed(f"fit.{name}", error, name) from None


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
    path: str | os.PathLike[str],
    overrides: tuple[str, ...] | list[str] = (),
    *,
    run: bool = False,
) -> tuple[RunConfig, Callable[[str], str]]:
    config, _, locate = config_lib.load_located(path, overrides)
    with _located(locate):
        config = check(config, run=run)
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
    monitor_checks.check(config, data, trainer)  # every callback monitor: logged
    for name, (_, with_data) in SECTION_CHECKS.items():
        if with_data is not None and getattr(config, name, None) is not None:
            with_data(config, data, trainer)
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


_MODEL_KEYS = ("sample_x", "num_outputs", "seed")
