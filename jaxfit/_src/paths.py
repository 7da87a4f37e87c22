"""Where jaxfit may write and what it may delete: one policy for every edge.

Everything that writes or deletes files (BackupAndRestore, ModelCheckpoint,
CSVLogger, TensorBoard, the runner's run directories, ``jaxfit configs DIR``)
checks its target with ``checked_dir`` / ``checked_file`` before anything runs,
and deletes only through ``remove_owned``:

- Refused as a target: ``""``, ``"."``, the working directory or one of its
  parents, the home directory or one of its parents, the filesystem root, and
  an existing directory that is not empty and that jaxfit did not create.
- A directory jaxfit creates (``make_dir``) holds a marker file, ``.jaxfit``;
  that is how jaxfit knows later that it made it. A checkpoint directory's own
  ``metadata.json`` (written by jaxfit) counts as a marker too
  (``checkpoint.orbax_io`` decides that, passing ``owned=``).
- ``remove_owned(path, root)`` removes ``path`` only if it lies strictly inside
  ``root`` (after resolving ``..`` and symbolic links) and carries the marker. A
  path read back from a file is never trusted: ``within(root, relative)`` joins
  a stored relative path to the callback's own root and refuses an absolute
  one, or one that leaves the root.

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

from jaxfit._src import errors

MARKER = ".jaxfit"  # written into every directory jaxfit creates
MAX_NAME = 200  # characters of one path component jaxfit makes from a name


class PathError(ValueError):
    """A path jaxfit was asked to write to or delete is refused (one line)."""


def _text(path: Any, argname: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(errors.expected(argname, "a path (str or os.PathLike)", path))
    text = os.fspath(path)
    if isinstance(text, bytes):
        raise TypeError(errors.expected(argname, "a path as str, not bytes", path))
    if "\0" in text:
        raise PathError(errors.expected(argname, "a path without NUL characters", text))
    return text


def _protected() -> list[str]:
    """The working directory, the home directory, every parent of both, and the
    filesystem root: never a target, never deleted."""
    found = []
    for start in (os.getcwd(), os.path.expanduser("~")):
        path = os.path.realpath(start)
        while True:
            found.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return found


def _refuse_protected(text: str, resolved: str, argname: str, what: str) -> None:
    if text.strip() in ("", "."):
        raise PathError(
            errors.expected(
                argname,
                f"{what} of its own (not the working directory)",
                text,
                "Name a new directory, e.g. 'runs' or 'backup'.",
            )
        )
    if resolved in _protected():
        raise PathError(
            errors.expected(
                argname,
                f"{what} of its own, not the working directory, the home "
                "directory, one of their parents or the filesystem root",
                errors.Description(f"{text!r} (resolves to {resolved!r})"),
                "Name a new directory inside it.",
            )
        )


def is_owned(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory jaxfit created (it holds the marker)."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def checked_dir(
    path: Any,
    argname: str,
    *,
    what: str = "a directory",
    owned: Callable[[str], bool] | None = None,
) -> str:
    """``path`` made absolute, once it is a directory jaxfit may write into.

    It may be missing, an empty directory, or a directory jaxfit created
    (``is_owned``, or ``owned(path)`` where given).

    Raises:
      TypeError: not a path.
      PathError: a refused target (see the module docstring), in one line.
    """
    text = _text(path, argname)
    resolved = os.path.realpath(text)
    _refuse_protected(text, resolved, argname, what)
    if os.path.lexists(resolved) and not os.path.isdir(resolved):
        raise PathError(
            errors.expected(
                argname, f"{what}", errors.Description(f"{text!r}, which is a file")
            )
        )
    if (
        os.path.isdir(resolved)
        and os.listdir(resolved)
        and not (is_owned(resolved) or (owned is not None and owned(resolved)))
    ):
        raise PathError(
            errors.expected(
                argname,
                f"{what} that is new, empty or made by jaxfit",
                errors.Description(
                    f"{text!r}, an existing directory with other files in it"
                ),
                "jaxfit never writes over what it did not create: name a "
                "new directory.",
            )
        )
    return os.path.abspath(text)


def checked_file(
    path: Any,
    argname: str,
    *,
    what: str = "a file",
    owned: Callable[[str], bool] | None = None,
) -> str:
    """``path`` made absolute, once it is a file jaxfit may (over)write.

    It may be missing, empty, or a file jaxfit wrote (``owned(path)``); its
    directory may be missing (``make_parent`` creates it).

    Raises:
      TypeError: not a path.
      PathError: ``""``, ``"."``, a directory, a protected directory, or an
        existing file that ``owned`` does not recognise.
    """
    text = _text(path, argname)
    resolved = os.path.realpath(text)
    _refuse_protected(text, resolved, argname, what)
    if os.path.isdir(resolved):
        raise PathError(
            errors.expected(
                argname, what, errors.Description(f"{text!r}, which is a directory")
            )
        )
    parent = os.path.dirname(resolved)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise PathError(
            errors.expected(
                argname,
                f"{what} in a directory",
                errors.Description(f"{text!r}, under the file {parent!r}"),
            )
        )
    if (
        os.path.isfile(resolved)
        and os.path.getsize(resolved) > 0
        and not (owned is not None and owned(resolved))
    ):
        raise PathError(
            errors.expected(
                argname,
                f"{what} that is new, empty or written by jaxfit",
                errors.Description(f"{text!r}, an existing file jaxfit did not write"),
                "jaxfit never overwrites what it did not create: name a new file.",
            )
        )
    return os.path.abspath(text)


def make_dir(path: str | os.PathLike[str], kind: str = "directory") -> str:
    """Creates ``path`` (and missing parents), writing the marker into each
    directory it creates; returns the absolute path. An existing directory is
    left as it is (``checked_dir`` decided it may be used)."""
    path = os.path.abspath(os.fspath(path))
    missing = []
    walk = path
    while not os.path.isdir(walk):
        missing.append(walk)
        parent = os.path.dirname(walk)
        if parent == walk:
            break
        walk = parent
    os.makedirs(path, exist_ok=True)
    for made in missing:
        mark(made, kind)
    return path


def mark(path: str | os.PathLike[str], kind: str = "directory") -> None:
    """Writes the marker into the directory ``path`` (which jaxfit created)."""
    marker = os.path.join(os.fspath(path), MARKER)
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8") as f:
            json.dump({"created_by": "jaxfit", "kind": kind}, f)


def make_parent(path: str | os.PathLike[str]) -> None:
    """Creates the directory of the file ``path`` if it is missing (marked)."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(parent):
        make_dir(parent)


