"""Reading a YAML experiment config: lines for errors, ``--set`` overrides.

``load(path, overrides)`` parses the file, applies ``key.path=value`` overrides
(values read as YAML: ``64``, ``0.5``, ``true``, ``[64, 32]``, ``adamw``), and
validates the result with ``schema.parse``, so an error names the full key path
and either the file line or ``--set``.

A config is a file path, or the name of a config that ships inside the package
(``jaxfit/configs/NAME.yaml``: ``digits_mlp``, ``digits_cnn``, ``regression``);
a file of that name in the current directory comes first. ``shipped()`` lists
them and ``copy_shipped(directory)`` copies them out to edit.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from jaxfit._src.runner import schema
from jaxfit._src.runner.schema import ConfigError

MSG_NO_YAML = "YAML configs need PyYAML: pip install pyyaml (part of jaxfit's install)."


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:
        raise ImportError(MSG_NO_YAML) from error
    return yaml


# jaxfit/configs: the shipped configs, package data in the wheel
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "configs"


def shipped() -> dict[str, pathlib.Path]:
    """The configs that ship with jaxfit, ``{name: path}``, sorted by name."""
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob("*.yaml"))}


def summary(path: str | os.PathLike[str]) -> str:
    """The first comment line of a config file (what it trains), or ``""``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
    return ""


def resolve(config: str | os.PathLike[str]) -> str:
    """The file a config argument names: an existing path as given, or else a
    shipped config's (``digits_mlp`` or ``digits_mlp.yaml``).

    Raises:
      ConfigError: a bare name that is neither a file nor a shipped config.
    """
    path = os.fspath(config)
    if os.path.exists(path) or os.sep in path or "/" in path:
        return path  # a missing path is reported by read(), which names it
    configs = shipped()
    name = path[: -len(".yaml")] if path.endswith(".yaml") else path
    if name in configs:
        return str(configs[name])
    raise ConfigError(
        f"config: no file {path!r} and no shipped config of that name "
        f"(shipped: {', '.join(configs)}; see jaxfit configs)."
    )


def copy_shipped(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Copies the shipped configs into ``directory`` (made if missing) and returns
    the new files; copies nothing if any of them exists there already.

    Raises:
      ConfigError: ``directory`` is a file, or holds a config of the same name.
    """
    target = pathlib.Path(directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"DIR: {os.fspath(directory)!r} is a file, not a directory.")
    configs = shipped()
    taken = [path.name for path in configs.values() if (target / path.name).exists()]
    if taken:
        raise ConfigError(
            f"DIR: {os.fspath(directory)!r} has {', '.join(taken)} "
            "already; nothing was copied (choose another directory)."
        )
    target.mkdir(parents=True, exist_ok=True)
    return [
        pathlib.Path(shutil.copy(path, target / path.name)) for path in configs.values()
    ]


def _lines(node: Any, prefix: str, out: dict[str, int]) -> None:
    """``{dotted key path: 1-based line}`` from a composed YAML node tree."""
    yaml = _yaml()
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _lines(item, path, out)


def read(path: str | os.PathLike[str]) -> tuple[Any, dict[str, int]]:
    """The YAML document at ``path`` and its key lines."""
    yaml = _yaml()
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigError(
            f"config: cannot read {path!r}: {error.strerror or error}."
        ) from None
    try:
        raw = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    lines: dict[str, int] = {}
    if node is not None:
        _lines(node, "", lines)
    return raw if raw is not None else {}, lines


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Sets each ``key.path=value`` in a copy of ``raw``; returns it and the
    ``{key path: "--set ..."}`` origins for error messages."""
    yaml = _yaml()
    raw = copy.deepcopy(raw)
    origin: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set: expected key.path=value, got {item!r}.")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item}: {'.'.join(parts[: depth + 1])} is not "
                    f"a section (it is {child!r})."
                )
            node = child
        node[parts[-1]] = value
        origin[key] = f"--set {item}"
    return raw, origin


_KEY = re.compile(r"[A-Za-z_][\w.\[\]]*")


def load(
    path: str | os.PathLike[str], overrides: Iterable[str] = ()
) -> tuple[schema.RunConfig, dict[str, Any]]:
    """The validated config at ``path`` with ``overrides``, and its raw mapping.

    Raises:
      ConfigError: unreadable or invalid YAML, or a schema error (with the key
        path and the line or the ``--set`` that caused it).
    """
    config, raw, _ = load_located(path, overrides)
    return config, raw


def load_located(
    path: str | os.PathLike[str], overrides: Iterable[str] = ()
) -> tuple[schema.RunConfig, dict[str, Any], Callable[[str], str]]:
    """``load``, plus ``locate(message)``: an error message that starts with a key
    path (``fit.batch_size: ...``), with that key's line or ``--set`` appended.
    ``path`` may name a shipped config (``resolve``)."""
    path = resolve(path)
    raw, lines = read(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{os.fspath(path)}: expected a mapping at the top level.")
    raw, origin = apply_overrides(raw, overrides)
    source = os.fspath(path)

    def locate(message: str) -> str:
        key = message.split(":", 1)[0]
        if not _KEY.fullmatch(key):
            return message
        where = schema.where(key, lines, source, origin)
        return message if where == f" ({source})" else message + where

    return schema.parse(raw, lines, source, origin), raw, locate
