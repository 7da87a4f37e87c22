"""Optimizers by optax name, with learning-rate schedules, always injectable.

The optimizer is built as ``optax.inject_hyperparams(optax.<name>)(learning_rate=
..., **args)``, so the rate is logged as ``learning_rate``, saved in checkpoints,
and controllable by ``ReduceLROnPlateau`` / ``LearningRateScheduler`` (a constant
rate) without recompiling.

``check`` reads the optax function's and the schedule's signatures: a numeric
argument (``float``, or optax's ``Numeric`` / ``ScalarOrSchedule``) must be a
number, and ``3e-3`` (a string to PyYAML) becomes ``0.003``. It then builds the
optimizer and runs its ``init`` and ``update`` abstractly (``jax.eval_shape``, no
compile) on a small parameter, so a value optax refuses is a config error too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import optax

from jaxfit._src.runner import registry
from jaxfit._src.runner.schema import ConfigError, OptimizerConfig, ScheduleConfig

SCHEDULES = {
    "constant": optax.constant_schedule,
    "cosine": optax.cosine_decay_schedule,
    "warmup_cosine": optax.warmup_cosine_decay_schedule,
    "exponential": optax.exponential_decay,
    "piecewise": optax.piecewise_constant_schedule,
}


def _factory(config: OptimizerConfig) -> Any:
    factory = getattr(optax, config.name, None)
    if (
        config.name.startswith("_")
        or not callable(factory)
        or isinstance(factory, type)
    ):
        raise ConfigError(
            f"optimizer.name: expected an optax optimizer such as "
            f"'adam', 'adamw', 'sgd', got {config.name!r}."
        )
    return factory


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def check(config: OptimizerConfig) -> OptimizerConfig:
    """The optimizer config with its arguments converted (YAML floats).

    Raises:
      ConfigError: an unknown optimizer, schedule or argument, an argument of the
        wrong type, or values optax refuses; naming the key.
    """
    factory = _factory(config)
    args = registry.check_args(
        factory, config.args, "optimizer.args", provided=("learning_rate",), strict=True
    )
    rate = config.learning_rate
    if isinstance(rate, ScheduleConfig):
        schedule = SCHEDULES[rate.schedule]
        schedule_args = registry.check_args(
            schedule, rate.args, "optimizer.learning_rate.args", strict=True
        )
        rate = dataclasses.replace(rate, args=schedule_args)
        try:
            schedule(**schedule_args)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"optimizer.learning_rate.args: expected arguments "
                f"optax.{schedule.__name__} accepts, got "
                f"{schedule_args} ({_first_line(error)})"
            ) from None
    checked = dataclasses.replace(config, learning_rate=rate, args=args)
    key = "optimizer.args" if args else "optimizer.name"
    try:
        optimizer = build(checked)
        params = {"w": jax.ShapeDtypeStruct((2,), np.float32)}

        def step(params: Any) -> Any:
            return optimizer.update(params, optimizer.init(params), params)

        jax.eval_shape(step, params)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{key}: expected arguments optax.{config.name} accepts, "
            f"got {dict(args)} (init/update raised "
            f"{_first_line(error)})"
        ) from None
    return checked


def build(config: OptimizerConfig) -> optax.GradientTransformation:
    """The optimizer of a config that ``check`` returned."""
    rate = config.learning_rate
    if isinstance(rate, ScheduleConfig):
        rate = SCHEDULES[rate.schedule](**rate.args)
    return optax.inject_hyperparams(_factory(config))(learning_rate=rate, **config.args)
