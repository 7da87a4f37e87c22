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
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Mapping, Union

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the key path."""


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


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """The arguments of ``Trainer.fit`` (and ``fit_dataset`` for streamed data)."""

    batch_size: int = _positive(32)
    epochs: int = _positive(1)
    verbose: Literal["auto", 0, 1, 2] = 2
    validation_split: float = 0.0
    shuffle: bool = True
    class_weight: typing.Optional[dict[int, float]] = None
    initial_epoch: int = _positive(0, minimum=0)
    steps_per_epoch: typing.Optional[int] = _positive(None)
    validation_steps: typing.Optional[int] = _positive(None)
    validation_batch_size: typing.Optional[int] = _positive(None)
    validation_freq: Union[int, list[int]] = 1
    validation_batches: typing.Optional[int] = _positive(None)
    yield_every: Union[Literal["auto", "batch", "epoch", "never"], float] = "auto"


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
    precision: Literal["float32", "bfloat16", "mixed_bfloat16", "mixed_float16"] = (
        "float32")
    # BackupAndRestore in the run directory: "epoch", every N batches, or false.
    backup: Union[Literal["epoch", False], int] = _positive("epoch")
    # Written by `jaxfit run` into the run directory's config.yaml (versions,
    # devices); ignored when read back.
    environment: typing.Optional[dict[str, Any]] = None


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
    if origin is list:
        return f"a list of {_expected(typing.get_args(tp)[0])}"
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
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
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
                          f"{_where(mismatch.path, lines, source, origin)}") from None


def _where(path: str, lines: Mapping[str, int] | None, source: str,
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


def to_dict(config: Any) -> Any:
    """The config as plain YAML-able data."""
    return dataclasses.asdict(config)
