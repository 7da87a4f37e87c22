"""JAX's persistent compilation cache for ``jaxfit run``.

A run compiles its programs (the model's initialisation, the optimizer's, the train
and evaluation blocks), most before its first step; JAX can write each executable
to a directory and load it instead of compiling when the same program comes again,
so a second ``jaxfit run`` of the same config (a rerun, a ``--resume``) skips
most of that time. ``enabled(path)`` switches the cache on in ``path`` for the
duration of a run and puts JAX's settings back afterwards: ``run`` is called from
Python and tests too, and a library must not leave the process's JAX configuration
changed.

While the block runs, every program is cached whatever its size and compile time
(JAX's defaults skip programs compiled in under a second, which are most of a small
run's); the directory is created first, so an unusable path is a ``ConfigError``. A
directory the run creates is marked as jaxfit's (``paths.MARKER``; the parents it
needs are made plain), and ``Cache.discard`` removes only such a marked one.
``path=None`` switches JAX's cache off for the block (``compilation_cache: false``).
JAX reads its cache directory once per process and keeps it, so the cache object is
dropped (``reset_cache``) on entry and on exit: the run's directory is the one used,
and after it the previous settings apply again (read afresh at the next compile).
The settings are process-wide: two runs in threads of one process at once would
share them.

Multi-process runs: each process enables the cache in the same path on its own
host (the workdir's). JAX writes entries from process 0 only and every process
reads them, so on one host, or with the workdir on a shared filesystem, the other
processes load what process 0 wrote; on separate disks they compile as before.
Runs at once (processes of one run, or separate runs sharing a workdir) may share
the directory: an entry is one file per program, written once, and one read while
it is being written is a warning from JAX and a compile, not an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Iterator
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jaxfit._src import paths
from jaxfit._src.runner.schema import ConfigError, _describe

DEFAULT = ".jax_cache"  # the config's default: in the workdir

# JAX's settings the block changes (and restores), and their values while on.
ON = {
    "jax_enable_compilation_cache": True,
    # JAX's default, 1 s, leaves out nearly every program of a small run
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    # -1: no minimum entry size (0 would let JAX pick one per filesystem)
    "jax_persistent_cache_min_entry_size_bytes": -1,
}
SETTINGS = ("jax_compilation_cache_dir", *ON)


@dataclasses.dataclass
class Cache:
    """The cache a run uses: its directory (``None``: off) and whether this run
    created that directory (``discard`` then removes it)."""

    path: str | None
    created: bool = False

    def discard(self) -> None:
        """Removes the directory if this run created it (and it holds jaxfit's
        marker): a run that leaves nothing behind (a config refused before
        training) leaves no cache either."""
        if self.path is not None and self.created:
            paths.remove_marked_tree(self.path)
            self.created = False


def checked(value: Any) -> Any:
    """``value`` if it is a directory (a non-empty path) or ``False`` (off).

    Raises:
      ConfigError: naming ``compilation_cache``.
    """
    if value is False or (isinstance(value, (str, os.PathLike)) and os.fspath(value)):
        return value
    raise ConfigError(
        f"compilation_cache: expected a directory or false (off), got "
        f"{_describe(value)}"
    )


def directory(configured: Any, given: Any, workdir: str) -> str | None:
    """The cache directory of a run, as an absolute path, or ``None`` for off.

    Args:
      configured: the config's ``compilation_cache``: a path (a relative one is in
        ``workdir``) or ``False``.
      given: ``run``'s ``compilation_cache`` argument (the CLI's
        ``--compilation-cache``), which wins unless ``None``: a path (a relative
        one is in the current directory, as ``workdir`` is) or ``False``.
      workdir: where the run directories go.

    Raises:
      ConfigError: the value used is neither a path nor ``False``.
    """
    value, base = (configured, workdir) if given is None else (given, os.getcwd())
    if checked(value) is False:
        return None
    return os.path.abspath(os.path.join(base, os.path.expanduser(os.fspath(value))))


@contextlib.contextmanager
def enabled(path: str | None) -> Iterator[Cache]:
    """JAX's persistent compilation cache in ``path`` (``None``: off) while the
    block runs; JAX's previous settings are restored when it ends.

    Raises:
      ConfigError: ``path`` cannot be created as a directory.
    """
    cache = Cache(path)
    if path is not None:
        cache.created = not os.path.isdir(path)
        try:
            if cache.created:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                try:
                    os.mkdir(path)
                except FileExistsError:  # another run made it meanwhile, or a file
                    cache.created = False
                else:
                    paths.mark(path, "compilation cache")
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        except OSError as error:
            raise ConfigError(
                f"compilation_cache: cannot create the directory "
                f"{path!r}: {error.strerror or error}."
            ) from None
    saved = {name: getattr(jax.config, name) for name in SETTINGS}
    values = (
        {"jax_compilation_cache_dir": path, **ON}
        if path is not None
        else {"jax_enable_compilation_cache": False}
    )
    try:
        for name, value in values.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()  # JAX keeps the directory it opened first
        yield cache
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()
