"""The yield policy: when the driver waits for the device.

``yield_every`` is ``"batch"``, ``"epoch"``, ``"never"``, ``"auto"`` (125 ms, as
tfjs) or a number of milliseconds. The clock is injected so tests drive fake time.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from collections.abc import Callable
from typing import Any, cast

from jaxfit._src import errors

AUTO_MS = 125.0


@dataclasses.dataclass
class YieldPolicy:
    """Decides, after each dispatched block, whether to sync now.

    Attributes:
      every_ms: the minimum milliseconds between yields; ``None`` for no yields
        inside an epoch; ``0`` for every batch.
      per_batch: whether every batch is its own yield point (no fusing).
      now: the clock, seconds as a float.
    """

    every_ms: float | None
    per_batch: bool
    now: Callable[[], float] = time.perf_counter
    last: float = 0.0

    def reset(self) -> None:
        self.last = self.now()

    def due(self) -> bool:
        if self.per_batch:
            return True
        if self.every_ms is None:
            return False
        return (self.now() - self.last) * 1000.0 >= self.every_ms


def parse(yield_every: Any, now: Callable[[], float] | None = None) -> YieldPolicy:
    """Validates ``yield_every`` and builds a policy."""
    clock = now or time.perf_counter
    if isinstance(yield_every, str):
        if yield_every == "batch":
            return YieldPolicy(0.0, True, clock)
        if yield_every in ("epoch", "never"):
            return YieldPolicy(None, False, clock)
        if yield_every == "auto":
            return YieldPolicy(AUTO_MS, False, clock)
    elif (
        isinstance(yield_every, numbers.Real)
        and not isinstance(yield_every, bool)
        and cast(float, yield_every) >= 0
    ):  # a Real: see validate
        return YieldPolicy(float(yield_every), False, clock)
    raise ValueError(
        errors.expected(
            "yield_every",
            "one of 'auto', 'batch', 'epoch', 'never' or a number of milliseconds >= 0",
            yield_every,
        )
    )
