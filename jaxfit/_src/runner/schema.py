"""The experiment config schema: frozen dataclasses and a strict validator.

Why dataclasses and a small validator rather than pydantic: the schema is a
handful of plain types (numbers, strings, literals, lists, dicts, nested
sections), the errors must read exactly as jaxfit's others do (the full key
path, what was expected, what was given, and the YAML line), PyYAML's quirk of
reading ``1e-3`` as a string must be absorbed for float fields only, and the
core stays free of a large dependency for ~150 lines of checking.

Every field's type is read from its annotation. A field with ``metadata={"min":
k}`` must be >= k; one with ``metadata={"check": fn}`` is also checked by
``fn(value, key path)`` (the run's ``name`` is one path component, the
``seed`` fits every PRNG it seeds). Unknown keys, wrong types and missing
required fields raise ``ConfigError`` naming ``section.key`` (and
``section.list[i].key``).

The arguments of the callables a config names (``model.args``, ``data.args``,
``optimizer.args``, schedule and callback arguments) are checked by the same
validator from the callables' own signatures (``convert_arguments``): the
built-ins declare ranges with ``typing.Annotated`` (``PositiveInt``,
``Fraction``...), optax's numeric arguments are numbers, and a float written
``1e-3`` (a string to PyYAML) becomes a float wherever a float is meant.

The ``fit`` section is not written out here: ``FitConfig`` is made at import from
the signatures of ``Trainer.fit`` and ``Trainer.fit_dataset`` (their keyword-only
arguments, annotations and defaults, less ``FIT_EXCLUDED``), so an argument added
to the trainer is a config key at once and the two cannot drift. ``precision``
takes the core's ``PRECISIONS``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import typing
from collections.abc import Mapping
from typing import Any, Literal

from jaxfit._src import paths
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.driver import arguments as arguments_lib
from jaxfit._src.runner.types import (  # noqa: F401 - the schema's vocabulary
    _FLOAT,
    Bounds,
    ConfigError,
    MinLength,
    NonEmptyWidths,
    NonNegativeFloat,
    PositiveInt,
    Rate,
    Widths,
    _annotations,
    _build,
    _convert,
    _describe,
    _expected,
    _mentions_float,
    _Mismatch,
    _not_from_yaml,
    checkable,
    convert_arguments,
    keyed,
    where,
    yaml_type,
)


def _positive(default: Any = None, minimum: int = 1) -> Any:
    return dataclasses.field(default=default, metadata={"min": minimum})


# A seed is the key of jax.random.PRNGKey (which takes up to 2**63 - 1), of
# numpy's generators and of scikit-learn's ``random_state`` (below 2**32): the
# range every one of them takes.
SEED_LIMIT = 2**32


def _run_name(value: str, path: str) -> None:
    """The run directory is ``<workdir>/<name>-<timestamp>``: ``name`` must be
    one path component (``paths.component``), never a way out of the workdir."""
    try:
        paths.component(value, path)
    except paths.PathError as error:
        message = str(error).removeprefix(f"{path}: ").removesuffix(".")
        raise _Mismatch(path, message) from None


def _seed(value: int, path: str) -> None:
    if value >= SEED_LIMIT:
        raise _Mismatch(
            path,
            f"expected an integer in [0, 2**32) (a seed jax.random.PRNGKey, numpy "
            f"and scikit-learn all take), got {_describe(value)}",
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``name``: a built-in model (``mlp``, ``cnn``, ``resnet``) or
    ``package.module:callable``; ``args``: its keyword arguments."""

    name: str = "mlp"
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``name``: ``digits``, ``synthetic_classification``, ``synthetic_regression``
    or ``package.module:callable``; ``args``: its keyword arguments."""

    name: str = "digits"
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """A learning-rate schedule: ``constant``, ``cosine``, ``warmup_cosine``,
    ``exponential`` or ``piecewise`` with the optax schedule's arguments."""

    schedule: Literal["constant", "cosine", "warmup_cosine", "exponential", "piecewise"]
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """``name``: any optax optimizer (``adam``, ``adamw``, ``sgd``...);
    ``learning_rate``: a number or a schedule; ``args``: its other arguments."""

    name: str = "adam"
    learning_rate: float | ScheduleConfig = 1e-3
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CallbackConfig:
    """``name``: a ``jaxfit.callbacks`` class or ``package.module:callable``."""

    name: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MLflowConfig:
    """``tracking.mlflow``: ``uri`` the tracking URI (``None``: a local store in
    the workdir, ``sqlite:///<workdir>/mlflow.db``), ``experiment`` (``None``: the
    config's ``name``), ``log_every`` (``"yield"``: batch logs too)."""

    uri: str | None = None
    experiment: str | None = None
    log_every: Literal["epoch", "yield"] = "epoch"


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """``tracking``: the experiment trackers a run logs to (``mlflow``)."""

    mlflow: MLflowConfig | None = None


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    """``population``: members trained as one program (``Trainer(population=N)``).

    ``seeds``: members per setting (seeds ``seed + i``); ``hyperparams``: ``{key
    path: [K values]}`` (``optimizer.learning_rate``, ``optimizer.args.<name>``,
    ``loss_weights.<output>``), all lists of one length K: K settings, the k-th
    value of every list making setting k. Member ``i = k * seeds + s``. See
    ``runner.population``.
    """

    seeds: int = dataclasses.field(default=1, metadata={"min": 1})
    hyperparams: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """``sweep.objective``: the epoch-log key a sweep optimises and its direction
    (``auto``: as the callbacks' ``mode="auto"``, Keras 3's rule)."""

    monitor: str = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """``sweep``: many runs of this config (``jaxfit sweep CONFIG``), on Optuna.

    The runner checks only this shape; the full check (every key path of
    ``space`` against the config, the distributions, the sampler's and pruner's
    arguments, the objective against the run's logs) is ``jaxfit._src.sweep.spec``,
    registered into ``checks``. ``space``: ``{config key path: distribution}``;
    ``trials``: how many (a grid's default: its size); ``sampler`` and
    ``pruner``: a name or ``{name, args}`` (a sampler also ``seed``); ``lanes``:
    up to this many trials train together as one population.
    """

    space: dict[str, dict[str, Any]]
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    trials: int | None = _positive(None)
    sampler: str | dict[str, Any] = "tpe"
    pruner: str | dict[str, Any] = "none"
    lanes: int = _positive(1)


