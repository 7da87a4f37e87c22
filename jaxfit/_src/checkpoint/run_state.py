"""What a checkpoint keeps of a training run, and how a run is put back.

A full checkpoint holds the whole ``TrainState`` (params, optimizer state with its
learning rate, model state, rng, step), the run's position (the epoch, the batches
of it already run and that epoch's running loss and metric sums), the data-order
seed, whether the run had decided to stop, every callback's ``get_state()`` (the
History so far, EarlyStopping's wait and best, ReduceLROnPlateau's counters...),
versions, and the caller's metadata (the config of a YAML run). That is exactly
what a resumed run needs to continue bit for bit: the shuffling order comes from
``(seed, pass)``, dropout keys from the saved rng, the schedule position from the
saved optimizer step.

A weights-only checkpoint holds ``{"params"}`` and the metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.core import metrics, placement
from jaxfit._src.core.state import Position

ARRAYS = "__arrays__"  # JSON placeholder for a callback value stored under extra/


def callback_keys(callbacks: list[Any]) -> list[tuple[str, Any]]:
    """``(key, callback)``: the class name, ``#k`` for the k-th repeat of a class."""
    counts: dict[str, int] = {}
    keyed = []
    for callback in callbacks:
        name = type(callback).__name__
        k = counts.get(name, 0)
        counts[name] = k + 1
        keyed.append((name if k == 0 else f"{name}#{k}", callback))
    return keyed


def _is_array_tree(value: Any) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(a, (jax.Array, np.ndarray)) for a in leaves)


def _callback_states(callbacks: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each callback's state split into its JSON part and its array part."""
    plain: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for key, callback in callback_keys(callbacks):
        state = callback.get_state()
        if state is None:
            continue
        plain[key] = {}
        for field, value in state.items():
            if _is_array_tree(value):
                arrays.setdefault(key, {})[field] = value
                plain[key][field] = ARRAYS
            else:
                plain[key][field] = value
    return plain, arrays


def save(
    trainer: Any,
    path: str | os.PathLike[str],
    *,
    weights_only: bool = False,
    metadata: dict[str, Any] | None = None,
    background: bool = False,
    after: Callable[[str], None] | None = None,
) -> orbax_io.PendingSave:
    """Writes ``trainer``'s checkpoint to ``path`` (see the module docstring)."""
    session = trainer.session
    position = session.position
    info: dict[str, Any] = {
        "weights_only": bool(weights_only),
        "step": int(placement.fetch(trainer.state.step)),
        "seed": trainer.seed,
        "metadata": dict(metadata or {}),
    }
    if weights_only:
        return orbax_io.save(
            path,
            {orbax_io.STATE: {"params": trainer.params}},
            info,
            background=background,
            after=after,
        )
    plain, arrays = _callback_states(session.callbacks)
    extra: dict[str, Any] = {}
    if arrays:
        extra["callbacks"] = arrays
    if position.batch > 0 and position.totals is not None:
        extra["totals"] = position.totals
    info["position"] = {
        "epoch": position.epoch,
        "batch": position.batch,
        "stopped": session.stopping,
    }
    info["callbacks"] = plain
    items = {orbax_io.STATE: trainer.state}
    if extra:
        items[orbax_io.EXTRA] = extra
    return orbax_io.save(path, items, info, background=background, after=after)


def restore_state(trainer: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Puts the checkpoint's TrainState (or only its params) and seed into
    ``trainer``; returns the checkpoint's metadata.

    Raises before changing anything when the checkpoint does not match.
    """
    path = orbax_io.checked_path(path)
    info = orbax_io.read_info(path)
    if info.get("weights_only"):
        restored = orbax_io.restore(path, orbax_io.STATE, {"params": trainer.params})
        trainer.session.state = trainer.state.replace(params=restored["params"])
    else:
        trainer.session.state = orbax_io.restore(path, orbax_io.STATE, trainer.state)
        trainer.seed = int(info["seed"])
    return info


def restore_run(trainer: Any, path: str | os.PathLike[str]) -> Position:
    """Restores everything a full checkpoint holds; returns where to resume."""
    path = orbax_io.checked_path(path)
    info = orbax_io.read_info(path)
    if info.get("weights_only"):
        raise ValueError(
            f"path: expected a full checkpoint to resume from, got the "
            f"weights-only checkpoint {path!r}."
        )
    extra = (
        orbax_io.restore_numpy(path, orbax_io.EXTRA)
        if orbax_io.EXTRA in info["contents"]
        else {}
    )
    restore_state(trainer, path)
    for key, callback in callback_keys(trainer.session.callbacks):
        state = info["callbacks"].get(key)
        if state is None:
            continue
        state = {
            field: extra["callbacks"][key][field] if value == ARRAYS else value
            for field, value in state.items()
        }
        callback.set_state(state)
    position = info["position"]
    totals = None
    if "totals" in extra:  # restored as dicts of numpy; the loop wants MeanStates
        host = {
            name: metrics.MeanState(value["total"], value["count"])
            for name, value in extra["totals"].items()
        }
        where = trainer.session.placement  # replicated, as the compiled step has them
        totals = where.place(host, jax.tree.map(lambda _: where.replicated, host))
    return Position(
        int(position["epoch"]),
        int(position["batch"]),
        totals,
        bool(position["stopped"]),
    )


def load_params(path: str | os.PathLike[str]) -> Any:
    """The checkpoint's params as host arrays (to build a Trainer around them)."""
    return load_arrays(path)[0]["params"]


def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's stored state as host arrays (its ``TrainState`` fields, or
    ``{"params"}`` for a weights-only checkpoint) and its metadata."""
    path = orbax_io.checked_path(path)
    return orbax_io.restore_numpy(path, orbax_io.STATE), orbax_io.read_info(path)
