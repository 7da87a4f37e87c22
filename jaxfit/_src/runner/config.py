"""A YAML experiment config: the shipped configs, ``--set``, the checked result.

``load(path, overrides)`` reads the file (``yaml_reader.read``: bounded, with
the line of every key), applies ``key.path=value`` overrides (values read as
YAML: ``64``, ``0.5``, ``true``, ``[64, 32]``, ``adamw``), and validates the
result with ``schema.parse``, so an error names the full key path and either
the file line or ``--set``.

A config is a file path, or the name of a shipped config (``digits_mlp``,
``digits_cnn``, ``regression``); a file of that name in the current directory
comes first. The shipped configs are the repository's top-level
``configs/NAME.yaml``, the one copy; the wheel carries them as the package's
``jaxfit/configs/NAME.yaml`` (``[tool.hatch.build.targets.wheel.force-include]``),
so ``SHIPPED_DIR`` is the package's ``configs`` directory where it holds configs
(an installed wheel), else ``<package>/../configs`` (a checkout, an editable
install). ``shipped()`` lists
them and ``copy_shipped(directory)`` copies them out to edit, into a directory
that the path policy (``jaxfit._src.paths``) allows.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from jaxfit._src import paths
from jaxfit._src.runner import schema, yaml_reader
from jaxfit._src.runner.schema import ConfigError


def _shipped_dir() -> pathlib.Path:
    """The installed wheel's ``jaxfit/configs``, else the checkout's ``configs``."""
    package = pathlib.Path(__file__).resolve().parent.parent.parent
    inside = package / "configs"
    return inside if any(inside.glob("*.yaml")) else package.parent / "configs"


# where the shipped configs are: see the module docstring
SHIPPED_DIR = _shipped_dir()


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
        return path  # a missing path is reported by yaml_reader.read(), which names it
    configs = shipped()
    name = path[: -len(".yaml")] if path.endswith(".yaml") else path
    if name in configs:
        return str(configs[name])
    raise ConfigError(
        f"config: no file {path!r} and no shipped config of that name "
        f"(shipped: {', '.join(configs)}; see jaxfit configs)."
    )


def copy_shipped(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Copies the shipped configs into ``directory`` and returns the new files.

    ``directory`` follows jaxfit's path policy (``jaxfit._src.paths``): it may be
    missing (it is made, with the ``.jaxfit`` marker), an empty directory, or one
    that jaxfit made; ``""``, ``"."``, the working directory, the home directory,
    their parents, the filesystem root and an existing directory with other
    files in it are refused. Nothing is copied if any of the configs exists there
    already: a file is never overwritten.

    Raises:
      ConfigError: ``directory`` is refused (naming ``DIR``), or holds a config
        of the same name.
    """
    if os.path.isfile(directory):
        raise ConfigError(f"DIR: {os.fspath(directory)!r} is a file, not a directory.")
    try:
        target = pathlib.Path(
            paths.checked_dir(directory, "DIR", what="a directory for the configs")
        )
    except (paths.PathError, TypeError) as error:
        raise ConfigError(str(error)) from None
    configs = shipped()
    taken = [path.name for path in configs.values() if (target / path.name).exists()]
    if taken:
        raise ConfigError(
            f"DIR: {os.fspath(directory)!r} has {', '.join(taken)} "
            "already; nothing was copied (choose another directory)."
        )
    paths.make_dir(target, kind="configs")
    return [
        pathlib.Path(shutil.copy(path, target / path.name)) for path in configs.values()
    ]


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Sets each ``key.path=value`` in a copy of ``raw``; returns it and the
    ``{key path: "--set ..."}`` origins for error messages. A value is read
    as YAML by ``yaml_reader.load_yaml_text`` (the bounds hold); text that is
    not valid YAML is taken as a string."""
    raw = copy.deepcopy(raw)
    origin: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set: expected key.path=value, got {item!r}.")
        try:
            value = yaml_reader.load_yaml_text(text, f"--set {item}")[0] if text else ""
        except yaml_reader._NotYAML:
            value = text  # not YAML: the text as it is (a string)
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
    raw, lines = yaml_reader.read(path)
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
