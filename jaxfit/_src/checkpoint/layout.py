"""Which directories are jaxfit's checkpoints, and their staging siblings.

A save writes into the sibling ``.<name>.saving`` and renames it into place;
replacing a checkpoint moves the old one to ``.<name>.old`` first (``siblings``;
the names are deterministic, so every process of a multi-host run agrees on
them). ``recover`` finishes a replace a crash interrupted between the two
renames.

What may be replaced or deleted: only a jaxfit checkpoint (``is_checkpoint``:
the marker, or a ``metadata.json`` in jaxfit's format, the second proof that
also covers checkpoints written before the marker existed), and a staging or
retired sibling that is jaxfit's too (``is_staging``). ``checked_target`` refuses
any other save target with a one-line ``paths.PathError`` before anything is
written; ``checked_path`` finds the checkpoint a read names.
"""

from __future__ import annotations

import os

from jaxfit._src import errors, paths
from jaxfit._src.checkpoint.integrity import (
    EXTRA,
    METADATA,
    STATE,
    CheckpointCorrupted,
)


def siblings(path: str) -> tuple[str, str]:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.saving"), os.path.join(parent, f".{name}.old")


def _has_jaxfit_metadata(path: str) -> bool:
    """Whether ``path/metadata.json`` starts as jaxfit writes it (the format
    field comes first), read without parsing a possibly damaged file."""
    try:
        with open(os.path.join(path, METADATA), "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"format": "jaxfit-checkpoint/' in head


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint directory jaxfit wrote: it holds the
    marker, or a ``metadata.json`` in jaxfit's format (checkpoints written
    before the marker). Only such a directory is ever replaced or deleted."""
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    return paths.is_owned(path) or _has_jaxfit_metadata(path)


def is_staging(path: str) -> bool:
    """Whether the sibling ``.<name>.saving`` / ``.<name>.old`` is jaxfit's: marked,
    a checkpoint, or holding nothing but what a save writes, orbax's temporary
    item directories included (a save killed before its marker, an empty one)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    if is_checkpoint(path):
        return True
    return all(
        name in (STATE, EXTRA, METADATA, paths.MARKER)
        or name.startswith(
            (f"{STATE}.orbax-checkpoint-tmp", f"{EXTRA}.orbax-checkpoint-tmp")
        )
        for name in os.listdir(path)
    )


def remove_staging(path: str) -> None:
    """Removes the staging or retired sibling ``path`` if it is jaxfit's."""
    if is_staging(path):
        paths.remove_tree(path)


def holds_only_checkpoints(directory: str | os.PathLike[str]) -> bool:
    """Whether every entry of ``directory`` is jaxfit's: checkpoints, their
    staging and retired siblings, and the marker. Such a directory counts as
    jaxfit's for ``paths.checked_dir`` (a backup or checkpoint directory the
    user had created empty)."""
    directory = os.fspath(directory)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name == paths.MARKER:
            continue
        if name.startswith(".") and name.endswith((".saving", ".old")):
            if not is_staging(path):
                return False
        elif not is_checkpoint(path):
            return False
    return True


def recover(path: str) -> None:
    """Finishes an interrupted replace: puts ``.<name>.old`` back, or drops it
    (only when it is a jaxfit checkpoint; anything else there is left alone)."""
    _, retired = siblings(path)
    if os.path.isdir(retired) and is_checkpoint(retired):
        if os.path.lexists(path):
            if is_checkpoint(path):
                paths.remove_tree(retired)
        else:
            os.replace(retired, path)


def checked_target(path: str, argname: str) -> None:
    """Refuses a checkpoint path that is not missing, empty or a jaxfit checkpoint
    (one line, before anything is written), and a foreign staging sibling."""
    paths.checked_dir(path, argname, what="a checkpoint directory", owned=is_checkpoint)
    staging, _ = siblings(path)
    if os.path.lexists(staging) and not is_staging(staging):
        raise paths.PathError(
            errors.expected(
                argname,
                "a checkpoint path whose staging name is free",
                errors.Description(
                    f"{path!r}, next to {staging!r}, which jaxfit did not write"
                ),
                "Remove or rename that directory.",
            )
        )


def checked_path(path: str | os.PathLike[str], argname: str = "path") -> str:
    """``path`` made absolute, once it holds a jaxfit checkpoint (an interrupted
    replace finished first).

    Raises:
      FileNotFoundError: nothing like a checkpoint at ``path``.
      CheckpointCorrupted: a jaxfit checkpoint with ``state/`` or
        ``metadata.json`` missing.
    """
    path = os.path.abspath(os.fspath(path))
    recover(path)
    state = os.path.join(path, STATE)
    metadata = os.path.join(path, METADATA)
    has_state, has_metadata = os.path.isdir(state), os.path.isfile(metadata)
    if has_state and has_metadata:
        return path
    if os.path.isdir(path) and (has_state or has_metadata or paths.is_owned(path)):
        missing = metadata if not has_metadata else state
        raise CheckpointCorrupted(path, missing, "is missing", argname)
    raise FileNotFoundError(
        errors.expected(
            argname,
            "a checkpoint directory written by jaxfit (with state/ and metadata.json)",
            path,
        )
    )
