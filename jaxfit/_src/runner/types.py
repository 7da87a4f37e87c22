"""Typed config values: the strict validator behind the schema (types read from
annotations, ``Annotated`` bounds, PyYAML's ``1e-3`` strings read as floats for
float fields) and ``ConfigError`` with its key path and YAML location."""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import math
import numbers
import operator
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, cast

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
            message = message[len(prefix) + 2 :]
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
        if self.low is not None and (
            value <= self.low if self.low_open else value < self.low
        ):
            return False
        return self.high is None or (
            value < self.high if self.high_open else value <= self.high
        )

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
        return (
            f"{noun} in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )


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
        (item,) = typing.get_args(tp)
        return "a list" if item is Any else f"a list (each {_expected(item, minimum)})"
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
    """``value`` checked against the type ``tp`` (and converted: YAML's "1e-3" to a
    float, sections to their dataclasses); a mismatch names ``path``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        return _annotated(value, tp, path, minimum)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch(path, f"expected {_expected(tp)}, got {_describe(value)}")
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        return _union(value, tp, path, minimum)
    if origin in (list, collections.abc.Sequence) and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]", minimum) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, Mapping):
        key_tp, value_tp = typing.get_args(tp)
        return {
            _convert(k, key_tp, f"{path}.{k}"): _convert(v, value_tp, f"{path}.{k}")
            for k, v in value.items()
        }
    converted = _scalar(value, tp, origin, minimum)
    if converted is not _NO:
        return converted
    raise _Mismatch(path, f"expected {_expected(tp, minimum)}, got {_describe(value)}")


_NO = object()  # _scalar: the value is not of the type


def _scalar(value: Any, tp: Any, origin: Any, minimum: int | None) -> Any:
    """``value`` as the scalar type ``tp`` (a literal, None, bool, int, float,
    str), or ``_NO``."""
    if origin is Literal:
        matches = any(
            value == option and type(value) is type(option)
            for option in typing.get_args(tp)
        )
        return value if matches else _NO
    if tp is type(None):
        return None if value is None else _NO
    if tp is bool or tp is str:
        return value if isinstance(value, tp) else _NO
    if tp is int:
        plain = isinstance(value, int) and not isinstance(value, bool)
        return value if plain and (minimum is None or value >= minimum) else _NO
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.match(value.strip()):  # PyYAML: "1e-3"
            return float(value)
    return _NO


def _annotated(value: Any, tp: Any, path: str, minimum: int | None) -> Any:
    """An ``Annotated`` type: the base type, then its ``Bounds`` / ``MinLength``."""
    base, *marks = typing.get_args(tp)
    converted = _convert(value, base, path, minimum)
    for mark in marks:
        if (isinstance(mark, Bounds) and not mark.contains(converted)) or (
            isinstance(mark, MinLength) and len(converted) < mark.minimum
        ):
            raise _Mismatch(path, f"expected {_expected(tp)}, got {_describe(value)}")
    return converted


def _union(value: Any, tp: Any, path: str, minimum: int | None) -> Any:
    """The first option of a union that takes ``value``; a nested section's own
    error wins over "expected one of"."""
    deepest: _Mismatch | None = None
    for option in typing.get_args(tp):
        try:
            return _convert(value, option, path, minimum)
        except _Mismatch as mismatch:
            if mismatch.path != path and deepest is None:
                deepest = mismatch
    if deepest is not None and isinstance(value, Mapping):
        raise deepest
    raise _Mismatch(path, f"expected {_expected(tp, minimum)}, got {_describe(value)}")


def _annotations(fn: Any) -> dict[str, Any]:
    """``{parameter: annotation}`` of a callable (a class: its ``__init__``), with
    ``Annotated`` extras; the raw annotations where some cannot be resolved."""
    target = cast(Any, fn).__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - a forward reference the module cannot resolve
        pass
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.annotation
        for name, p in parameters.items()
        if p.annotation is not p.empty and not isinstance(p.annotation, str)
    }


def _not_from_yaml(tp: Any) -> bool:
    """Whether no YAML value can be of type ``tp`` (a callable, an array, a numpy
    scalar, a complex number, a class object)."""
    origin = typing.get_origin(tp)
    if origin in (collections.abc.Callable, type):
        return True
    if not isinstance(tp, type):
        return False
    return issubclass(tp, numbers.Number) or tp.__module__.split(".")[0] in (
        "jax",
        "jaxlib",
        "numpy",
    )


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


def convert_arguments(
    fn: Any, args: Mapping[str, Any], key: str, *, strict: bool = False
) -> dict[str, Any]:
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


def where(
    path: str,
    lines: Mapping[str, int] | None,
    source: str,
    origin: Mapping[str, str] | None,
) -> str:
    """`` (file, line N)`` for the deepest known prefix of ``path``."""
    probe = path
    while probe:
        if origin and probe in origin:
            return f" (from {origin[probe]})"
        if lines and probe in lines:
            return (
                f" ({source}, line {lines[probe]})"
                if source
                else (f" (line {lines[probe]})")
            )
        probe = (
            re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
            if re.search(r"(\.[^.\[]*|\[\d+\])$", probe)
            else ""
        )
    return f" ({source})" if source else ""


def _build(cls: Any, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    dot = f"{prefix}." if prefix else ""
    for key in raw:
        if key not in fields:
            raise _Mismatch(
                f"{dot}{key}", f"unknown key; expected one of {sorted(fields)}"
            )
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = _convert(
                raw[name], hints[name], f"{dot}{name}", field.metadata.get("min")
            )
            check = field.metadata.get("check")
            if check is not None:  # a by-value check: raises _Mismatch
                check(values[name], f"{dot}{name}")
        elif (
            field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ):
            raise _Mismatch(f"{dot}{name}", "missing required key")
    return cls(**values)
