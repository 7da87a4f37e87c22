"""Building a run from a checked config: the data, the model, the trainer and the
callbacks (paths made relative to the run directory).

A dataset's ``preprocess`` is part of the model (``_model``): the builder gets
``sample_x = preprocess(two samples)``, and the ``Model`` the trainer trains
applies ``preprocess`` first, inside the compiled steps, so the trained model
(and ``jaxfit.load_run``'s) takes the dataset's raw inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from jaxfit._src.core.model import Model
from jaxfit._src.driver.trainer import Trainer
from jaxfit._src.runner import datasets, optim, population, registry, zoo
from jaxfit._src.runner.checks import (
    _check_fit,
    _check_test_split,
    _first_line,
    _trainer_error,
    fit_arguments,
)
from jaxfit._src.runner.schema import ConfigError, RunConfig

DEFAULTS = {
    "classification": ("sparse_categorical_crossentropy_from_logits", ["accuracy"]),
    "regression": ("mse", ["mae"]),
}


def _data(config: RunConfig) -> datasets.Dataset | datasets.StreamDataset:
    loader = registry.lookup(config.data.name, datasets.DATASETS, "data.name")
    return datasets.as_dataset(
        registry.call(loader, config.data.args, {"seed": config.seed}), "data.name"
    )


@dataclasses.dataclass
class _Prepared:
    """What a run needs before its run directory exists, every check passed."""

    data: Any
    trainer: Any
    arguments: dict[str, Any]


def _model(config: RunConfig, data: Any) -> Any:
    """The model from ``model.name`` on two samples of the data (preprocessed),
    with the data's ``preprocess`` in front of it (``_preprocessed``)."""

    builder = registry.lookup(config.model.name, zoo.MODELS, "model.name")
    builtin = builder in zoo.MODELS.values()
    sample_x = _sample_x(config, data)
    try:
        model = registry.call(
            builder,
            config.model.args,
            {
                "sample_x": sample_x,
                "num_outputs": data.num_outputs,
                "seed": config.seed,
            },
        )
    except ConfigError:
        raise
    except Exception as error:
        if not builtin and not isinstance(error, (TypeError, ValueError)):
            raise  # a bug in user code: its own traceback
        shapes = jax.tree.map(lambda a: tuple(np.shape(a)), sample_x)
        after = " after the dataset's preprocess" if data.preprocess else ""
        raise ConfigError(
            f"model.name: expected {config.model.name!r} with model.args "
            f"{dict(config.model.args)} to build on the data of data.name "
            f"{config.data.name!r} (sample x of shape {shapes}{after}), got "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None
    if not isinstance(model, Model):
        raise ConfigError(
            f"model.name: expected {config.model.name!r} to build a "
            f"jaxfit.Model (see jaxfit.from_flax), got "
            f"{type(model).__name__}."
        )
    return _preprocessed(model, data.preprocess)


def _sample_x(config: RunConfig, data: Any) -> Any:
    """Two samples of the data's inputs, through its ``preprocess`` (if any)."""
    if data.preprocess is None:
        return data.sample_x
    try:
        return jax.tree.map(np.asarray, data.preprocess(data.sample_x))
    except (TypeError, ValueError) as error:  # others: a bug, its own traceback
        shapes = jax.tree.map(lambda a: tuple(np.shape(a)), data.sample_x)
        raise ConfigError(
            f"data.name: expected the 'preprocess' of {config.data.name!r} to take "
            f"a batch of its inputs (sample x of shape {shapes}), got "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None


def _preprocessed(model: Model, preprocess: Any) -> Model:
    """``model`` whose apply function runs ``preprocess`` on ``x`` first. It wraps
    the apply function (``functools.wraps``), so the Trainer sees the same
    keyword arguments (``train``, ``rng``, ``state``, ``mask``) and passes them on.
    """
    if preprocess is None:
        return model
    apply_fn = model.apply_fn

    @functools.wraps(apply_fn)
    def apply(params: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        return apply_fn(params, preprocess(x), *args, **kwargs)

    return dataclasses.replace(model, apply_fn=apply)


def _trainer(config: RunConfig, data: Any) -> Trainer:
    """The model (``_model``) and the Trainer with the config's optimizer, loss,
    metrics, loss_weights, seed and precision (the task's defaults where unset),
    and its ``population`` (``runner.population``); what ``run`` trains and ``jaxfit.load_run`` restores a checkpoint into.

    Raises:
      ConfigError: the model does not build, or the Trainer refuses the config
        (on the key it is about: ``_trainer_error``).
    """
    members = population.trainer_arguments(config)  # {} without a population
    if members:  # member i starts from the model a run of seed + i builds
        model = population.seeded_model(
            lambda seed: _model(dataclasses.replace(config, seed=seed), data),
            config.seed,
            members["hyperparams"][population.SEED],
        )
    else:
        model = _model(config, data)
    loss, metrics = DEFAULTS[data.task]
    weighted = population.LOSS_WEIGHTS in members.get("hyperparams", {})
    try:
        return Trainer(
            model,
            optimizer=optim.build(config.optimizer),
            loss=config.loss if config.loss is not None else loss,
            metrics=config.metrics if config.metrics is not None else metrics,
            loss_weights=None if weighted else config.loss_weights,
            seed=config.seed,
            precision=config.precision,
            **members,
        )
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise _trainer_error(config, error) from None


def _prepare(config: RunConfig, check_fit: bool = True) -> _Prepared:
    """The data, the model and the trainer, and every check of the fit call that
    ``Trainer.fit`` makes before its first step (``check_fit``: what ``jaxfit
    validate`` runs; ``run`` has the real call make them, see ``_train``)."""

    data = _data(config)
    arguments = fit_arguments(config, data)
    trainer = _trainer(config, data)
    try:
        if check_fit:
            data = _check_fit(data, trainer, arguments)
        _check_test_split(config, data, trainer)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise _trainer_error(config, error) from None
    return _Prepared(data, trainer, arguments)
