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

Every restore (``restore_state``, ``restore_run``, ``load_arrays``) first checks
the checkpoint with ``orbax_io.verify`` (its digests and fields) before orbax
reads anything, and a full checkpoint's restored step must be the one its
metadata records: a damaged checkpoint raises ``orbax_io.CheckpointCorrupted``
(one line naming the file) and nothing of the trainer changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.core import placement
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


def _steps(step: Any) -> Any:
    """The step as metadata records it: ``"step"`` (a population's: its
    members' most) and, for a population, ``"member_steps"`` (one each)."""
    value = np.asarray(placement.fetch(step))
    if value.ndim == 0:
        return {"step": int(value)}
    members = [int(v) for v in value.reshape(-1)]
    return {"step": max(members), "member_steps": members}


def _step_differs(step: Any, info: dict[str, Any]) -> bool:
    """Whether a restored step is not the one metadata.json records."""
    recorded = _steps(step)
    return any(info.get(key) != value for key, value in recorded.items())


def save(
    trainer: Any,
    path: str | os.PathLike[str],
    *,
    weights_only: bool = False,
    metadata: dict[str, Any] | None = None,
    background: bool = False,
    after: Callable[[str], None] | None = None,
    argname: str = "path",
) -> orbax_io.PendingSave:
    """Writes ``trainer``'s checkpoint to ``path`` (see the module docstring).

    Raises:
      paths.PathError: ``path`` is refused (see ``orbax_io.save``), naming
        ``argname``, before anything is written.
      OSError: the checkpoint could not be written.
    """
    session = trainer.session
    position = session.position
    info: dict[str, Any] = {
        "weights_only": bool(weights_only),
        **_steps(trainer.state.step),
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
            argname=argname,
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
    return orbax_io.save(
        path, items, info, background=background, after=after, argname=argname
    )


def restore_state(
    trainer: Any, path: str | os.PathLike[str], info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Puts the checkpoint's TrainState (or only its params) and seed into
    ``trainer``; returns the checkpoint's metadata.

    ``info``: the metadata ``orbax_io.verify`` returned for ``path`` (checked
    here when not given).

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      orbax_io.CheckpointCorrupted: the checkpoint is damaged.
      ValueError: it does not match the trainer. Nothing changes on any error.
    """
    if info is None:
        info = orbax_io.verify(path)
    path = os.path.abspath(os.fspath(path))
    if info["weights_only"]:
        restored = orbax_io.restore(path, orbax_io.STATE, {"params": trainer.params})
        trainer.session.state = trainer.state.replace(params=restored["params"])
        return info
    state = orbax_io.restore(path, orbax_io.STATE, trainer.state)
    if _step_differs(state.step, info):
        raise orbax_io.CheckpointCorrupted(
            path,
            os.path.join(path, orbax_io.STATE),
            f"holds step {_steps(state.step)['step']}, but metadata.json records "
            f"step {info['step']}",
        )
    trainer.session.state = state
    trainer.seed = info["seed"]
    return info


def _callback_state(
    path: str, key: str, state: Any, arrays: dict[str, Any]
) -> dict[str, Any]:
    """A callback's stored state with its arrays put back in place."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise orbax_io.CheckpointCorrupted(
            path,
            os.path.join(path, orbax_io.METADATA),
            f"has a damaged state for the callback {key!r}",
        )
    out = {}
    for field, value in state.items():
        if value == ARRAYS:
            if field not in arrays.get(key, {}):
                raise orbax_io.CheckpointCorrupted(
                    path,
                    os.path.join(path, orbax_io.EXTRA),
                    f"lacks the arrays of {key}.{field}",
                )
            value = arrays[key][field]
        out[field] = value
    return out


def restore_run(trainer: Any, path: str | os.PathLike[str]) -> Position:
    """Restores everything a full checkpoint holds; returns where to resume.

    Raises:
      FileNotFoundError, orbax_io.CheckpointCorrupted, ValueError: as
        ``restore_state``; also ValueError for a weights-only checkpoint.
    """
    info = orbax_io.verify(path)
    path = os.path.abspath(os.fspath(path))
    if info["weights_only"]:
        raise ValueError(
            f"path: expected a full checkpoint to resume from, got the "
            f"weights-only checkpoint {path!r}."
        )
    extra = (
        orbax_io.restore_numpy(path, orbax_io.EXTRA)
        if orbax_io.EXTRA in info["contents"]
        else {}
    )
    arrays = extra.get("callbacks", {}) if isinstance(extra, dict) else {}
    states = {
        key: _callback_state(path, key, info["callbacks"][key], arrays)
        for key, _ in callback_keys(trainer.session.callbacks)
        if info["callbacks"].get(key) is not None
    }  # all checked before anything of the trainer changes
    restore_state(trainer, path, info)
    for key, callback in callback_keys(trainer.session.callbacks):
        if key in states:
            callback.set_state(states[key])
    position = info["position"]
    totals = None
    if "totals" in extra:
        # restored as nested dicts of numpy, keyed by field names (a mean's
        # total and count, a metric object's sums): the loop rebuilds its
        # totals' types from them by path (driver.steps.restored_totals)
        host = extra["totals"]
        where = trainer.session.placement  # replicated, as the compiled step has them
        totals = where.place(host, jax.tree.map(lambda _: where.replicated, host))
    return Position(
        position["epoch"],
        position["batch"],
        totals,
        position["stopped"],
    )


def load_params(path: str | os.PathLike[str]) -> Any:
    """The checkpoint's params as host arrays (to build a Trainer around them)."""
    return load_arrays(path)[0]["params"]


def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's stored state as host arrays (its ``TrainState`` fields, or
    ``{"params"}`` for a weights-only checkpoint) and its metadata.

    Raises:
      FileNotFoundError, orbax_io.CheckpointCorrupted: as ``restore_state``.
    """
    info = orbax_io.verify(path)
    path = os.path.abspath(os.fspath(path))
    stored = orbax_io.restore_numpy(path, orbax_io.STATE)
    raw = stored.get("step") if isinstance(stored, dict) else None
    step = None if raw is None else np.asarray(raw)
    if not info["weights_only"] and (step is None or _step_differs(step, info)):
        raise orbax_io.CheckpointCorrupted(
            path,
            os.path.join(path, orbax_io.STATE),
            f"does not hold the step {info['step']} that metadata.json records",
        )
    return stored, info
