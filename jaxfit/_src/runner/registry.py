"""Names to callables: built-in registries and ``package.module:callable`` user code.

Everything here is checked before a run starts: an unknown name, a module that
does not import, or arguments the callable does not take raise ``ConfigError``
naming the config key, so no run directory is created for a bad config.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from jaxfit._src.runner import schema
from jaxfit._src.runner.schema import ConfigError


def is_import_path(name: str) -> bool:
    return ":" in name


def import_callable(spec: str, key: str) -> Callable[..., Any]:
    """Imports ``package.module:callable`` (dots after the colon walk attributes)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{key}: expected 'package.module:callable', got {spec!r}.")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import-time failure of user code
        raise ConfigError(
            f"{key}: cannot import module {module_name!r} of {spec!r}: "
            f"{type(error).__name__}: {error}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{key}: module {module_name!r} has no attribute "
                f"{attribute!r} ({spec!r})."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"{key}: expected {spec!r} to be callable, got {type(target).__name__}."
        )
    return target


def lookup(
    name: str, registry: Mapping[str, Callable[..., Any]], key: str
) -> Callable[..., Any]:
    """A built-in by name, or user code by import path."""
    if is_import_path(name):
        return import_callable(name, key)
    if name not in registry:
        raise ConfigError(
            f"{key}: unknown name {name!r}; expected one of "
            f"{sorted(registry)} or 'package.module:callable'."
        )
    return registry[name]


def check_args(
    fn: Callable[..., Any],
    args: Mapping[str, Any],
    key: str,
    provided: tuple[str, ...] = (),
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """``args`` checked and converted for ``fn`` (see ``schema.convert_arguments``;
    ``strict`` for built-ins, whose annotations are the spec).

    Raises:
      ConfigError: ``fn`` cannot be called with ``args`` (plus the ``provided``
        keywords the runner passes itself, when ``fn`` declares them), or an
        argument's value does not match its annotation; naming ``key.<name>``.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return dict(args)  # a builtin without a signature: let the call decide
    clash = sorted(set(args) & set(provided))
    if clash:
        raise ConfigError(f"{key}.{clash[0]}: set by the runner; remove it from {key}.")
    params = signature.parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in args:
        if name not in params and not accepts_any:
            names = [
                n
                for n, p in params.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and n not in provided
            ]
            raise ConfigError(
                f"{key}.{name}: unknown argument; "
                f"{getattr(fn, '__name__', fn)} takes {names}."
            )
    given = set(args) | {n for n in provided if n in params}
    for name, param in params.items():
        if (
            param.default is param.empty
            and name not in given
            and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        ):
            raise ConfigError(
                f"{key}.{name}: missing required argument of "
                f"{getattr(fn, '__name__', fn)}."
            )
    return schema.convert_arguments(fn, args, key, strict=strict)


def call(
    fn: Callable[..., Any], args: Mapping[str, Any], provided: Mapping[str, Any]
) -> Any:
    """``fn(**args, **{k: v for the provided keywords fn declares})``."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, takes_any = {}, False
    extra = {k: v for k, v in provided.items() if k in params or takes_any}
    return fn(**args, **extra)
