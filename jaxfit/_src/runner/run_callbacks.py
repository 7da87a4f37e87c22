"""A config's callbacks, built: their classes, their arguments, their paths.

A config's callbacks write inside their run directory only: their ``filepath``
/ ``filename`` / ``log_dir`` / ``backup_dir`` arguments (and such a default, as
TensorBoard's ``log_dir="logs"``) are relative to it; an absolute path, one
that leaves it, the run directory itself, one of the runner's own entries
(``RUN_DIR_ENTRIES``) and two callbacks on one path are refused at validate
time (``_run_path``, ``_distinct``). ``checks.check`` builds them once in a
temporary directory (their constructors check the values); ``run`` builds them
in the run directory.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import errors, paths
from jaxfit._src.runner import registry
from jaxfit._src.runner.schema import ConfigError, RunConfig


def _callback_class(name: str, key: str) -> Any:

    if registry.is_import_path(name):
        return registry.import_callable(name, key)
    if name == "MLflowLogger":  # it would write to the working directory's store
        raise ConfigError(
            f"{key}: MLflowLogger is the config's `tracking` section in a run: "
            "write `tracking: {mlflow: {uri: ..., experiment: ...}}` (uri "
            "defaults to a store in the workdir) instead of a callback."
        )
    if name not in callbacks_lib.__all__ or name in ("Callback", "MonitorCallback"):
        choices = [
            n
            for n in callbacks_lib.__all__
            if n not in ("Callback", "MonitorCallback", "History", "MLflowLogger")
        ]
        raise ConfigError(
            f"{key}: unknown callback {name!r}; expected one of "
            f"{choices} or 'package.module:callable'."
        )
    return getattr(callbacks_lib, name)


def _argument_error(
    key: str, error: BaseException, names: Any, owner: str
) -> ConfigError:
    """``key.<argument>: ...`` from a constructor's ``"<argument>: expected ..."``
    (or ``"<owner>: <argument>: ..."``), else ``key: ...``."""
    message = str(error).removeprefix(f"{owner}: ")
    name = message.split(":", 1)[0]
    if name in names:
        return ConfigError(f"{key}.{message}")
    return ConfigError(f"{key}: {owner}: {message}")


_PATH_ARGS = ("filepath", "filename", "log_dir", "backup_dir")  # in the run dir

# What the runner itself writes into a run directory (and the path policy's
# marker): a callback's path may not be one of them or inside one.
RUN_DIR_ENTRIES = (
    "config.yaml",
    "run.log",
    "history.json",
    "history.csv",
    "metrics.json",
    "curves.png",
    "checkpoint",
    "backup",
    "tracking.json",
    paths.MARKER,
)


def _run_path(value: str, run_dir: str, key: str) -> str:
    """``value``, a callback's path argument, inside ``run_dir``.

    A config's callbacks write into their run directory only: a path is
    relative to it, and one that is absolute, leaves it (``..``, a symbolic
    link), names the run directory itself, or names one of the runner's own
    files (``RUN_DIR_ENTRIES``) is refused. (In Python, a callback takes any
    path its own policy allows.)

    Raises:
      ConfigError: naming ``key``.
    """
    fix = (
        "a config's callbacks write into the run directory: give a relative "
        "path such as 'logs' or 'training.csv'"
    )
    if "\0" in value:
        raise ConfigError(
            errors.expected(key, "a path without NUL characters", value).rstrip(".")
        )
    if os.path.isabs(value) or value.startswith("~"):
        raise ConfigError(
            errors.expected(key, "a path relative to the run directory", value, fix)
        )
    relative = os.path.normpath(value) if value.strip() else "."
    first = relative.split(os.sep, 1)[0]
    if relative == "." or first == os.pardir:
        raise ConfigError(
            errors.expected(key, "a path inside the run directory", value, fix)
        )
    if any(first == name or first.startswith(name + ".") for name in RUN_DIR_ENTRIES):
        raise ConfigError(
            errors.expected(
                key,
                "a path that is none of the run directory's own entries "
                f"({', '.join(RUN_DIR_ENTRIES)})",
                value,
                "Name another file or directory.",
            )
        )
    if paths.within(run_dir, relative) is None:  # a symbolic link out of it
        raise ConfigError(
            errors.expected(key, "a path inside the run directory", value, fix)
        )
    return os.path.join(run_dir, relative)


def _in_run_dir(
    args: dict[str, Any], run_dir: str, key: str = "callbacks.args"
) -> dict[str, Any]:
    """The ``filepath`` / ``filename`` / ``log_dir`` / ``backup_dir`` arguments
    made paths in the run directory (see ``_run_path``; ``key`` is the args'
    config key, for the messages).

    Raises:
      ConfigError: a path that is absolute or leaves the run directory.
    """
    args = dict(args)
    for name in _PATH_ARGS:
        if isinstance(args.get(name), str):
            args[name] = _run_path(args[name], run_dir, f"{key}.{name}")
    return args


def _path_defaults(cls: Any) -> dict[str, str]:
    """The path arguments ``cls`` defaults to a string (``TensorBoard``'s
    ``log_dir="logs"``): given explicitly, so they land in the run directory
    rather than in the working directory."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.default
        for name, p in parameters.items()
        if name in _PATH_ARGS and isinstance(p.default, str)
    }


def _distinct(args: dict[str, Any], key: str, taken: list[tuple[str, str]]) -> None:
    """No two callbacks of a config write to one path, or one inside another's
    (``taken``: the earlier ``(relative path, key)``, added to).

    Raises:
      ConfigError: naming this argument and the earlier one.
    """
    for name in _PATH_ARGS:
        value = args.get(name)
        if not isinstance(value, str):
            continue
        relative = os.path.normpath(value)
        for other, other_key in taken:
            if os.path.commonpath([relative, other]) in (relative, other):
                raise ConfigError(
                    errors.expected(
                        f"{key}.{name}",
                        f"a path of its own, not {other_key}'s or one inside it",
                        value,
                    ).rstrip(".")
                )
        taken.append((relative, f"{key}.{name}"))


def _callbacks(config: RunConfig, run_dir: str, backup: bool = True) -> list[Any]:
    """The config's callbacks (paths in ``run_dir``, see ``_run_path``; no two on
    one path), and BackupAndRestore.

    Raises:
      ConfigError: a path refused, or a constructor refusing its arguments,
        naming ``callbacks[i].args.<argument>``.
    """

    built: list[Any] = []
    taken: list[tuple[str, str]] = []
    for i, callback in enumerate(config.callbacks):
        cls = _callback_class(callback.name, f"callbacks[{i}].name")
        key = f"callbacks[{i}].args"
        args = {**_path_defaults(cls), **callback.args}
        resolved = _in_run_dir(args, run_dir, key)
        _distinct(args, key, taken)
        try:
            built.append(cls(**resolved))
        except (TypeError, ValueError) as error:
            raise _argument_error(
                f"callbacks[{i}].args", error, callback.args, callback.name
            ) from None
    if backup and config.backup is not False:
        built.append(
            callbacks_lib.BackupAndRestore(
                os.path.join(run_dir, "backup"), save_freq=config.backup
            )
        )
    return built