# Keyword arguments of ``Trainer.fit`` / ``Trainer.fit_dataset`` that a YAML file
# does not give, and why. Every other keyword argument is a key of the ``fit``
# section, typed by its annotation, defaulting to its default.
FIT_EXCLUDED = {
    "callbacks": "the config has its own `callbacks` section",
    "validation_data": "comes from the data: `fit.validation_split` of the arrays, "
    "or the dataset's 'validation' stream",
    "sample_weight": "per-sample weights come with the data (a stream's batches may "
    "carry 'sample_weight')",
    "now": "the clock of the yield policy, injected by tests",
}
# Where the runner's default differs from the trainer's: one line per epoch reads
# well in run.log (the trainer's "auto" draws a progress bar on a terminal).
RUNNER_DEFAULTS: dict[str, Any] = {"verbose": 2}
# Integer arguments of fit are counts (>= 1), except these (>= 0).
AT_LEAST_ZERO = ("initial_epoch",)


def trainer_arguments(method: Any) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of a training call's arguments, less
    ``FIT_EXCLUDED``; types from the annotations. ``method`` is the call's
    argument value object (``FitArgs``: its fields) or a training method (its
    keyword-only parameters)."""
    hints = typing.get_type_hints(method)
    if dataclasses.is_dataclass(method):
        return {
            field.name: (hints.get(field.name, Any), field.default)
            for field in dataclasses.fields(method)
            if field.name not in FIT_EXCLUDED
        }
    return {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(method).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name not in FIT_EXCLUDED
    }


def make_fit_config(fit: Any, fit_dataset: Any) -> type:
    """The ``fit`` section's dataclass: ``fit``'s arguments, then those only
    ``fit_dataset`` takes (``validation_batches``)."""
    arguments = {**trainer_arguments(fit_dataset), **trainer_arguments(fit)}
    order = list(trainer_arguments(fit)) + [
        name
        for name in trainer_arguments(fit_dataset)
        if name not in trainer_arguments(fit)
    ]
    fields = []
    for name in order:
        tp, default = arguments[name]
        default = RUNNER_DEFAULTS.get(name, default)
        metadata = {"min": 0 if name in AT_LEAST_ZERO else 1}
        if default is inspect.Parameter.empty:
            field = dataclasses.field(metadata=metadata)
        elif isinstance(default, (list, dict, set)):
            field = dataclasses.field(
                default_factory=functools.partial(copy.copy, default), metadata=metadata
            )
        else:
            field = dataclasses.field(default=default, metadata=metadata)
        fields.append((name, tp, field))
    cls = dataclasses.make_dataclass("FitConfig", fields, frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = (
        "The ``fit`` section: the arguments of ``Trainer.fit`` and "
        "``Trainer.fit_dataset`` (``FitArgs`` and ``StreamFitArgs``), less "
        f"{sorted(FIT_EXCLUDED)}."
    )
    return cls


if typing.TYPE_CHECKING:

    class FitConfig:  # the fields are Trainer.fit's arguments, made at import
        def __getattr__(self, name: str) -> Any: ...
else:
    # the one argument contract of Trainer.fit / fit_dataset (driver.arguments)
    FitConfig = make_fit_config(arguments_lib.FitArgs, arguments_lib.StreamFitArgs)

# The precision policies are the core's (``Trainer(precision=...)``).
Precision = Literal[precision_lib.PRECISIONS]  # type: ignore[valid-type]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One experiment. ``loss`` and ``metrics`` default by the data's task.

    ``name`` names the run directory (``<workdir>/<name>-<timestamp>``): one
    path component of at most 200 characters, without a separator, ``..``, NUL
    or control characters. ``seed`` is in ``[0, 2**32)``.
    """

    name: str = dataclasses.field(metadata={"check": _run_name})
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss: str | dict[str, str] | None = None
    loss_weights: dict[str, float] | None = None
    metrics: list[str] | dict[str, list[str]] | None = None
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    callbacks: list[CallbackConfig] = dataclasses.field(default_factory=list)
    seed: int = dataclasses.field(default=0, metadata={"min": 0, "check": _seed})
    precision: Precision = "float32"
    # BackupAndRestore in the run directory: "epoch", every N batches, or false.
    backup: Literal["epoch", False] | int = _positive("epoch")
    # JAX's persistent compilation cache: a directory (a relative one is in the
    # workdir; the CLI's --compilation-cache overrides it) or false.
    compilation_cache: Literal[False] | str = ".jax_cache"
    # Experiment tracking (MLflow): see runner.tracking.
    tracking: TrackingConfig | None = None
    # Members trained as one program: see runner.population.
    population: PopulationConfig | None = None
    # Many runs of this config (`jaxfit sweep`; `jaxfit run` refuses it).
    sweep: SweepConfig | None = None
    # Written by `jaxfit run` into the run directory's config.yaml (versions,
    # devices); ignored when read back.
    environment: dict[str, Any] | None = None


def parse(
    raw: Any,
    lines: Mapping[str, int] | None = None,
    source: str = "",
    origin: Mapping[str, str] | None = None,
) -> RunConfig:
    """Validates a plain mapping (from YAML) into a ``RunConfig``.

    Args:
      raw: the parsed YAML document.
      lines: ``{key path: line}`` for error messages. Defaults to `None`.
      source: the file name for error messages. Defaults to `""`.
      origin: ``{key path: "--set"}`` for keys that came from overrides.

    Raises:
      ConfigError: naming the full key path, the expected and the given value, and
        the file line (or ``--set``) when known.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source or 'config'}: expected a mapping at the top level, "
            f"got {_describe(raw)}"
        )
    try:
        return _build(RunConfig, raw, "")
    except _Mismatch as mismatch:
        raise ConfigError(
            f"{mismatch.path}: {mismatch}{where(mismatch.path, lines, source, origin)}",
            located=True,
        ) from None


def defaults(cls: Any) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (fields without one left out)."""
    out = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
    return out


def to_dict(config: Any) -> Any:
    """The config as plain YAML-able data."""
    return dataclasses.asdict(config)
