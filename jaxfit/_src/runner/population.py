"""The ``population:`` section: members trained as one program.

``seeds: S`` (default 1) and ``hyperparams: {key path: [K values]}`` make ``K *
S`` members: setting ``k`` takes the ``k``-th value of every list (all lists
have the same length K; no list: K = 1), and member ``i = k * S + s`` trains
with seed ``seed + i``, as ``Trainer(..., population=K * S, hyperparams=...)``
does. Member ``i`` trains as a run of the same config with ``seed: seed + i``
and setting ``k``'s values would (its model built from that seed, its dropout
and shuffling), on the data built once from ``seed``: the data, the model's
shapes and the fit section are shared by every member.

A key path that can vary per member (``VARYING``):

- ``optimizer.learning_rate``, when it is a number (a schedule is shared);
- ``optimizer.args.<name>``, an argument that the optimizer injects as a
  number (``optax.inject_hyperparams``: ``weight_decay``, ``b1``, ``momentum``);
- ``loss_weights.<output>``, one output's loss weight (the others as
  ``loss_weights`` gives them);
- ``seed``: setting ``k``'s seed in place of the config's (its member ``s``
  trains with seed ``seed_k + s``): settings of one seed that differ only in
  their values, as a sweep packs its trials.

Any other key path (the model, the data, ``fit``, a schedule) and ``tracking`` (MLflowLogger logs one model per run) are refused
by ``check``, before anything is built, with one line naming the key path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import hyperparams as hyperparams_lib
from jaxfit._src.core import model as model_lib
from jaxfit._src.runner import optim, schema
from jaxfit._src.runner.schema import ConfigError, RunConfig, ScheduleConfig

SECTION = "population.hyperparams"
LOSS_WEIGHTS = "loss_weights"  # the Trainer(hyperparams=...) name of loss weights
SEED = "seed"  # the key path (and Trainer(hyperparams=...) name) of members' seeds
VARYING = (
    "optimizer.learning_rate (a number)",
    "optimizer.args.<a hyperparameter the optimizer injects>",
    "loss_weights.<output>",
    "seed (each setting's own seed)",
)
_SHARED = (
    "the model (its shapes), the data (built from the config's seed), the fit "
    "section and a learning-rate schedule are shared by every member"
)


def check(config: RunConfig) -> RunConfig:
    """The config with its population values converted (``1e-3`` read as a
    string by PyYAML is a float); ``config`` itself without a population.

    Raises:
      ConfigError: ``tracking`` with a population, lists of different lengths or
        empty, a key path that cannot vary per member (naming it, what can vary
        and what was given), or a value of the wrong type.
    """
    population = config.population
    if population is None:
        return config
    if config.tracking is not None:
        raise ConfigError(
            errors.expected(
                "tracking",
                "no tracking section with a population (MLflowLogger logs one "
                "model per run)",
                schema.to_dict(config.tracking),
                "Remove tracking, or the population section.",
            )
        )
    optimizer_names = _injected(config)
    for path in population.hyperparams:  # what cannot vary, before the lengths
        _name(config, path, optimizer_names)
    _check_lengths(population.hyperparams)
    converted = {
        path: _converted(config, path, values, optimizer_names)
        for path, values in population.hyperparams.items()
    }
    return dataclasses.replace(
        config, population=dataclasses.replace(population, hyperparams=converted)
    )


def _check_lengths(hyperparams: dict[str, list[Any]]) -> None:
    """Every list holds the same number (>= 1) of values: the first list's."""
    if not hyperparams:
        return
    first, values = next(iter(hyperparams.items()))
    for path, given in hyperparams.items():
        if not given:
            raise ConfigError(
                errors.expected(
                    f"{SECTION}.{path}", "a non-empty list (one value per setting)", []
                )
            )
        if len(given) != len(values):
            raise ConfigError(
                errors.expected(
                    f"{SECTION}.{path}",
                    f"a list of {len(values)} values, as {SECTION}.{first} (the "
                    "k-th value of every list makes setting k)",
                    given,
                )
            )


def _injected(config: RunConfig) -> dict[str, Any]:
    """``{name: initial value}`` of the hyperparameters the config's optimizer
    injects as numbers (its schedules left out)."""
    optimizer = optim.build(config.optimizer)
    state = jax.eval_shape(optimizer.init, {"w": jax.ShapeDtypeStruct((2,), "float32")})
    out: dict[str, Any] = {}
    for node in hyperparams_lib.injected(state):
        scheduled = set(getattr(node, "hyperparams_states", {}) or {})
        for name, value in node.hyperparams.items():
            if name not in scheduled:
                out[name] = value
    return out


def _converted(
    config: RunConfig, path: str, values: list[Any], injected: dict[str, Any]
) -> list[Any]:
    """``values`` of ``path`` checked and converted (a number each)."""
    key = f"{SECTION}.{path}"
    name = _name(config, path, injected)
    if name == SEED:
        return [_seed(value, f"{key}[{j}]") for j, value in enumerate(values)]
    out = []
    for j, value in enumerate(values):
        try:
            number = schema._convert(value, float, f"{key}[{j}]")
        except schema._Mismatch as mismatch:
            raise ConfigError(f"{mismatch.path}: {mismatch}") from None
        if name == LOSS_WEIGHTS and number < 0:
            raise ConfigError(
                errors.expected(f"{key}[{j}]", "a loss weight >= 0", value)
            )
        out.append(number)
    return out


