"""Learning-rate control between epochs, without recompiling (Keras arguments).

Both callbacks need an optimizer built with ``optax.inject_hyperparams`` (a
constant or a scheduled rate). A constant rate is the array the injection keeps
in the optimizer state; a scheduled one is scaled (``ReduceLROnPlateau``) or taken
over (``LearningRateScheduler``) through arrays of the state (see
``trainer.learning_rate``); the compiled step is untouched. The rate applied is
logged as ``learning_rate`` and saved with the state.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from jaxfit._src import errors
from jaxfit._src.callbacks.monitor import MonitorCallback
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver.callback import Callback

MSG_NO_LR = (
    "{name}: the optimizer's learning rate cannot be controlled: expected an "
    "optimizer built with optax.inject_hyperparams, e.g. "
    "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3) or "
    "(learning_rate=optax.exponential_decay(1e-3, 100, 0.9)), got {optimizer}."
)


def _require_lr(callback: Callback) -> float:
    value = callback.trainer.learning_rate
    if value is None:
        raise ValueError(
            MSG_NO_LR.format(
                name=type(callback).__name__,
                optimizer=errors.describe(callback.trainer.optimizer),
            )
        )
    return value


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch's start from ``schedule(epoch, lr)``.

    ``lr`` is the current rate (at epoch 0 the optimizer's initial one). With a
    scheduled injected rate (``optax.inject_hyperparams(optax.adam)(
    learning_rate=optax.exponential_decay(...))``) the callback takes over from
    the optax schedule: the rate is what ``schedule`` returns, for every step of
    the epoch (as ``trainer.learning_rate = v``). Keras refuses a schedule here.

    Args:
      schedule: ``schedule(epoch, lr) -> new lr`` (or ``schedule(epoch)``).
      verbose: print each change. Defaults to `0`.

    Raises:
      ValueError: at train begin, when the optimizer has no injected learning rate.

    Example:
      >>> import jaxfit
      >>> cb = jaxfit.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9)
    """

    @errors.filter_traceback
    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                errors.expected("schedule", "a callable (epoch, lr) -> lr", schedule)
            )
        self.schedule = schedule
        self.verbose = verbose
        try:
            self._takes_lr = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._takes_lr = True

    def for_member(self, member: int) -> LearningRateScheduler:
        """A copy of this callback for member ``member`` of a population (each
        member's schedule acts on its rate; its own: see the Populations guide)."""
        return callback_lib.member_copy(self)

    def on_train_begin(self, logs=None):
        _require_lr(self)

    def on_epoch_begin(self, epoch, logs=None):
        lr = _require_lr(self)
        new = self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)
        new = float(new)
        if not np.isfinite(new):
            raise ValueError(errors.expected("schedule", "a finite learning rate", new))
        self.trainer.learning_rate = new
        if self.verbose:
            print(
                f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                f"{new}."
            )


class ReduceLROnPlateau(MonitorCallback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Keras 3 semantics: after ``patience`` epochs without an improvement larger
    than ``min_delta``, ``lr = max(lr * factor, min_lr)``, then ``cooldown`` epochs
    pass before counting again.

    With a scheduled injected rate (``optax.inject_hyperparams(optax.adam)(
    learning_rate=optax.exponential_decay(...))``; Keras refuses a schedule) the
    schedule goes on, scaled: its scale, part of the optimizer state (saved and
    restored with it), is multiplied by ``new / lr``, where ``lr`` is the rate
    the last step applied; ``min_lr`` bounds the rate at the reduction, and the
    schedule may decay below it afterwards. The logged ``learning_rate`` is the
    scaled rate. After ``LearningRateScheduler`` or ``trainer.learning_rate = v``
    took over, the rate itself is reduced.

    Args:
      monitor: the log key. Defaults to `"val_loss"`.
      factor: the multiplier, < 1. Defaults to `0.1`.
      patience: epochs without improvement. Defaults to `10`.
      verbose: print each reduction. Defaults to `0`.
      mode: ``"auto"``, ``"min"`` or ``"max"``. Defaults to `"auto"`.
      min_delta: the smallest change counted as an improvement. Defaults to `1e-4`.
      cooldown: epochs to wait after a reduction. Defaults to `0`.
      min_lr: the lower bound. Defaults to `0.0`.

    Example:
      >>> import jaxfit
      >>> reduce = jaxfit.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5,
      ...                                             patience=3)
      >>> reduce.factor, reduce.patience
      (0.5, 3)
    """

    @errors.filter_traceback
    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ValueError(errors.expected("factor", "a float < 1.0", factor))
        if kwargs:
            raise TypeError(
                errors.expected("ReduceLROnPlateau", "Keras' arguments", sorted(kwargs))
            )
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.wait = 0
        self.cooldown_counter = 0
        self.best: float | None = None

    def for_member(self, member: int) -> ReduceLROnPlateau:
        """A copy of this callback for member ``member`` of a population (each
        member's counters and rate are its own: see the Populations guide)."""
        return callback_lib.member_copy(self)

    def on_train_begin(self, logs=None):
        _require_lr(self)
        self.set_monitor_op()  # the direction, and a monitor fit can log
        self.wait = 0
        self.cooldown_counter = 0
        self.best = None

    def get_state(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
            "best": self.best,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.best = None if state["best"] is None else float(state["best"])

    def on_epoch_end(self, epoch, logs=None):
        current = self.get_monitor_value(logs)
        if current is None:
            warnings.warn(
                f"ReduceLROnPlateau: monitor={self.monitor!r} is not in the "
                f"logs (available: {sorted(logs or {})}).",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:  # re-read after the decrement, as Keras
            self.wait += 1
            if self.wait >= self.patience:
                lr = _require_lr(self)
                if lr > np.float32(self.min_lr):
                    new = max(lr * self.factor, self.min_lr)
                    self.trainer._reduce_learning_rate(new)
                    if self.verbose:
                        print(
                            f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                            f"rate to {new}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0
