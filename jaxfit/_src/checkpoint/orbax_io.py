"""Checkpoint directories on orbax: atomic, optionally asynchronous, checked on read.

A checkpoint is a directory::

    state/          orbax StandardCheckpointer: the TrainState (or {"params"} only)
    extra/          orbax: the run's other arrays (the epoch's running totals,
                    callbacks' array state); absent when there are none
    metadata.json   versions, step, seed, position and JSON-able callback state

Everything is written into the sibling ``.<name>.saving`` and renamed into place
once complete, so a crash mid-save never leaves a half-written checkpoint at
``path``. Replacing an existing checkpoint moves it to ``.<name>.old`` first; if a
crash falls between the two renames, the next read or write of ``path`` moves it
back. The names are deterministic (not random), so every process of a multi-host
run agrees on them.

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
buffers right after; only the file writes run in the background.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import threading
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors

MSG_NO_ORBAX = "Checkpoints need orbax: pip install 'jaxfit[ckpt]' (orbax-checkpoint)."
FORMAT = "jaxfit-checkpoint/1"
STATE = "state"
EXTRA = "extra"
METADATA = "metadata.json"
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

    return {name: version(name) for name in ("jaxfit", "jax", "jaxlib", "optax")}


def _siblings(path: str) -> tuple[str, str]:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.saving"), os.path.join(parent, f".{name}.old")


def recover(path: str) -> None:
    """Finishes an interrupted replace: puts ``.<name>.old`` back, or drops it."""
    _, retired = _siblings(path)
    if os.path.isdir(retired):
        if os.path.isdir(path):
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(retired, path)


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


class PendingSave:
    """A save in flight: ``wait()`` blocks until it is in place (or raises)."""

    def __init__(self, path: str, finish: Callable[[], None], background: bool):
        self.path = path
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, args=(finish,), name="jaxfit-checkpoint", daemon=True
            )
            self._thread.start()
        else:
            self._run(finish)

    def _run(self, finish: Callable[[], None]) -> None:
        try:
            finish()
        except BaseException as error:  # noqa: BLE001 - re-raised by wait()
            self._error = error

    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self) -> str:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.path


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
) -> PendingSave:
    """Writes the pytrees ``items`` (``state`` and optionally ``extra``) and
    ``info`` (JSON) as the checkpoint directory ``path``, atomically.

    Device-to-host copies finish before this returns; with ``background`` the
    file writes and the final rename run on a thread (``wait()`` on the result).
    ``after(path)`` runs once the checkpoint is in place (pruning old ones), on
    process 0 only. Every process must call ``save`` for the same checkpoints in
    the same order (see the module docstring for the multi-process barriers).

    Raises:
      OSError: the checkpoint could not be written (disk full, permissions); the
        previous checkpoint at ``path`` is untouched.
    """
    ocp = orbax()
    path = os.path.abspath(os.fspath(path))
    staging, _retired = _siblings(path)
    primary = jax.process_index() == 0
    sync = _Sync(ocp)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if primary:
            recover(path)
            if os.path.exists(staging):  # left by a killed save
                shutil.rmtree(staging)
        sync.barrier("cleared")  # nobody writes into what process 0 is clearing
        checkpointers = []
        for name, tree in items.items():
            checkpointer = sync.checkpointer(name)
            checkpointer.save(os.path.join(staging, name), tree)
            checkpointers.append(checkpointer)
    except BaseException as error:
        if primary:
            shutil.rmtree(staging, ignore_errors=True)
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
    """The second half of ``save``: wait for every shard, write metadata.json and
    rename the staging directory into place (process 0), then the last barrier."""
    staging, retired = _siblings(path)
    primary = jax.process_index() == 0
    try:
        for checkpointer in checkpointers:
            checkpointer.wait_until_finished()
            checkpointer.close()
        sync.barrier("written")  # every process's shards are on disk
        if primary:
            with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
                json.dump(info, f, indent=2)
            if os.path.exists(path):
                os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
    except Exception as error:
        if primary:
            shutil.rmtree(staging, ignore_errors=True)
            recover(path)
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


def checked_path(path: str | os.PathLike[str], argname: str = "path") -> str:
    path = os.path.abspath(os.fspath(path))
    recover(path)
    if not (
        os.path.isdir(os.path.join(path, STATE))
        and os.path.isfile(os.path.join(path, METADATA))
    ):
        raise FileNotFoundError(
            errors.expected(
                argname,
                "a checkpoint directory written by jaxfit (with state/ and "
                "metadata.json)",
                path,
            )
        )
    return path


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``metadata.json``."""
    with open(os.path.join(checked_path(path), METADATA), encoding="utf-8") as f:
        return json.load(f)


def _stored_tree(ocp: Any, directory: str) -> Any:
    stored = ocp.StandardCheckpointer().metadata(directory)
    stored = getattr(stored, "item_metadata", stored)
    return getattr(stored, "tree", stored)


def restore(path: str, item: str, target: Any) -> Any:
    """Restores ``item`` shaped, typed and placed like ``target`` (arrays).

    The stored tree is compared with ``target`` first; a mismatch raises before
    anything is read, naming the first differing path and both shapes.
    """
    ocp = orbax()
    directory = os.path.join(path, item)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    mismatch = first_mismatch(
        _signature(_stored_tree(ocp, directory)), _signature(abstract)
    )
    if mismatch:  # checked first: a failed orbax read leaves async errors behind
        raise ValueError(
            f"path: the checkpoint at {path!r} does not match this trainer: "
            f"{mismatch}. Nothing was restored. Build the Trainer with the same "
            "model, parameters and optimizer as the run that saved it."
        )
    return ocp.StandardCheckpointer().restore(directory, abstract)


def restore_numpy(path: str, item: str) -> Any:
    """Restores ``item`` as host numpy arrays, whatever devices wrote it."""
    ocp = orbax()
    directory = os.path.join(path, item)
    template = jax.tree.map(
        lambda m: np.empty(m.shape, m.dtype), _stored_tree(ocp, directory)
    )
    return ocp.StandardCheckpointer().restore(directory, template)


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
        parts = []
        for key in path:
            for attr in ("key", "name", "idx"):
                if hasattr(key, attr):
                    parts.append(str(getattr(key, attr)))
                    break
        out["/".join(parts)] = (tuple(leaf.shape), str(leaf.dtype))
    return out
