"""EarlyStopping: stop when a monitored value stops improving (Keras 3 semantics)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.callbacks.monitor import MonitorCallback
from jaxfit._src.core.state import copy_tree
from jaxfit._src.driver import callback as callback_lib


class EarlyStopping(MonitorCallback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
      monitor: the log key to watch. Defaults to `"val_loss"`.
      min_delta: the smallest change that counts as an improvement. Defaults to `0`.
      patience: epochs without improvement before stopping. Defaults to `0`.
      verbose: print a line when stopping. Defaults to `0`.
      mode: ``"auto"``, ``"min"`` or ``"max"``. Defaults to `"auto"`.
      baseline: training stops if the value does not beat it within ``patience``
        epochs. Defaults to `None`.
      restore_best_weights: at the end of training, restore the params of the
        best epoch (Keras 3: whether or not training stopped early). Defaults
        to `False`.
      start_from_epoch: epochs to wait before watching. Defaults to `0`.

    A ``monitor`` the run can never log is an error at the start of ``fit``
    (Keras only warns, every epoch): a ``val_`` key in a fit without validation
    data, or (``mode="auto"``) a key whose direction cannot be told, which is
    every key that is neither ``loss`` nor a metric of the trainer.
    ``jaxfit validate`` checks a config's monitors against the exact keys the
    run logs. A key missing from one epoch's logs otherwise (validation skipped
    by ``validation_freq``, a key another callback adds later) gives a
    ``RuntimeWarning`` for that epoch, as Keras.

    Raises:
      ValueError: an unknown ``mode`` (at construction); a monitor the fit can
        never log, or whose direction ``"auto"`` cannot tell (at the start of
        ``fit``).

    Example:
      >>> import jaxfit
      >>> stop = jaxfit.callbacks.EarlyStopping(monitor="loss", patience=2)
    """

    @errors.filter_traceback
    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: Literal["auto", "min", "max"] = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        super().__init__(monitor, mode, min_delta, baseline)
        self.patience = int(patience)
        self.verbose = verbose
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: Any = None

    def for_member(self, member: int) -> EarlyStopping:
        """A copy of this callback for member ``member`` of a population (each
        member's wait, best and best weights are its own: see the Populations guide)."""
        return callback_lib.member_copy(self)

    def on_train_begin(self, logs=None):
        self.set_monitor_op()
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None

    def get_state(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        weights = state.get("best_weights")
        self.best_weights = None if weights is None else copy_tree(weights)

    def on_epoch_end(self, epoch, logs=None):
        current = self.get_monitor_value(logs)
        if current is None:
            warnings.warn(
                f"EarlyStopping: monitor={self.monitor!r} is not in the logs "
                f"(available: {sorted(logs or {})}).",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = copy_tree(self.trainer.params)
        self.wait += 1
        if self.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = copy_tree(self.trainer.params)
            if self.baseline is None or self.is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        # Epochs in messages count from 1, as the progress lines do.
        restoring = self.restore_best_weights and self.best_weights is not None
        if self.verbose and self.stopped_epoch > 0:
            print(
                f"Epoch {self.stopped_epoch + 1}: early stopping: {self.monitor} "
                f"did not improve for {self.patience} epoch"
                f"{'' if self.patience == 1 else 's'} (best "
                f"{self.best:.4g} at epoch {self.best_epoch + 1})"
                + (
                    f"; restoring the weights of epoch {self.best_epoch + 1}."
                    if restoring
                    else "."
                )
            )
        elif self.verbose and restoring:
            print(
                f"EarlyStopping: restoring the weights of epoch "
                f"{self.best_epoch + 1} (best {self.monitor}: {self.best:.4g})."
            )
        if restoring:
            self.trainer.params = self.best_weights
