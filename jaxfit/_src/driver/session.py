"""The fit session: what one training run advances, and what checkpoints read.

A ``Trainer`` always holds a session: before any ``fit`` an idle one around its
initial state, then the running (or last) fit's. The loop takes a session and
advances it (state, position, stop flag); checkpoints and callbacks read and
request through its public attributes, never through a Trainer's private ones.
The loop runs on a session without any Trainer (``tests/test_loop.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxfit._src.core.state import Position, TrainState

__all__ = ["FitSession", "Position"]


@dataclasses.dataclass
class FitSession:
    """One fit's mutable run state.

    Attributes:
      state: the ``TrainState`` as of the last dispatched step.
      placement: where the state lives and how batches are split (``Placement``).
      seed: the data-order seed (a restored checkpoint may bring its own).
      callbacks: the installed callbacks (History first), in call order.
      position: where training stands (see ``Position``).
      resume: a position to start from, set in ``on_train_begin`` by a callback
        that restored a checkpoint (``BackupAndRestore``); read once by the loop.
      running: whether a fit is running on this session.
      finished: whether the fit ended normally (early stopping included), as
        opposed to an error or an interrupt.
      stop_training: ``trainer.stop_training`` while it runs: the fit ends at the
        next yield point.
      preempted: the signal (SIGTERM) that stopped the fit at a step boundary, or
        None; set by the loop, which then raises ``Preempted``.
      spare: a ``memory.Spare`` (an intact copy of the state, put back if a call
        fails) from before a train program's first call until a sync confirms
        it ran; else None.
    """

    state: TrainState
    placement: Any
    seed: int = 0
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    position: Position = dataclasses.field(default_factory=Position)
    resume: Position | None = None
    running: bool = False
    finished: bool = False
    stop_training: bool = False
    preempted: int | None = None
    spare: Any = None  # memory.Spare

    @property
    def stopping(self) -> bool:
        """Whether a running fit has decided to stop (a checkpoint records it)."""
        return self.running and self.stop_training