def _name(config: RunConfig, path: str, injected: dict[str, Any]) -> str:
    """The hyperparameter ``path`` varies, once it is one that can vary.

    Raises:
      ConfigError: a path none of ``VARYING``, or a scheduled learning rate.
    """
    name = hyperparameter_name(path)
    if name is None or name not in (LOSS_WEIGHTS, SEED, "learning_rate", *injected):
        raise ConfigError(_cannot_vary(config, path, injected))
    rate = config.optimizer.learning_rate
    if path == "optimizer.learning_rate" and isinstance(rate, ScheduleConfig):
        raise ConfigError(
            errors.expected(
                f"{SECTION}.{path}",
                "optimizer.learning_rate to be a number to vary it (a schedule is "
                "shared by every member)",
                errors.Description(f"a {rate.schedule!r} schedule"),
                "Give optimizer.learning_rate a number, or vary another key.",
            )
        )
    return name


def hyperparameter_name(path: str) -> str | None:
    """The ``Trainer(hyperparams=...)`` name a key path varies, or ``None`` when
    the path is none of ``VARYING``'s forms."""
    parts = path.split(".")
    if path == "optimizer.learning_rate":
        return "learning_rate"
    if path == SEED:
        return SEED
    if len(parts) == 3 and parts[:2] == ["optimizer", "args"] and parts[2]:
        return None if parts[2] == "learning_rate" else parts[2]
    if len(parts) == 2 and parts[0] == "loss_weights" and parts[1]:
        return LOSS_WEIGHTS
    return None


def _cannot_vary(config: RunConfig, path: str, injected: dict[str, Any]) -> str:
    """The one line refusing a key path that cannot vary per member."""
    names = sorted(n for n in injected if n != "learning_rate")
    where = (
        f"optax.{config.optimizer.name} injects {names}"
        if names
        else f"optax.{config.optimizer.name} injects no other number"
    )
    return errors.expected(
        f"{SECTION}.{path}",
        f"a key path that can vary per member: one of {list(VARYING)} ({where})",
        errors.Description(repr(path)),
        f"The rest is shared: {_SHARED}.",
    )


# -- members ---------------------------------------------------------------------
def settings(config: RunConfig) -> list[dict[str, float]]:
    """Each setting's ``{key path: value}`` (one empty setting without lists)."""
    assert config.population is not None
    lists = config.population.hyperparams
    count = len(next(iter(lists.values()))) if lists else 1
    return [{path: values[k] for path, values in lists.items()} for k in range(count)]


def members(config: RunConfig) -> list[dict[str, Any]]:
    """Member ``i``'s ``{"member", "setting", "seed", "hyperparams"}``, in order
    (``i = setting * seeds + s``, seed ``seed + i``)."""
    assert config.population is not None
    seeds = config.population.seeds
    out = []
    for k, values in enumerate(settings(config)):
        for s in range(seeds):
            i = k * seeds + s
            seed = int(values[SEED]) + s if SEED in values else config.seed + i
            out.append({"member": i, "setting": k, "seed": seed, "hyperparams": values})
    return out


def trainer_arguments(config: RunConfig) -> dict[str, Any]:
    """``{"population": N, "hyperparams": {name: one value per member}}`` for
    ``Trainer``; ``{}`` without a population."""
    if config.population is None:
        return {}
    table = members(config)
    values: dict[str, list[Any]] = {}
    weights = [dict(config.loss_weights or {}) for _ in table]
    for path in config.population.hyperparams:
        name = hyperparameter_name(path)
        if name == LOSS_WEIGHTS:
            output = path.split(".", 1)[1]
            for row, weight in zip(table, weights):
                weight[output] = row["hyperparams"][path]
            values[LOSS_WEIGHTS] = weights
        elif name is not None and name != SEED:
            values[name] = [row["hyperparams"][path] for row in table]
    values[SEED] = [row["seed"] for row in table]
    return {"population": len(table), "hyperparams": values}


def seeded_model(build: Callable[[int], Any], seed: int, seeds: list[int]) -> Any:
    """The model for a population whose members have ``seeds``: ``build(seed)``,
    with an ``init`` that gives member ``i`` the variables of ``build(seeds[i])``
    (what a run of that seed starts from). The population calls ``init`` with
    ``init_key(seeds[i])``; the key names the member's seed."""
    first = build(seed)
    keys = {_key_bytes(model_lib.init_key(s)): s for s in seeds}

    def init(key: Any) -> tuple[Any, Any]:
        member_seed = keys.get(_key_bytes(key))
        if member_seed is None:
            raise ValueError(
                errors.expected(
                    "key",
                    f"the init key of a member's seed (one of {sorted(set(seeds))})",
                    key,
                )
            )
        model = first if member_seed == seed else build(member_seed)
        return model.params, model.state

    return dataclasses.replace(first, init=init)


def _key_bytes(key: Any) -> bytes:
    return np.asarray(jax.random.key_data(key) if _typed(key) else key).tobytes()


def _typed(key: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)


def _seed(value: Any, key: str) -> int:
    """A member seed as ``Trainer`` takes it (an int in ``[0, 2**63)``)."""
    try:
        number = schema._convert(value, int, key)
    except schema._Mismatch as mismatch:
        raise ConfigError(f"{mismatch.path}: {mismatch}") from None
    if not 0 <= number < 2**63:
        raise ConfigError(errors.expected(key, "a seed: an int in [0, 2**63)", value))
    return number
