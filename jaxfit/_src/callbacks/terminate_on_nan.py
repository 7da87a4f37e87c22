"""TerminateOnNaN: stop at the yield point where a non-finite loss is seen."""

from __future__ import annotations

import math
from typing import Any

from jaxfit._src import errors
from jaxfit._src.core.state import copy_tree
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver.callback import Callback


class TerminateOnNaN(Callback):
    """Stops training when a batch (or epoch) loss is NaN or infinite.

    With fused steps, batch logs arrive at yield points: the run stops at the
    yield where the non-finite loss is seen (Keras stops at that batch; here the
    steps fused after it in the same block have already run).

    With ``raise_error=True`` (Keras 3's argument) it raises a
    ``RuntimeError`` naming the epoch, the batch and the loss instead, from the
    ``on_train_batch_end`` (or ``on_epoch_end``) call that sees the non-finite
    loss, at that yield point. As in Keras, ``fit`` ends with the error and the
    trainer keeps the state it had reached (with fused steps, that of the last
    step run before the yield), or the last finite one with
    ``restore_last_finite=True``. Keras says the error skips the other
    callbacks' ``on_train_end``; here ``fit`` always ends its callbacks'
    ``on_train_end`` as for any error a callback raises.

    Args:
      raise_error: raise a ``RuntimeError`` rather than stop gracefully (Keras
        3). Defaults to `False`.
      restore_last_finite: keep a device copy of the state at each yield whose
        losses were all finite, and restore it when stopping (or raising), so
        the trainer is left with finite weights. Defaults to `False` (as Keras:
        the state is the one that produced the NaN).

    Raises:
      RuntimeError: with ``raise_error=True``, at the first non-finite loss.

    Attributes:
      stopped_batch: ``(epoch, batch)`` where the non-finite loss was seen.
    """

    @errors.filter_traceback
    def __init__(self, raise_error: bool = False, restore_last_finite: bool = False):
        super().__init__()
        if not isinstance(raise_error, bool):
            raise TypeError(errors.expected("raise_error", "a bool", raise_error))
        self.raise_error = raise_error
        self.restore_last_finite = restore_last_finite
        self.stopped_batch: tuple[int, int] | None = None
        self._epoch = 0
        self._bad = False
        self._finite_state: Any = None

    def for_member(self, member: int) -> TerminateOnNaN:
        """A copy of this callback for member ``member`` of a population (each
        member's check and last finite state are its own: see the Populations guide)."""
        return callback_lib.member_copy(self)

    def on_train_begin(self, logs=None):
        self.stopped_batch = None
        self._bad = False
        if self.restore_last_finite:
            self._finite_state = copy_tree(self.trainer.state)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and not self._bad:
            self._bad = True
            self.stopped_batch = (self._epoch, batch)
            if self.raise_error:
                self._raise(f"batch {batch} of epoch {self._epoch}", loss)
            print(f"Batch {batch}: invalid loss, terminating training")

    def on_yield(self, epoch, batch, logs=None):
        if self._bad:
            self._stop()
        elif self.restore_last_finite:
            self._finite_state = copy_tree(self.trainer.state)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._bad = True
            if self.raise_error:
                self._raise(f"the end of epoch {epoch}", loss)
        if self._bad:
            self._stop()

    def _raise(self, where: str, loss: Any) -> None:
        if self.restore_last_finite and self._finite_state is not None:
            self.trainer.state = self._finite_state
            self._finite_state = None
        raise RuntimeError(
            f"NaN or Inf loss encountered at {where}. Loss value: {loss}. "
            "Terminating training immediately (TerminateOnNaN(raise_error=True))."
        )

    def _stop(self) -> None:
        self.trainer.stop_training = True
        if self.restore_last_finite and self._finite_state is not None:
            self.trainer.state = self._finite_state
            self._finite_state = None
