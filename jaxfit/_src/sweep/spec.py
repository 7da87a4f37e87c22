"""The ``sweep:`` section of a config, checked, as the Optuna objects it describes.

    sweep:
      objective: {monitor: val_accuracy, mode: max}  # min | max | auto (Keras 3's rule)
      trials: 16                  # in all (a grid's default: its size; no more)
      sampler: tpe                # grid | random | tpe | cmaes, or
                                  #   {name: tpe, seed: 0, args: {n_startup_trials: 5}}
      pruner: median              # none | median | hyperband, or
                                  #   {name: median, args: {n_warmup_steps: 2}}
      lanes: 8                    # up to this many packable trials train as one population
      space:                      # config key path -> a distribution (see ``space``)
        optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
        model.args.hidden: {choice: [[64], [128, 64]]}

``parse`` checks it all before anything runs, each error one line naming its key
path (located in the YAML file by the runner's ``checks``, into which this module
registers ``parse`` on import: ``jaxfit validate`` checks the section): the
space (``space.parse_param``: every key path and candidate value against the
config's own checks), the sampler's and the pruner's names and their ``args``
against the Optuna class's signature (the class is then built once, so it checks
their values), ``trials`` and ``lanes`` >= 1, ``objective.mode: auto`` resolved
as the callbacks' (``monitor.monitor_direction``), and, with the data built
(``jaxfit validate``), ``objective.monitor`` among the keys the run logs
(``monitor_checks.logged_keys``, as the callbacks' monitors). A config with a
``population:`` section is refused (a sweep packs trials into populations itself).

``sampler: grid`` takes ``choice`` entries only and runs every combination once:
``trials`` defaults to their number and may not exceed it. ``sampler: cmaes``
refuses ``choice`` entries: Optuna's ``CmaEsSampler`` does not model categorical
parameters and would draw them at random (with a warning) instead, a control that
could not act. A sampler's ``seed`` defaults to Optuna's (none: a fresh draw per
process, which is what several workers on one study want). Defaults:
``objective: {monitor: val_loss, mode: auto}``, ``sampler: tpe``, ``pruner:
none``, ``lanes: 1``; ``trials`` is required but for a grid; ``space`` always.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

from jaxfit._src import errors
from jaxfit._src.callbacks import monitor as monitor_lib
from jaxfit._src.runner import checks, monitor_checks, population, schema, types
from jaxfit._src.runner.schema import RunConfig, SweepConfig
from jaxfit._src.runner.types import ConfigError
from jaxfit._src.sweep import space
from jaxfit._src.sweep.space import Param, optuna_module, overrides, trial_config

__all__ = [
    "Param",
    "SweepSpec",
    "overrides",
    "packable",
    "parse",
    "tell",
    "trial_config",
]

SECTION = "sweep"
# name -> the Optuna class (optuna.samplers / optuna.pruners)
SAMPLERS = {
    "grid": "GridSampler",
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
}
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
}
# arguments given otherwise than in ``args``
_RESERVED = {
    "seed": "give it as sweep.sampler.seed",
    "search_space": "the grid is sweep.space's choices",
}


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked ``sweep:`` section (``parse``).

    Attributes:
      monitor: the epoch-log key a trial's objective is (``val_accuracy``).
      mode: ``"min"`` or ``"max"`` (``auto`` resolved).
      trials: the number of trials in all.
      sampler: ``grid``, ``random``, ``tpe`` or ``cmaes``.
      sampler_args: the sampler class's keyword arguments (``seed`` among them
        when given), less a grid's ``search_space`` (``grid()``).
      pruner: ``none``, ``median`` or ``hyperband``.
      pruner_args: the pruner class's keyword arguments.
      lanes: up to this many packable trials train together as one population.
      params: the searched key paths, in the section's order.
    """

    monitor: str
    mode: Literal["min", "max"]
    trials: int
    sampler: str
    sampler_args: dict[str, Any]
    pruner: str
    pruner_args: dict[str, Any]
    lanes: int
    params: tuple[Param, ...]

    @property
    def direction(self) -> str:
        """The study's direction: ``"minimize"`` or ``"maximize"``."""
        return "maximize" if self.mode == "max" else "minimize"

    def make_sampler(self) -> Any:
        """A new Optuna sampler (``optuna.samplers.<class>(**sampler_args)``; a
        grid's with ``grid()`` as its search space)."""
        cls = getattr(optuna_module().samplers, SAMPLERS[self.sampler])
        if self.sampler == "grid":
            return cls(self.grid(), **self.sampler_args)
        return cls(**self.sampler_args)

    def make_pruner(self) -> Any:
        """A new Optuna pruner (``optuna.pruners.<class>(**pruner_args)``)."""
        return getattr(optuna_module().pruners, PRUNERS[self.pruner])(
            **self.pruner_args
        )

    def distributions(self) -> dict[str, Any]:
        """``{key path: Optuna distribution}`` (``study.ask(...)``'s argument)."""
        return {param.path: param.distribution() for param in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """``{key path: [values as Optuna holds them]}``, ``GridSampler``'s search
        space (``choice`` entries only: ``Param.optuna_choices``)."""
        return {param.path: param.optuna_choices() for param in self.params}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """``{key path: config value}`` for an Optuna trial: ``trial.suggest_*``
        of every parameter, choices mapped back to their config values."""
        return {param.path: param.suggest(trial) for param in self.params}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``{key path: config value}`` of a trial's ``params`` as Optuna holds
        them (a ``FrozenTrial``'s), by ``Param.value``."""
        return {p.path: p.value(params[p.path]) for p in self.params}


def tell(study: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
    """``study.tell(trial, ...)`` for the ask-and-tell loop of a sweep.

    Optuna's ``GridSampler`` calls ``study.stop()`` after the grid's last trial,
    which outside ``study.optimize`` raises ``RuntimeError`` (the trial is
    stored all the same, in ``tell``'s ``finally``); a sweep counts its trials
    itself (``SweepSpec.trials``), so that one error is not one here.
    """
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def packable(path: str, config: RunConfig | None = None) -> bool:
    """Whether a population can vary the key path ``path`` per member, so that
    trials differing only there can train as one population.

    The population section's rule (``population.VARYING``):
    ``optimizer.learning_rate`` (a number), ``optimizer.args.<name>`` and
    ``loss_weights.<output>``. With ``config``, also that ``<name>`` is a number
    its optimizer injects and that the learning rate is not a schedule.
    """
    if population.hyperparameter_name(path) is None:
        return False
    if config is None:
        return True
    try:
        population._name(config, path, population._injected(config))
    except ConfigError:
        return False
    return True


def parse(
    section: Mapping[str, Any] | SweepConfig,
    config: RunConfig | Mapping[str, Any],
    key: str = SECTION,
) -> SweepSpec:
    """The checked ``sweep:`` section.

    Args:
      section: the section as YAML gives it, or the runner's ``SweepConfig``.
      config: the config it sweeps (a ``RunConfig``, or plain data as
        config.yaml holds it); its own ``sweep`` section is ignored.
      key: the section's key path, for messages. Defaults to `"sweep"`.

    Returns:
      The ``SweepSpec``.

    Raises:
      ConfigError: one line naming the key path (``sweep.space.<path>...``,
        ``sweep.sampler.args.<name>``...), or ``population`` with a population
        section; a missing optuna (what to install).
    """
    sweep = _structure(section, key)
    base, base_config = _base(config)
    if base_config.population is not None:
        raise ConfigError(
            errors.expected(
                "population",
                "no population section with a sweep: section (a sweep packs "
                "its trials into populations itself: see sweep.lanes)",
                schema.to_dict(base_config.population),
                "Remove the population section, or the sweep section.",
            )
        )
    try:
        optuna_module()
    except ImportError as error:
        raise ConfigError(f"{key}: {error}") from None
    if not sweep.space:
        raise ConfigError(
            errors.expected(f"{key}.space", "a non-empty mapping", sweep.space)
        )
    params = tuple(
        space.parse_param(str(path), entry, base, f"{key}.space.{path}")
        for path, entry in sweep.space.items()
    )
    sampler, sampler_args = _named(sweep.sampler, SAMPLERS, f"{key}.sampler")
    pruner, pruner_args = _named(sweep.pruner, PRUNERS, f"{key}.pruner")
    trials = _trials(sweep, sampler, params, key)
    spec = SweepSpec(
        monitor=sweep.objective.monitor,
        mode=_mode(sweep, base_config, key),
        trials=trials,
        sampler=sampler,
        sampler_args=sampler_args,
        pruner=pruner,
        pruner_args=pruner_args,
        lanes=sweep.lanes,
        params=params,
    )
    _built(spec, key)
    return spec


def _structure(section: Mapping[str, Any] | SweepConfig, key: str) -> SweepConfig:
    """The runner's structural check of the section (its keys and types)."""
    if isinstance(section, SweepConfig):
        return section
    if not isinstance(section, Mapping):
        raise ConfigError(errors.expected(key, "a mapping", section))
    try:
        return cast(SweepConfig, schema._build(SweepConfig, section, key))
    except schema._Mismatch as mismatch:
        raise ConfigError(f"{mismatch.path}: {mismatch}") from None


def _base(config: RunConfig | Mapping[str, Any]) -> tuple[dict[str, Any], RunConfig]:
    """The swept config as plain data (no sweep, no environment) and checked."""
    raw = schema.to_dict(config) if isinstance(config, RunConfig) else dict(config)
    raw = {k: v for k, v in raw.items() if k not in ("sweep", "environment")}
    parsed = config if isinstance(config, RunConfig) else schema.parse(raw)
    return raw, dataclasses.replace(parsed, sweep=None)


def _named(value: Any, table: dict[str, str], key: str) -> tuple[str, dict[str, Any]]:
    """A sampler's or pruner's name and its keyword arguments (``seed`` into a
    sampler's), checked against the Optuna class's signature."""
    sampler = table is SAMPLERS
    allowed = ("name", "seed", "args") if sampler else ("name", "args")
    if isinstance(value, str):
        value = {"name": value}
    for name in value:
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}: unknown key; expected one of {list(allowed)}"
            )
    name = value.get("name")
    if name not in table:
        raise ConfigError(
            errors.expected(
                f"{key}.name" if "args" in value or "seed" in value else key,
                "one of " + ", ".join(repr(n) for n in table),
                name,
            )
        )
    args = value.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(errors.expected(f"{key}.args", "a mapping", args))
    if value.get("seed") is not None:
        _seed(value["seed"], f"{key}.seed")
        args = {**args, "seed": value["seed"]}
    elif "seed" in args:
        raise ConfigError(f"{key}.args.seed: {_RESERVED['seed']}.")
    return str(name), _checked_args(table[name], dict(args), key, sampler)


def _seed(value: Any, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(errors.expected(key, "an integer >= 0 (a seed)", value))
    try:
        schema._seed(value, key)
    except schema._Mismatch as mismatch:
        raise ConfigError(f"{mismatch.path}: {mismatch}") from None


def _checked_args(
    cls_name: str, args: dict[str, Any], key: str, sampler: bool
) -> dict[str, Any]:
    """``args`` against the signature of the Optuna class ``cls_name``."""
    module = optuna_module().samplers if sampler else optuna_module().pruners
    parameters = inspect.signature(getattr(module, cls_name)).parameters
    names = [
        n
        for n, p in parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for name in args:
        if name == "search_space" or (name not in names and name != "seed"):
            reason = _RESERVED.get(name, f"optuna.{cls_name} takes {names}")
            raise ConfigError(f"{key}.args.{name}: unknown argument; {reason}.")
    out = dict(args)
    for name, value in args.items():
        tp = _annotation(getattr(module, cls_name), parameters[name].annotation)
        where = f"{key}.{name}" if name == "seed" else f"{key}.args.{name}"
        if tp is not None and tp is not Any:
            try:
                out[name] = schema._convert(value, tp, where)
            except schema._Mismatch as mismatch:
                raise ConfigError(f"{mismatch.path}: {mismatch}") from None
    return out


def _annotation(cls: type, annotation: Any) -> Any:
    """A parameter's annotation as a type the config validator checks
    (``types.yaml_type``), or ``None``. Optuna's are strings (``from __future__
    import annotations``): each is evaluated in the class's module, and skipped
    when a name in it is only imported for type checking."""
    if isinstance(annotation, str):
        namespace = dict(vars(sys.modules[cls.__module__]))
        try:
            annotation = eval(annotation, namespace)  # Optuna's own annotation text
        except Exception:  # noqa: BLE001 - a name imported for type checking only
            return None
    if annotation is inspect.Parameter.empty:
        return None
    return types.yaml_type(annotation)


def _trials(
    sweep: SweepConfig, sampler: str, params: tuple[Param, ...], key: str
) -> int:
    """``sweep.trials``, checked (a grid: every entry a choice, its size the
    default and the most; CMA-ES: no choice)."""
    if sampler == "cmaes":
        for param in params:
            if param.kind == "choice":
                raise ConfigError(
                    f"{key}.space.{param.path}: expected a range (uniform, "
                    "loguniform or int) with sampler cmaes, got a choice: Optuna's "
                    "CmaEsSampler cannot model it (it would draw it at random). "
                    "Use sampler tpe or random, or a range."
                )
    if sampler != "grid":
        if sweep.trials is None:
            raise ConfigError(
                errors.expected(
                    f"{key}.trials",
                    f"a positive integer (the number of trials; only sampler "
                    f"grid has a default), with sampler {sampler}",
                    None,
                )
            )
        return sweep.trials
    for param in params:
        if param.kind != "choice":
            raise ConfigError(
                f"{key}.space.{param.path}: expected a choice with sampler grid, "
                f"got a {param.kind} range: a grid runs every combination of "
                "listed values. Give {choice: [...]}, or another sampler."
            )
    size = math.prod(len(param.choices) for param in params)
    if sweep.trials is not None and sweep.trials > size:
        raise ConfigError(
            errors.expected(
                f"{key}.trials",
                f"at most the grid's size, {size} (every combination once)",
                sweep.trials,
            )
        )
    return size if sweep.trials is None else sweep.trials


def _mode(sweep: SweepConfig, config: RunConfig, key: str) -> Literal["min", "max"]:
    """``objective.mode``, ``auto`` resolved as the callbacks' (Keras 3)."""
    mode = sweep.objective.mode
    if mode != "auto":
        return mode
    metrics = None
    if config.metrics is not None:
        metrics = monitor_lib._flat(config.metrics)
    direction = monitor_lib.monitor_direction(sweep.objective.monitor, metrics)
    if direction is None:
        raise ConfigError(
            errors.expected(
                f"{key}.objective.mode",
                f"'min' or 'max' for monitor={sweep.objective.monitor!r}",
                mode,
                "auto cannot tell whether it should be minimised or maximised.",
            )
        )
    return "max" if direction == "up" else "min"


def _built(spec: SweepSpec, key: str) -> None:
    """Builds the sampler and the pruner once: their own checks of the values."""
    for what, make in (("sampler", spec.make_sampler), ("pruner", spec.make_pruner)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental arguments: not here
            try:
                make()
            except (TypeError, ValueError) as error:
                line = " ".join(str(error).split())
                raise ConfigError(f"{key}.{what}.args: {line}") from None


# -- the runner's checks ---------------------------------------------------------
def _check_section(config: RunConfig) -> None:
    """``checks.check``: the section parses."""
    assert config.sweep is not None
    parse(config.sweep, config)


def _check_objective(config: RunConfig, data: Any, trainer: Any) -> None:
    """With the data built: ``objective.monitor`` is a key the run logs."""
    assert config.sweep is not None
    monitor = config.sweep.objective.monitor
    keys = monitor_checks.logged_keys(config, data, trainer)
    if keys is not None and monitor not in keys:
        hint = (
            "; val_ keys need fit.validation_split (or a validation stream)"
            if monitor.startswith("val_") and f"val_{keys[0]}" not in keys
            else ""
        )
        raise ConfigError(
            errors.expected(
                f"{SECTION}.objective.monitor",
                f"a key the run logs, one of {keys}",
                monitor,
                f"A trial's objective is that key's value per epoch{hint}.",
            )
        )


checks.register_section(SECTION, _check_section, _check_objective)
