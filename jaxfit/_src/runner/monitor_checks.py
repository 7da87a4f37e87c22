"""The callbacks' monitors against the keys a run logs (``jaxfit validate`` and
``jaxfit run``, before training).

The keys come from the library's own naming: the trainer's resolved loss and
metrics (``step.make_objective(...).log_names`` on the shapes of the dataset's
labels), ``learning_rate`` when the optimizer has an injected one,
``loss_scale`` under ``mixed_float16``, and the ``val_`` twin of each loss and
metric when the run validates (``fit.validation_split`` of arrays, a
``validation`` stream). A stream read once (an iterator) is not peeked at: its
monitors are checked by the callbacks themselves when ``fit`` starts.
"""

from __future__ import annotations

import collections.abc
import tempfile
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.callbacks.monitor import MonitorCallback
from jaxfit._src.core import hyperparams
from jaxfit._src.core import step as step_lib
from jaxfit._src.data import iterables
from jaxfit._src.runner import datasets, run_callbacks
from jaxfit._src.runner.types import ConfigError


def _labels(data: Any) -> Any:
    """The labels' shapes (arrays: the train labels; a re-readable stream: its
    first batch's), or ``None`` for a stream read once."""
    if isinstance(data, datasets.StreamDataset):
        if isinstance(data.train, collections.abc.Iterator):
            return None
        first = next(iter(data.train), None)
        if first is None:
            return None
        y = iterables.parse_batch(first, 0, "data.name")[1]
    else:
        y = data.y_train
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), y)


def _validates(config: Any, data: Any) -> bool:
    if isinstance(data, datasets.StreamDataset):
        return data.validation is not None
    return float(getattr(config.fit, "validation_split", 0.0) or 0.0) > 0.0


def logged_keys(config: Any, data: Any, trainer: Any) -> list[str] | None:
    """The epoch-log keys a run of ``config`` on ``data`` with ``trainer`` has,
    in log order; ``None`` when they cannot be known before training."""
    y = _labels(data)
    if y is None:
        return None
    objective = step_lib.make_objective(
        trainer.loss,
        trainer.loss_weights,
        trainer.metrics,
        y,
        y,
        trainer.weighted_metrics,
    )
    keys = list(objective.log_names)
    if _validates(config, data):
        keys += [f"val_{key}" for key in objective.log_names]
    if hyperparams.get(trainer.state.opt_state) is not None:
        keys.append(hyperparams.KEY)
    if trainer.state.loss_scale is not None:
        keys.append("loss_scale")
    return keys


def _uses_monitor(callback: Any) -> bool:
    """Whether the callback reads its ``monitor`` (ModelCheckpoint only with
    ``save_best_only``)."""
    if not isinstance(getattr(callback, "monitor", None), str):
        return False
    return getattr(callback, "save_best_only", True) is not False


def check(config: Any, data: Any, trainer: Any) -> None:
    """Refuses a callback whose ``monitor`` the run never logs, or whose
    direction ``mode="auto"`` cannot tell.

    Raises:
      ConfigError: naming ``callbacks[i].args.monitor`` (and the keys the run
        logs) or ``callbacks[i].args.mode``.
    """
    if not config.callbacks:
        return
    keys = logged_keys(config, data, trainer)
    if keys is None:
        return
    with tempfile.TemporaryDirectory() as run_dir:
        built = run_callbacks._callbacks(config, run_dir, backup=False)
    for i, callback in enumerate(built):
        if not _uses_monitor(callback):
            continue
        if callback.monitor not in keys:
            raise ConfigError(
                errors.expected(
                    f"callbacks[{i}].args.monitor",
                    f"a key the run logs, one of {keys}",
                    callback.monitor,
                    f"{config.callbacks[i].name} would never see it"
                    + (
                        "; val_ keys need fit.validation_split (or a validation "
                        "stream)."
                        if callback.monitor.startswith("val_")
                        and f"val_{keys[0]}" not in keys
                        else "."
                    ),
                )
            )
        if isinstance(callback, MonitorCallback) and callback.mode == "auto":
            callback.set_trainer(trainer)
            try:
                callback.set_monitor_op()
            except ValueError as error:
                raise ConfigError(f"callbacks[{i}].args.{error}") from None