def within(root: str | os.PathLike[str], relative: Any) -> str | None:
    """``root/relative`` if ``relative`` is a relative path that stays inside
    ``root`` (after ``..`` and symbolic links), else ``None``. For paths read
    back from a file: an absolute or escaping one is never used."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        return None
    if os.path.isabs(relative):
        return None
    root = os.path.realpath(os.fspath(root))
    joined = os.path.realpath(os.path.join(root, relative))
    if joined == root or os.path.commonpath([root, joined]) != root:
        return None
    return joined


def relative_to(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """``path`` relative to ``root`` (what a callback stores in its state)."""
    return os.path.relpath(
        os.path.realpath(os.fspath(path)), os.path.realpath(os.fspath(root))
    )


def remove_owned(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    owned: Callable[[str], bool] | None = None,
) -> bool:
    """Removes the directory ``path`` if it lies strictly inside ``root`` and
    jaxfit created it (``is_owned``, or ``owned(path)``); returns whether it did.
    Anything else is left alone, whatever a file said."""
    root_real = os.path.realpath(os.fspath(root))
    real = os.path.realpath(os.fspath(path))
    if real == root_real or os.path.commonpath([root_real, real]) != root_real:
        return False
    if real in _protected() or not os.path.isdir(real) or os.path.islink(path):
        return False
    if not (is_owned(real) or (owned is not None and owned(real))):
        return False
    remove_tree(real)
    return True


def remove_marked_tree(path: str | os.PathLike[str]) -> bool:
    """Removes the directory ``path`` that jaxfit created (it holds the marker),
    with everything in it; returns whether it did. Refused for a protected or
    unmarked directory."""
    real = os.path.realpath(os.fspath(path))
    if real in _protected() or not is_owned(real) or os.path.islink(path):
        return False
    remove_tree(real)
    return True


_LAST = ("metadata.json", MARKER)  # what proves a directory is jaxfit's goes last


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Removes the directory ``path`` (which the caller checked is jaxfit's) with
    everything in it, the files that prove it is jaxfit's (``metadata.json``,
    the marker) last: a removal interrupted at any instant leaves a directory
    still recognisably jaxfit's, which the next one finishes."""
    path = os.fspath(path)
    try:
        names = os.listdir(path)
    except OSError:
        return
    names.sort(
        key=lambda name: (name in _LAST, _LAST.index(name) if name in _LAST else 0)
    )
    for name in names:
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def component(name: Any, argname: str) -> str:
    """``name`` if it is one safe path component (a run's name): no separator,
    not ``.`` or ``..``, no NUL or control characters, at most ``MAX_NAME``
    characters.

    Raises:
      PathError: naming ``argname`` and what is wrong.
    """
    if not isinstance(name, str):
        raise PathError(errors.expected(argname, "a name (str)", name))
    problem = ""
    if not name.strip():
        problem = "it is empty"
    elif name in (".", "..") or name.startswith(".."):
        problem = "it starts with '..'"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        problem = "it holds a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "it holds a control character"
    elif len(name) > MAX_NAME:
        problem = f"it is {len(name)} characters long"
    if problem:
        raise PathError(
            errors.expected(
                argname,
                f"a name that is one path component (letters, digits, '-', '_', "
                f"'.'; at most {MAX_NAME} characters), but {problem}",
                name,
            )
        )
    return name
