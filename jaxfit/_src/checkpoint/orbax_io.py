"""Whole-TrainState checkpoints on orbax, written atomically.

A checkpoint is a directory: ``state/`` (orbax ``StandardCheckpointer``: params,
optimizer state, model state, rng, step) and ``metadata.json`` (versions, step).
Everything is first written to a sibling temporary directory and then renamed
into place, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata as importlib_metadata
from typing import Any

import jax

from jaxfit._src import errors

MSG_NO_ORBAX = "Checkpoints need orbax: pip install 'jaxfit[ckpt]' (orbax-checkpoint)."
STATE = "state"
METADATA = "metadata.json"


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:
        raise ImportError(MSG_NO_ORBAX) from error
    return ocp


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def save(path: str | os.PathLike[str], state: Any, extra: dict[str, Any] | None = None
         ) -> str:
    """Writes ``state`` to the checkpoint directory ``path`` (replacing it atomically)."""
    ocp = _orbax()
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(staging, STATE), state)
        checkpointer.wait_until_finished()
        info = {
            "format": "jaxfit-checkpoint/1",
            "step": int(jax.device_get(state.step)),
            "versions": {name: _version(name) for name in ("jaxfit", "jax", "optax")},
            **(extra or {}),
        }
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        if os.path.exists(path):
            retired = staging + ".old"
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _check(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.join(path, STATE)):
        raise FileNotFoundError(errors.expected(
            "path", "a checkpoint directory written by Trainer.save (with state/)", path))
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``metadata.json``."""
    with open(os.path.join(_check(os.fspath(path)), METADATA), encoding="utf-8") as f:
        return json.load(f)


def restore(path: str | os.PathLike[str], target: Any) -> Any:
    """Restores a state shaped like ``target`` (a TrainState of arrays)."""
    ocp = _orbax()
    path = _check(os.fspath(path))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    checkpointer = ocp.StandardCheckpointer()
    stored = checkpointer.metadata(os.path.join(path, STATE))
    stored = getattr(stored, "item_metadata", stored)
    saved, wanted = _signature(getattr(stored, "tree", stored)), _signature(abstract)
    if saved != wanted:  # checked first: a failed orbax read leaves async errors behind
        differing = sorted(set(saved.items()) ^ set(wanted.items()))[:4]
        raise ValueError(
            f"path: the checkpoint at {path!r} does not match this trainer's state "
            f"(params / optimizer structure, shapes or dtypes differ), e.g. "
            f"{differing}. Build the Trainer with the same model and optimizer.")
    return checkpointer.restore(os.path.join(path, STATE), abstract)


def _signature(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` with paths spelled the same for dicts, dataclasses
    and named tuples, so a stored tree and a TrainState compare."""
    out = {}
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda a: hasattr(a, "shape") and hasattr(a, "dtype"))[0]
    for path, leaf in leaves:
        parts = []
        for key in path:
            for attr in ("key", "name", "idx"):
                if hasattr(key, attr):
                    parts.append(str(getattr(key, attr)))
                    break
        out["/".join(parts)] = (tuple(leaf.shape), str(leaf.dtype))
    return out


def restore_params(path: str | os.PathLike[str]) -> Any:
    """Only the params, without a target (to build a Trainer before a full restore)."""
    ocp = _orbax()
    path = _check(os.fspath(path))
    raw = ocp.StandardCheckpointer().restore(os.path.join(path, STATE))
    return raw["params"]
