"""TerminateOnNaN: stop at the yield point where a non-finite loss is seen."""

from __future__ import annotations

import math
from typing import Any

from jaxfit._src import errors
from jaxfit._src.core.state import copy_tree
from jaxfit._src.driver.callback import Callback


class TerminateOnNaN(Callback):
    """Stops training when a batch (or epoch) loss is NaN or infinite.

    With fused steps, batch logs arrive at yield points: the run stops at the
    yield where the non-finite loss is seen (Keras stops at that batch; here the
    steps fused after it in the same block have already run).

    Args:
      restore_last_finite: keep a device copy of the state at each yield whose
        losses were all finite, and restore it when stopping, so the trainer is
        left with finite weights. Defaults to `False` (as Keras: the state is the
        one that produced the NaN).

    Attributes:
      stopped_batch: ``(epoch, batch)`` where the non-finite loss was seen.
    """

    @errors.filter_traceback
    def __init__(self, restore_last_finite: bool = False):
        super().__init__()
        self.restore_last_finite = restore_last_finite
        self.stopped_batch: tuple[int, int] | None = None
        self._epoch = 0
        self._bad = False
        self._finite_state: Any = None

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
        if self._bad:
            self._stop()

    def _stop(self) -> None:
        self.trainer.stop_training = True
        if self.restore_last_finite and self._finite_state is not None:
            self.trainer.state = self._finite_state
            self._finite_state = None
