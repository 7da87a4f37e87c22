"""Checkpoint directories on orbax: atomic, optionally asynchronous, checked on read.

A checkpoint is a directory::

    state/          orbax StandardCheckpointer: the TrainState (or {"params"} only)
    extra/          orbax: the run's other arrays (the epoch's running totals,
                    callbacks' array state); absent when there are none
    metadata.json   versions, step, seed, position, JSON-able callback state and
                    the digests that detect corruption
    .jaxfit         the marker of a directory jaxfit created (``paths``)

Everything is written into the sibling ``.<name>.saving`` and renamed into place
once complete, so a crash mid-save never leaves a half-written checkpoint at
``path``. Replacing an existing checkpoint moves it to ``.<name>.old`` first; if a
crash falls between the two renames, the next read or write of ``path`` moves it
back. The names are deterministic (not random), so every process of a multi-host
run agrees on them.

What may be replaced or deleted: ``save`` writes only to a path that is missing,
an empty directory or a jaxfit checkpoint (``is_checkpoint``: the marker, or a
``metadata.json`` in jaxfit's format, the second proof that also covers
checkpoints written before the marker existed), and refuses anything else with
a one-line ``paths.PathError`` before anything is written. The staging and
retired siblings are removed only when they are jaxfit's too.

Integrity: ``metadata.json`` records digests of the arrays' files and of its own
content, checked before orbax reads anything (``integrity``).

With several processes (``jax.process_count() > 1``) every process writes the
shards it holds into the same staging directory, and process 0 alone cleans up,
writes ``metadata.json`` and renames. Barriers (orbax's, on the JAX distributed
key-value store: safe from the background write thread, unlike a device
collective) order this: process 0 clears the staging directory before anyone
writes; it renames only once every process has finished writing; and no process's
save returns before the checkpoint is in place (and older ones pruned). A process
whose write fails never reaches the next barrier, so nothing half-written is
renamed into place: the others fail at that barrier instead.

Orbax copies device arrays to host memory before ``save`` returns (its default
synchronous device-to-host transfer), so the train step may donate the state's
buffers right after; the file writes run on a thread. A synchronous save waits
for that thread; Ctrl-C while it waits lets the write finish (a second Ctrl-C
abandons it) and is then raised. A background save still in flight when the
interpreter exits is joined before Python shuts its thread pools down, so
orbax's threads never fail with "cannot schedule new futures after interpreter
shutdown".

Here: ``save`` (and its second half, ``_finish``), the barriers (``_Sync``),
``verify``, ``restore`` and ``restore_numpy``. The staging names and what counts
as jaxfit's (``is_checkpoint``, ``is_staging``, ``recover``, ``checked_path``)
live in ``layout``, the write thread (``PendingSave``) in ``pending``; the names
callers use are re-exported here.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from typing import Any

import jax
import numpy as np

from jaxfit._src import paths
from jaxfit._src.checkpoint import integrity, layout, pending

MSG_NO_ORBAX = (
    "Checkpoints need orbax: pip install orbax-checkpoint "
    "(in jaxfit-trainer's ckpt extra)."
)
FORMAT = integrity.FORMAT
STATE = integrity.STATE
EXTRA = integrity.EXTRA
METADATA = integrity.METADATA
CheckpointCorrupted = integrity.CheckpointCorrupted
BARRIER_TIMEOUT_MS = 10 * 60 * 1000  # as orbax's own default for an async save

_SAVES = itertools.count()  # every process numbers its saves alike (SPMD order)


def orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:
        raise ImportError(MSG_NO_ORBAX) from error
    return ocp


def versions() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            return "unknown"

    # jaxfit's distribution is jaxfit-trainer ("jaxfit" on PyPI is another project)
    return {
        "jaxfit": version("jaxfit-trainer"),
        **{name: version(name) for name in ("jax", "jaxlib", "optax")},
    }


# What callers use from ``layout`` and ``pending``, under their old names here.
is_checkpoint = layout.is_checkpoint
is_staging = layout.is_staging
holds_only_checkpoints = layout.holds_only_checkpoints
recover = layout.recover
checked_path = layout.checked_path
PendingSave = pending.PendingSave


class _Sync:
    """The multi-process synchronisation of one save; does nothing in one process.

    Every process numbers its saves alike (they save in the same order), so the
    barrier keys are deterministic and unique to one save: two saves in flight
    at once (a background ModelCheckpoint and a BackupAndRestore) never meet at
    each other's barriers, orbax's own included (its keys are otherwise named
    after the item directory, ``state``, the same for every checkpoint).
    """

    def __init__(self, ocp: Any):
        self._ocp = ocp
        self.key = None
        if jax.process_count() > 1:
            self.key = f"jaxfit_checkpoint_save_{next(_SAVES)}"
            self._sync = ocp.multihost.get_barrier_sync_fn()

    def barrier(self, stage: str) -> None:
        """Returns once every process has reached ``stage`` of this save."""
        if self.key is not None:
            self._sync(key=f"{self.key}_{stage}", timeout_ms=BARRIER_TIMEOUT_MS)

    def checkpointer(self, item: str) -> Any:
        """An orbax checkpointer for ``item``, with barrier keys of its own."""
        if self.key is None:
            return self._ocp.StandardCheckpointer()
        options = self._ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=f"{self.key}_{item}"
        )
        return self._ocp.StandardCheckpointer(multiprocessing_options=options)


def _write_error(path: str, error: BaseException) -> OSError:
    message = (
        f"could not write the checkpoint {path!r}: {error}. Nothing was "
        "replaced: the previous checkpoint at that path, if any, is intact. "
        "Free disk space or fix the directory's permissions, then save again."
    )
    code = getattr(error, "errno", None)
    return OSError(code, message) if code is not None else OSError(message)


def save(
    path: str | os.PathLike[str],
    items: dict[str, Any],
    info: dict[str, Any],
    *,
    background: bool = False,
    after: Callable[[str], None] | None = None,
    argname: str = "path",
) -> PendingSave:
    """Writes the pytrees ``items`` (``state`` and optionally ``extra``) and
    ``info`` (JSON) as the checkpoint directory ``path``, atomically.

    ``path`` must be missing, an empty directory or a jaxfit checkpoint (which
    is replaced). Device-to-host copies finish before this returns; with
    ``background`` the file writes, the digests and the final rename run on a
    thread (``wait()`` on the result). ``after(path)`` runs once the checkpoint
    is in place (pruning old ones), on process 0 only. Every process must call
    ``save`` for the same checkpoints in the same order (see the module
    docstring for the multi-process barriers).

    Raises:
      paths.PathError: ``path`` is refused (``""``, the working directory, a
        directory jaxfit did not write...), naming ``argname``; nothing is
        written.
      OSError: the checkpoint could not be written (disk full, permissions); the
        previous checkpoint at ``path`` is untouched.
    """
    layout.checked_target(os.fspath(path), argname)
    ocp = orbax()
    path = os.path.abspath(os.fspath(path))
    staging, _retired = layout.siblings(path)
    primary = jax.process_index() == 0
    sync = _Sync(ocp)
    checkpointers: list[Any] = []
    created = False
    try:
        paths.make_dir(os.path.dirname(path))
        if primary:
            recover(path)
            layout.remove_staging(staging)  # left by a killed save
        sync.barrier("cleared")  # nobody writes into what process 0 is clearing
        if primary:  # after the barrier: no process sees it before all agree
            os.makedirs(staging, exist_ok=True)  # others' orbax may make it too
            created = True
            paths.mark(staging, "checkpoint")  # renamed with it: the marker
        for name, tree in items.items():
            checkpointer = sync.checkpointer(name)
            checkpointers.append(checkpointer)
            checkpointer.save(os.path.join(staging, name), tree)
    except BaseException as error:
        for checkpointer in checkpointers:  # no orbax thread left writing
            try:
                checkpointer.close()
            except BaseException:  # noqa: BLE001 - the first error wins
                pass
        if primary and created:
            layout.remove_staging(staging)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise
    info = {"format": FORMAT, "contents": sorted(items), "versions": versions(), **info}

    finish = functools.partial(_finish, path, checkpointers, sync, info, after)
    return PendingSave(path, finish, background)


def _finish(
    path: str,
    checkpointers: list[Any],
    sync: Any,
    info: dict[str, Any],
    after: Callable[[str], None] | None,
) -> None:
    """The second half of ``save``: wait for every shard, write metadata.json with
    the digests and rename the staging directory into place (process 0), then
    the last barrier."""
    staging, retired = layout.siblings(path)
    primary = jax.process_index() == 0
    try:
        for checkpointer in checkpointers:
            checkpointer.wait_until_finished()
            checkpointer.close()
        sync.barrier("written")  # every process's shards are on disk
        if primary:
            digest = {
                "algorithm": integrity.DIGEST,
                "files": integrity.file_digests(staging, info),
            }
            text = integrity.metadata_text({**info, "digest": digest})
            with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
                f.write(text)
            if os.path.lexists(path):
                if is_checkpoint(path):
                    os.replace(path, retired)
                elif not (os.path.isdir(path) and not os.listdir(path)):
                    raise paths.PathError(  # appeared since save() checked it
                        f"path: {path!r} is no longer a checkpoint jaxfit wrote; "
                        "it was left as it is. Save to a new path."
                    )
            os.replace(staging, path)  # over an empty directory, if one is there
            layout.remove_staging(retired)
    except Exception as error:
        if primary:
            layout.remove_staging(staging)
            recover(path)
        if isinstance(error, paths.PathError):
            raise
        raise _write_error(path, error) from error
    if primary and after is not None:
        after(path)
    try:
        sync.barrier("in_place")  # no process returns before the rename is done
    except Exception as error:
        raise OSError(
            f"could not confirm that the checkpoint {path!r} is in "
            f"place: process 0 did not finish writing it ({error}). "
            "Check process 0's error."
        ) from error


def read_info(path: str | os.PathLike[str], argname: str = "path") -> dict[str, Any]:
    """The checkpoint's ``metadata.json``, parsed (not checked against its digest:
    see ``verify``).

    Raises:
      FileNotFoundError: as ``checked_path``.
      CheckpointCorrupted: ``metadata.json`` is not a JSON object.
    """
    return integrity.read_info(checked_path(path, argname), argname)


def verify(path: str | os.PathLike[str], argname: str = "path") -> dict[str, Any]:
    """``integrity.verify`` of the checkpoint at ``path``: every recorded digest
    and field checked before orbax reads anything; returns its metadata.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      CheckpointCorrupted: the first damaged file, in one line.
      ValueError: a newer checkpoint format than this jaxfit reads.
    """
    return integrity.verify(checked_path(path, argname), argname)


def _stored_tree(ocp: Any, directory: str) -> Any:
    stored = ocp.StandardCheckpointer().metadata(directory)
    stored = getattr(stored, "item_metadata", stored)
    return getattr(stored, "tree", stored)


def _unreadable(path: str, directory: str, error: Exception) -> CheckpointCorrupted:
    """orbax failed to read a checkpoint that passed ``verify`` (or had no
    digest to check): the error in one line, naming the directory."""
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    return CheckpointCorrupted(
        path,
        directory,
        f"could not be read by orbax ({type(error).__name__}: {reason})",
    )


def restore(path: str, item: str, target: Any) -> Any:
    """Restores ``item`` shaped, typed and placed like ``target`` (arrays).

    The stored tree is compared with ``target`` first; a mismatch raises before
    anything is read, naming the first differing path and both shapes. Call
    ``verify`` first.

    Raises:
      ValueError: the stored tree does not match ``target``.
      CheckpointCorrupted: orbax could not read the stored files.
    """
    ocp = orbax()
    directory = os.path.join(path, item)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        stored = _stored_tree(ocp, directory)
    except Exception as error:
        raise _unreadable(path, directory, error) from error
    mismatch = first_mismatch(_signature(stored), _signature(abstract))
    if mismatch:  # checked first: a failed orbax read leaves async errors behind
        raise ValueError(
            f"path: the checkpoint at {path!r} does not match this trainer: "
            f"{mismatch}. Nothing was restored. Build the Trainer with the same "
            "model, parameters and optimizer as the run that saved it."
        )
    try:
        return ocp.StandardCheckpointer().restore(directory, abstract)
    except Exception as error:
        raise _unreadable(path, directory, error) from error


def restore_numpy(path: str, item: str) -> Any:
    """Restores ``item`` as host numpy arrays, whatever devices wrote it. Call
    ``verify`` first.

    Raises:
      CheckpointCorrupted: orbax could not read the stored files.
    """
    ocp = orbax()
    directory = os.path.join(path, item)
    try:
        template = jax.tree.map(
            lambda m: np.empty(m.shape, m.dtype), _stored_tree(ocp, directory)
        )
        return ocp.StandardCheckpointer().restore(directory, template)
    except Exception as error:
        raise _unreadable(path, directory, error) from error


def first_mismatch(
    saved: dict[str, tuple[tuple[int, ...], str]],
    wanted: dict[str, tuple[tuple[int, ...], str]],
) -> str:
    """The first difference between two ``{path: (shape, dtype)}``, in words."""
    for key, (shape, dtype) in wanted.items():
        if key not in saved:
            return f"the checkpoint has no {key!r} (this trainer's is {shape} {dtype})"
        if saved[key] != (shape, dtype):
            return (
                f"at {key!r} the checkpoint has shape {saved[key][0]} "
                f"{saved[key][1]}, this trainer has {shape} {dtype}"
            )
    for key, (shape, dtype) in saved.items():
        if key not in wanted:
            return f"the checkpoint has {key!r} ({shape} {dtype}), this trainer has not"
    return ""


def _signature(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` with paths spelled the same for dicts, dataclasses
    and named tuples, so a stored tree and a TrainState compare."""
    out = {}
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda a: hasattr(a, "shape") and hasattr(a, "dtype")
    )[0]
    for path, leaf in leaves:
        out[path_key(path)] = (tuple(leaf.shape), str(leaf.dtype))
    return out


def path_key(path: Any) -> str:
    """A tree path spelled as checkpoints compare them: dict keys, attribute
    names and indices joined by ``/``."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)
