"""The experiment config schema: frozen dataclasses and a strict validator.

Why dataclasses and a small validator rather than pydantic: the schema is a
handful of plain types (numbers, strings, literals, lists, dicts, nested
sections), the errors must read exactly as jaxfit's others do (the full key
path, what was expected, what was given, and the YAML line), PyYAML's quirk of
reading ``1e-3`` as a string must be absorbed for float fields only, and the
core stays free of a large dependency for ~150 lines of checking.

Every field's type is read from its annotation. A field with ``metadata={"min":
k}`` must be >= k. Unknown keys, wrong types and missing required fields raise
``ConfigError`` naming ``section.key`` (and ``section.list[i].key``).

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

import collections.abc
import copy
import dataclasses
import functools
import inspect
import math
import numbers
import operator
import re
import types
import typing
from typing import Annotated, Any, Literal, Mapping, Sequence, Union

from jaxfit._src.core import precision as precision_lib
from jaxfit._src.driver import arguments as arguments_lib

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the key path.

    ``located`` is True once the message carries its file line (or ``--set``),
    so that no outer handler appends it a second time.
    """

    def __init__(self, message: str, *, located: bool = False):
        super().__init__(message)
        self.located = located


def keyed(key: str, error: BaseException | str, *names: str) -> ConfigError:
    """A ``ConfigError`` for ``key`` from another error's message, without doubling
    the name that message already starts with (``loss: loss: ...``): a leading
    ``key:`` or ``<name>:`` (one of ``names``) is replaced by ``key:``."""
    message = str(error)
    for prefix in (key, *names):
        if prefix and message.startswith(f"{prefix}: "):
            message = message[len(prefix) + 2:]
            break
    return ConfigError(f"{key}: {message}")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range of a number, for ``Annotated[int, Bounds(1)]`` arguments.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open
                                     else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open
                                     else value <= self.high)

    def words(self, tp: Any) -> str:
        if tp is int and self.high is None and not self.low_open:
            if self.low == 1:
                return "a positive integer"
            if self.low is not None:
                return f"an integer >= {self.low:g}"
        noun = "an integer" if tp is int else "a number"
        if self.high is None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{noun} {'<' if self.high_open else '<='} {self.high:g}"
        return (f"{noun} in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")


@dataclasses.dataclass(frozen=True)
class MinLength:
    """A list of at least ``minimum`` items, for ``Annotated[list[...], ...]``."""

    minimum: int = 1


# The argument types the built-in models and datasets declare (``zoo``,
# ``datasets``): checked at validate time, the ranges in the messages.
PositiveInt = Annotated[int, Bounds(1)]
NonNegativeFloat = Annotated[float, Bounds(0.0)]
Rate = Annotated[float, Bounds(0.0, 1.0, high_open=True)]  # dropout, a held-out part
Widths = Annotated[Sequence[PositiveInt], MinLength(0)]
NonEmptyWidths = Annotated[Sequence[PositiveInt], MinLength(1)]


def _positive(default: Any = None, minimum: int = 1) -> Any:
    return dataclasses.field(default=default, metadata={"min": minimum})


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
    learning_rate: Union[float, ScheduleConfig] = 1e-3
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CallbackConfig:
    """``name``: a ``jaxfit.callbacks`` class or ``package.module:callable``."""

    name: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


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
        return {field.name: (hints.get(field.name, Any), field.default)
                for field in dataclasses.fields(method) if field.name not in FIT_EXCLUDED}
    return {name: (hints.get(name, Any), parameter.default)
            for name, parameter in inspect.signature(method).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY and name not in FIT_EXCLUDED}


