"""Checkpoint methods of ``Trainer``: save, restore, load (orbax, imported lazily).

A base class of ``Trainer`` that uses only its public face (``state``, ``seed``,
``session``), so the checkpoint edge never reaches into the trainer's privates.
``save`` writes only where ``orbax_io.save`` allows (a new path, an empty
directory or a jaxfit checkpoint); ``restore`` and ``load`` check the
checkpoint's digests before reading it (``orbax_io.verify``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.checkpoint import orbax_io, run_state
from jaxfit._src.core.model import Model


class Checkpointing:
    """``save`` / ``restore`` / ``load``: checkpoint directories on orbax."""

    session: Any

    @errors.filter_traceback
    def save(
        self,
        path: str | os.PathLike[str],
        *,
        weights_only: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Saves a checkpoint directory at ``path`` (orbax); returns its absolute path.

        A full checkpoint holds the whole ``TrainState`` (params, optimizer state
        with its learning rate, model state, rng, step), the data-order seed, the
        run's position (epoch, batches of it already run, that epoch's running
        sums), the state of the running (or last) fit's callbacks (the History so
        far, EarlyStopping's counters...), and ``metadata.json`` with the jaxfit,
        jax, jaxlib and optax versions and your ``metadata``. It is written next to
        ``path`` and renamed into place, so a crash mid-save leaves any previous
        checkpoint at ``path`` intact. Called from a callback during ``fit``, it
        records the exact point reached, which ``BackupAndRestore`` resumes from.
        ``metadata.json`` also records the sha256 of every array file and of its
        own content, which ``restore`` and ``load`` check, and the directory
        holds jaxfit's marker file ``.jaxfit``.

        Args:
          path: the checkpoint directory: new, empty, or a checkpoint jaxfit
            wrote (then replaced). Anything else is refused.
          weights_only: keep only the params (``restore`` then replaces only the
            params). Defaults to `False`.
          metadata: JSON-serialisable data stored in ``metadata.json`` under
            ``"metadata"`` (the config of a YAML run). Defaults to `None`.

        Returns:
          The absolute checkpoint path.

        Raises:
          ValueError: ``path`` is ``""``, ``"."``, the working or home directory
            (or a parent of one), or an existing directory that is not a
            checkpoint jaxfit wrote; nothing is written.
          OSError: the checkpoint could not be written (disk full, permissions);
            any previous checkpoint at ``path`` is kept.
        """
        return run_state.save(
            self, path, weights_only=weights_only, metadata=metadata
        ).wait()

    @errors.filter_traceback
    def restore(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Replaces ``trainer.state`` (and the data-order seed) with a checkpoint's.

        A weights-only checkpoint replaces only the params. The run's position and
        callback states are for ``BackupAndRestore``; ``restore`` leaves them.
        Arrays are placed like the trainer's current state, so a checkpoint written
        on several devices restores onto one (and the reverse).

        Returns:
          The checkpoint's ``metadata.json`` as a dict.

        Raises:
          FileNotFoundError: no checkpoint at ``path``.
          ValueError: the checkpoint does not match this trainer (another model or
            optimizer); the message names the first differing path and both shapes,
            and ``trainer.state`` is unchanged. Or it is damaged (a file changed
            since it was written, ``metadata.json`` edited or unreadable, a
            directory missing): one line naming the file, checked before anything
            is read.
        """
        if self.session.running:
            raise RuntimeError(
                "restore: the trainer is running a fit; restore "
                "between calls, or use callbacks.BackupAndRestore."
            )
        return run_state.restore_state(self, path)

    @classmethod
    @errors.filter_traceback
    def load(
        cls,
        path: str | os.PathLike[str],
        apply_fn: Callable[..., Any] | Model,
        **kwargs: Any,
    ) -> Any:
        """Builds a Trainer around a checkpoint's params, then restores it whole.

        ``Trainer.load(path, apply, optimizer=..., loss=...)``: the keyword
        arguments are those of ``Trainer`` (the optimizer must be the one the
        checkpoint was trained with, for its state to fit).
        ``Trainer.load(path, apply)`` without an optimizer loads for inference:
        the params, model state, step, rng and seed, not the optimizer state;
        ``predict`` works, and ``compile(optimizer=..., loss=...)`` makes it
        trainable (with a fresh optimizer state).

        ``apply_fn`` may be a ``jaxfit.Model`` (``jaxfit.from_flax(...)``...):
        its params and state are then the template the checkpoint is read into
        (their structure, shapes and dtypes must match the checkpoint's; their
        values are replaced), so an Equinox module's params keep their type.

        Args:
          path: the checkpoint directory (``trainer.save``, ``ModelCheckpoint``).
          apply_fn: the apply function, or a ``jaxfit.Model``.
          **kwargs: ``Trainer``'s keyword arguments (without ``params``, and
            without ``state`` for a ``Model``).

        Returns:
          The ``Trainer``.

        Raises:
          FileNotFoundError, ValueError: as ``restore`` (a damaged checkpoint
            included); ``ValueError`` too for a ``Model`` whose params or state
            do not match the checkpoint, naming the first differing path, and
            for a population's checkpoint or ``population`` given (build the
            population with ``Trainer(..., population=N)`` and ``restore``
            it; one member is ``trainer.member(i)``, saved on its own).
        """
        stored, info = run_state.load_arrays(path)
        _one_model(path, info, kwargs)
        build: Any = cls  # the Trainer this mixin is part of, with its constructor
        if kwargs.get("optimizer") is not None:
            if isinstance(apply_fn, Model):  # its params: the restore template
                trainer = build(apply_fn, **kwargs)
            else:
                trainer = build(apply_fn, stored["params"], **kwargs)
            run_state.restore_state(trainer, path, info)  # verified already
            return trainer
        # for inference: everything but the optimizer state
        if isinstance(apply_fn, Model):
            trainer = build(_stored_model(apply_fn, stored, path), **kwargs)
        else:
            if stored.get("model_state") is not None:
                kwargs.setdefault("state", stored["model_state"])
            trainer = build(apply_fn, stored["params"], **kwargs)
        if not info.get("weights_only"):
            trainer.state = trainer.state.replace(
                step=stored["step"], rng=stored["rng"]
            )
            trainer.seed = int(info["seed"])
        return trainer


def _one_model(path: Any, info: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Refuses a population's checkpoint, or ``population``, in ``load``."""
    members = info.get("member_steps")
    if members is None and kwargs.get("population") is None:
        return
    got = (
        f"the checkpoint of a population of {len(members)} members"
        if members is not None
        else f"population={kwargs['population']!r}"
    )
    raise ValueError(
        errors.expected(
            "path",
            "a checkpoint of one model (load builds one Trainer)",
            errors.Description(f"{got} at {os.fspath(path)!r}"),
            "Build the population as it was, Trainer(..., population=N, "
            "hyperparams=...), and call trainer.restore(path); for one member, "
            "save trainer.member(i).",
        )
    )


