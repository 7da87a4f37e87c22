"""Optimizers by optax name, with learning-rate schedules, always injectable.

The optimizer is built as ``optax.inject_hyperparams(optax.<name>)(learning_rate=
..., **args)``, so the rate is logged as ``learning_rate``, saved in checkpoints,
and controllable by ``ReduceLROnPlateau`` / ``LearningRateScheduler`` (a constant
rate) without recompiling.
"""

from __future__ import annotations

from typing import Any

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
    if config.name.startswith("_") or not callable(factory) or isinstance(
            factory, type):
        raise ConfigError(f"optimizer.name: expected an optax optimizer such as "
                          f"'adam', 'adamw', 'sgd', got {config.name!r}.")
    return factory


def check(config: OptimizerConfig) -> None:
    """Raises ``ConfigError`` for an unknown optimizer, schedule or argument."""
    factory = _factory(config)
    registry.check_args(factory, config.args, "optimizer.args",
                        provided=("learning_rate",))
    if isinstance(config.learning_rate, ScheduleConfig):
        schedule = SCHEDULES[config.learning_rate.schedule]
        registry.check_args(schedule, config.learning_rate.args,
                            "optimizer.learning_rate.args")


def build(config: OptimizerConfig) -> optax.GradientTransformation:
    check(config)
    rate = config.learning_rate
    if isinstance(rate, ScheduleConfig):
        rate = SCHEDULES[rate.schedule](**rate.args)
    return optax.inject_hyperparams(_factory(config))(learning_rate=rate, **config.args)