def make_fit_config(fit: Any, fit_dataset: Any) -> type:
    """The ``fit`` section's dataclass: ``fit``'s arguments, then those only
    ``fit_dataset`` takes (``validation_batches``)."""
    arguments = {**trainer_arguments(fit_dataset), **trainer_arguments(fit)}
    order = list(trainer_arguments(fit)) + [
        name for name in trainer_arguments(fit_dataset) if name not in
        trainer_arguments(fit)]
    fields = []
    for name in order:
        tp, default = arguments[name]
        default = RUNNER_DEFAULTS.get(name, default)
        metadata = {"min": 0 if name in AT_LEAST_ZERO else 1}
        if default is inspect.Parameter.empty:
            field = dataclasses.field(metadata=metadata)
        elif isinstance(default, (list, dict, set)):
            field = dataclasses.field(default_factory=lambda d=default: copy.copy(d),
                                      metadata=metadata)
        else:
            field = dataclasses.field(default=default, metadata=metadata)
        fields.append((name, tp, field))
    cls = dataclasses.make_dataclass("FitConfig", fields, frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = (
        "The ``fit`` section: the arguments of ``Trainer.fit`` and "
        "``Trainer.fit_dataset`` (``FitArgs`` and ``StreamFitArgs``), less "
        f"{sorted(FIT_EXCLUDED)}.")
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
    """One experiment. ``loss`` and ``metrics`` default by the data's task."""

    name: str
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss: typing.Optional[Union[str, dict[str, str]]] = None
    loss_weights: typing.Optional[dict[str, float]] = None
    metrics: typing.Optional[Union[list[str], dict[str, list[str]]]] = None
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    callbacks: list[CallbackConfig] = dataclasses.field(default_factory=list)
    seed: int = _positive(0, minimum=0)
    precision: Precision = "float32"
    # BackupAndRestore in the run directory: "epoch", every N batches, or false.
    backup: Union[Literal["epoch", False], int] = _positive("epoch")
    # Written by `jaxfit run` into the run directory's config.yaml (versions,
    # devices); ignored when read back.
    environment: typing.Optional[dict[str, Any]] = None


def checkable(tp: Any) -> bool:
    """Whether the validator below can check values of type ``tp`` (a test keeps
    every ``fit`` argument checkable, or listed in ``FIT_EXCLUDED``)."""
    origin = typing.get_origin(tp)
    if tp in (Any, int, float, str, bool, type(None)) or origin is Literal:
        return True
    if dataclasses.is_dataclass(tp):
        return True
    if origin is Annotated:
        return checkable(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType, list, dict, collections.abc.Sequence):
        return all(checkable(arg) for arg in typing.get_args(tp))
    return False


def _describe(value: Any) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return f"{text} ({type(value).__name__})"


def _expected(tp: Any, minimum: int | None = None) -> str:
    """A type in words, for error messages."""
    origin = typing.get_origin(tp)
    if tp is int:
        if minimum == 1:
            return "a positive integer"
        return "an integer" if minimum is None else f"an integer >= {minimum}"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a, minimum) for a in typing.get_args(tp))
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        for mark in marks:
            if isinstance(mark, Bounds):
                return mark.words(base)
            if isinstance(mark, MinLength) and mark.minimum > 0:
                return "a non-empty " + _expected(base, minimum).removeprefix("a ")
        return _expected(base, minimum)
    if origin in (list, collections.abc.Sequence):
        return f"a list (each {_expected(typing.get_args(tp)[0], minimum)})"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    return str(tp)


class _Mismatch(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def _convert(value: Any, tp: Any, path: str, minimum: int | None = None) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        converted = _convert(value, base, path, minimum)
        for mark in marks:
            if (isinstance(mark, Bounds) and not mark.contains(converted)) or (
                    isinstance(mark, MinLength) and len(converted) < mark.minimum):
                raise _Mismatch(path, f"expected {_expected(tp)}, got "
                                      f"{_describe(value)}")
        return converted
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch(path, f"expected {_expected(tp)}, got {_describe(value)}")
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        deepest: _Mismatch | None = None
        for option in options:
            try:
                return _convert(value, option, path, minimum)
            except _Mismatch as mismatch:  # a nested section's own error wins
                if mismatch.path != path and deepest is None:
                    deepest = mismatch
        if deepest is not None and isinstance(value, Mapping):
            raise deepest
        raise _Mismatch(path, f"expected {_expected(tp, minimum)}, got "
                              f"{_describe(value)}")
    if origin is Literal:
        for option in typing.get_args(tp):
            if value == option and type(value) is type(option):
                return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool) and (
                minimum is None or value >= minimum):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.match(value.strip()):  # PyYAML: "1e-3"
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, collections.abc.Sequence):
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(tp)
            return [_convert(v, item, f"{path}[{i}]", minimum)
                    for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping):
            key_tp, value_tp = typing.get_args(tp)
            return {_convert(k, key_tp, f"{path}.{k}"): _convert(v, value_tp,
                                                                 f"{path}.{k}")
                    for k, v in value.items()}
    raise _Mismatch(path, f"expected {_expected(tp, minimum)}, got {_describe(value)}")


