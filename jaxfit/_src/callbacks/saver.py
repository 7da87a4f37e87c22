"""Saver: when and how the checkpointing callbacks write (shared by two of them).

By default a write is synchronous: the checkpoint is complete and renamed into place
before ``write`` returns, so it survives a kill the moment the callback's hook
returns (Keras' checkpoint callbacks write synchronously too), and a failed write
raises there.

With ``background=True`` orbax copies the state to host memory before ``write``
returns (so the next step may donate its buffers), and the files are written and
renamed into place on a background thread while training goes on. At most one
write per callback is in flight; the next write, and the end of training, wait
for it and re-raise its error. Until then a kill loses that newest checkpoint (the
previous one stays complete).

At the end of a fit that stopped on an error or Ctrl-C, the write in flight is
waited for quietly: its own failure becomes a one-line warning, so the error
that ended the fit is the one raised. Ctrl-C while a write is awaited lets it
finish first (``orbax_io.PendingSave``).

``save_freq="epoch"`` saves at each epoch end. ``save_freq=N`` saves at the first
yield point at which at least N batches have run since the last save: with fused
steps the state only exists at yield points (``yield_every="batch"`` makes that
exactly every N batches). Either way the checkpoint records the exact position
reached, so resuming from it is exact.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxfit._src import errors
from jaxfit._src.checkpoint import orbax_io, run_state


class Saver:
    """The writes and the ``save_freq`` schedule of one checkpointing callback."""

    def __init__(self, save_freq: Any, owner: str, background: bool = False):
        if save_freq != "epoch" and (
            isinstance(save_freq, bool)
            or not isinstance(save_freq, numbers.Integral)
            or save_freq < 1
        ):
            raise ValueError(
                errors.expected(
                    f"{owner}: save_freq",
                    "'epoch' or a positive number of batches",
                    save_freq,
                )
            )
        if not isinstance(background, bool):
            raise TypeError(
                errors.expected(
                    f"{owner}: write_in_background", "True or False", background
                )
            )
        self.save_freq = save_freq
        self.background = background
        self.since = 0  # batches run since the last save (save_freq=N)
        self._epoch_done = 0
        self._pending: orbax_io.PendingSave | None = None

    def begin_epoch(self, trainer: Any) -> None:
        self._epoch_done = trainer.session.position.batch  # > 0 when resuming mid-epoch

    def due_at_yield(self, trainer: Any) -> bool:
        """Counts the batches run since the last yield; True when a save is due."""
        if self.save_freq == "epoch":
            return False
        done = trainer.session.position.batch
        self.since += done - self._epoch_done
        self._epoch_done = done
        if self.since >= self.save_freq:
            self.since = 0
            return True
        return False

    def write(
        self,
        trainer: Any,
        path: str | os.PathLike[str],
        *,
        weights_only: bool = False,
        after: Callable[[str], None] | None = None,
        argname: str = "filepath",
        background: bool | None = None,
    ) -> None:
        """Writes ``trainer``'s checkpoint to ``path`` once the previous write is
        done; ``background`` (default: the callback's) overrides the mode.

        Raises:
          paths.PathError: ``path`` is refused, naming ``argname``.
          OSError: this write (synchronous) or the previous one failed.
        """
        background = self.background if background is None else background
        self.wait()
        pending = run_state.save(
            trainer,
            path,
            weights_only=weights_only,
            background=background,
            after=after,
            argname=argname,
        )
        if background:
            self._pending = pending
        else:
            pending.wait()  # in place now; a failed write raises here

    def wait(self, quiet: bool = False) -> None:
        """Waits for the write in flight; re-raises its error, or with ``quiet``
        (a fit ending on an error) warns it in one line."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.wait()
        except Exception as error:
            if not quiet:
                raise
            warnings.warn(
                f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=2
            )


def finite_loss(logs: dict[str, Any] | None, trainer: Any = None) -> bool:
    """False when the logs carry a NaN or infinite loss (never checkpointed).
    A population's (one loss per member): every member still training has a
    finite loss (a stopped member's reads NaN)."""
    loss = (logs or {}).get("loss")
    if loss is None or np.ndim(loss) == 0:
        return loss is None or math.isfinite(loss)
    status = getattr(trainer, "status", None) or ["running"] * np.size(loss)
    return all(
        math.isfinite(v) or (math.isnan(v) and s == "done")
        for v, s in zip(np.asarray(loss).reshape(-1), status)
    )