def _like(template: Any, stored: Any, argname: str, path: Any) -> Any:
    """``stored``'s arrays in ``template``'s structure, matched by tree path.

    Raises:
      ValueError: a path, shape or dtype that differs, naming it.
    """
    is_leaf = lambda a: hasattr(a, "shape") and hasattr(a, "dtype")  # noqa: E731
    found = {
        orbax_io.path_key(p): leaf
        for p, leaf in jax.tree_util.tree_flatten_with_path(stored, is_leaf=is_leaf)[0]
    }
    wanted, treedef = jax.tree_util.tree_flatten_with_path(template, is_leaf=is_leaf)
    leaves = []
    for p, leaf in wanted:
        key = orbax_io.path_key(p)
        value = found.pop(key, None)
        if value is None or (value.shape, value.dtype) != (leaf.shape, leaf.dtype):
            got = "nothing" if value is None else f"{value.shape} {value.dtype}"
            raise ValueError(
                f"path: the checkpoint at {os.fspath(path)!r} does not match the "
                f"Model's {argname}: at {key!r} it holds {got}, the Model has "
                f"{leaf.shape} {leaf.dtype}. Build the Model as the run that "
                "saved it did."
            )
        leaves.append(value)
    if found:
        raise ValueError(
            f"path: the checkpoint at {os.fspath(path)!r} has {argname} "
            f"{sorted(found)[0]!r}, which the Model has not."
        )
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _stored_model(model: Model, stored: dict[str, Any], path: Any) -> Model:
    """``model`` with the checkpoint's params and model state."""
    params = _like(model.params, stored["params"], "params", path)
    state = model.state
    if stored.get("model_state") is not None and model.state is not None:
        state = _like(model.state, stored["model_state"], "state", path)
    return Model(model.apply_fn, params, state)