def _build(cls: Any, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    dot = f"{prefix}." if prefix else ""
    for key in raw:
        if key not in fields:
            raise _Mismatch(f"{dot}{key}", f"unknown key; expected one of "
                                           f"{sorted(fields)}")
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = _convert(raw[name], hints[name], f"{dot}{name}",
                                    field.metadata.get("min"))
        elif (field.default is dataclasses.MISSING
              and field.default_factory is dataclasses.MISSING):
            raise _Mismatch(f"{dot}{name}", "missing required key")
    return cls(**values)


def parse(raw: Any, lines: Mapping[str, int] | None = None, source: str = "",
          origin: Mapping[str, str] | None = None) -> RunConfig:
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
        raise ConfigError(f"{source or 'config'}: expected a mapping at the top level, "
                          f"got {_describe(raw)}")
    try:
        return _build(RunConfig, raw, "")
    except _Mismatch as mismatch:
        raise ConfigError(f"{mismatch.path}: {mismatch}"
                          f"{where(mismatch.path, lines, source, origin)}",
                          located=True) from None


def _annotations(fn: Any) -> dict[str, Any]:
    """``{parameter: annotation}`` of a callable (a class: its ``__init__``), with
    ``Annotated`` extras; the raw annotations where some cannot be resolved."""
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - a forward reference the module cannot resolve
        pass
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.annotation for name, p in parameters.items()
            if p.annotation is not p.empty and not isinstance(p.annotation, str)}


def _not_from_yaml(tp: Any) -> bool:
    """Whether no YAML value can be of type ``tp`` (a callable, an array, a numpy
    scalar, a complex number, a class object)."""
    origin = typing.get_origin(tp)
    if origin in (collections.abc.Callable, type):
        return True
    if not isinstance(tp, type):
        return False
    return issubclass(tp, numbers.Number) or tp.__module__.split(".")[0] in (
        "jax", "jaxlib", "numpy")


def yaml_type(tp: Any) -> Any:
    """The part of the annotation ``tp`` that a YAML value can be, as a type the
    validator checks, or ``None`` when that cannot be told.

    A union keeps its checkable members and drops those no YAML value can be
    (callables, arrays); a union with ``float`` is a number, so optax's
    ``ScalarOrSchedule`` and ``Numeric`` read as ``float``.
    """
    if checkable(tp):
        return tp
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return None
    kept = []
    for member in typing.get_args(tp):
        if checkable(member):
            kept.append(member)
        elif not _not_from_yaml(member):
            return None
    if float in kept:
        kept = [member for member in kept if member not in (int, bool)]
    return functools.reduce(operator.or_, kept) if kept else None


def _mentions_float(tp: Any) -> bool:
    if tp is float:
        return True
    return any(_mentions_float(arg) for arg in typing.get_args(tp))


def convert_arguments(fn: Any, args: Mapping[str, Any], key: str, *,
                      strict: bool = False) -> dict[str, Any]:
    """``args`` for ``fn``, checked and converted by ``fn``'s annotations.

    With ``strict`` (the built-ins and optax), every argument whose annotation
    ``yaml_type`` reads is checked as a config field is (ranges of ``Annotated``
    types included) and converted (``"1e-3"`` to ``0.001``, ``1`` to ``1.0`` for a
    float). Otherwise (user code) only a float written ``1e-3`` is converted,
    where the parameter is annotated ``float`` or defaults to a float.

    Raises:
      ConfigError: naming ``key.<argument>`` (and ``[i]`` into lists).
    """
    annotations = _annotations(fn)
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    out = dict(args)
    for name, value in args.items():
        annotation = annotations.get(name, Any)
        tp = yaml_type(annotation) if strict else None
        if tp is not None and tp is not Any:
            try:
                out[name] = _convert(value, tp, f"{key}.{name}")
            except _Mismatch as mismatch:
                raise ConfigError(f"{mismatch.path}: {mismatch}") from None
        elif isinstance(value, str) and _FLOAT.match(value.strip()):
            parameter = parameters.get(name)
            default = None if parameter is None else parameter.default
            if _mentions_float(annotation) or (isinstance(default, float)):
                out[name] = float(value)
    return out


def where(path: str, lines: Mapping[str, int] | None, source: str,
          origin: Mapping[str, str] | None) -> str:
    """`` (file, line N)`` for the deepest known prefix of ``path``."""
    probe = path
    while probe:
        if origin and probe in origin:
            return f" (from {origin[probe]})"
        if lines and probe in lines:
            return f" ({source}, line {lines[probe]})" if source else (
                f" (line {lines[probe]})")
        probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe) if re.search(
            r"(\.[^.\[]*|\[\d+\])$", probe) else ""
    return f" ({source})" if source else ""


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
