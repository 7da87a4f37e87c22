"""Optimizers by optax name, with learning-rate schedules, always injectable.

The optimizer is built as ``optax.inject_hyperparams(optax.<name>)(learning_rate=
..., **args)``, so the rate is logged as ``learning_rate``, saved in checkpoints,
and controllable by ``ReduceLROnPlateau`` / ``LearningRateScheduler`` without
recompiling: a constant rate is replaced, a schedule is scaled or taken over
(``Trainer.learning_rate``). ``check_lr_control`` refuses those callbacks where
they could not act (a schedule whose updates are not proportional to the rate).

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

from jaxfit._src.core import hyperparams
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


LR_CALLBACKS = ("ReduceLROnPlateau", "LearningRateScheduler")


def check_lr_control(optimizer: OptimizerConfig, callbacks: list[Any]) -> None:
    """Refuses ``ReduceLROnPlateau`` / ``LearningRateScheduler`` when they could
    not act on the config's optimizer: its state holds no injected rate, or its
    rate is a schedule (controlled by scaling the updates) and its updates are
    not proportional to the rate (probed: two steps at ``r`` and ``2 r``).

    Raises:
      ConfigError: naming ``callbacks[i].name``.
    """
    for i, callback in enumerate(callbacks):
        name = callback.name.replace(":", ".").rsplit(".", 1)[-1]
        if name not in LR_CALLBACKS:
            continue
        problem = _uncontrollable(optimizer)
        if problem:
            raise ConfigError(
                f"callbacks[{i}].name: {name} cannot act on optimizer "
                f"optax.{optimizer.name}: {problem}."
            )


def _uncontrollable(config: OptimizerConfig) -> str:
    """Why the rate cannot be controlled ("" when it can); the probe: along two
    steps at a constant rate ``r``, the update at ``2 r`` from the same state."""
    optimizer = build(dataclasses.replace(config, learning_rate=1e-2))
    params = {"w": np.array([0.3, -0.7, 1.1], np.float32)}
    grads = {"w": np.array([0.5, 0.2, -0.4], np.float32)}
    state = optimizer.init(params)
    rate = hyperparams.get(state)
    if rate is None:
        return "its state holds no injected learning_rate"
    for _ in range(2):
        double = hyperparams.replace(state, 2 * rate)
        twice = optimizer.update(grads, double, params)[0]["w"]
        updates, state = optimizer.update(grads, state, params)
        if isinstance(config.learning_rate, ScheduleConfig) and not np.allclose(
            twice, 2 * updates["w"], rtol=1e-4, atol=1e-8
        ):
            return (
                "its learning_rate is a schedule, which these callbacks control "
                "by scaling the updates, and its updates are not proportional to "
                "the rate; give a constant learning_rate"
            )
        params = optax.apply_updates(params, updates)
    return ""
