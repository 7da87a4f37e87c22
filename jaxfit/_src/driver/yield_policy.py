"""The yield policy: how many steps each compiled block runs, and when the driver
waits for the device (a yield point).

``yield_every`` is ``"batch"``, ``"epoch"``, ``"never"``, ``"auto"`` (125 ms, as
tfjs) or a number of milliseconds. With an interval, blocks are sized by time:
the policy measures the seconds a step takes (wall time between two syncs over
the steps run in between; the compile of a program's first call left out) and
gives each block about one interval of steps, at most the block's slots (its
``capacity``, by bytes), at least one. A yield point comes when the work
dispatched since the last one is about an interval (steps times the measured
step time), or an interval of wall time has passed (the host is the slower
side), so the host never queues more than about an interval ahead of the
device. The first block of a fit runs one step, and the loop waits for it to
measure (a sync, not a yield point). The estimate is the wall time of the last
two windows (sync to sync) over their steps, so it follows changes (a slower
phase; validation has its own policy, its step time differs) within two
yield points.

With several processes the decisions must agree (every process runs the same
compiled calls): the policy then counts steps only, with the estimate process 0
measured, shared at each yield point (``agree``). The clock is injected so tests
drive fake time.
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
    """Sizes blocks and decides, after each dispatched block, whether to sync.

    Attributes:
      every_ms: the yield interval in milliseconds; ``None`` for no yields
        inside an epoch (blocks of ``capacity`` steps); ``0`` for a yield after
        every block.
      per_batch: whether every batch is its own block and yield point.
      now: the clock, seconds as a float.
      capacity: the most steps one block holds (its slots; set by the plan).
      shared: several processes: decide by step counts and the agreed estimate
        only (no clock).
      step_s: the measured seconds per step, or ``None`` before any sample.
    """

    every_ms: float | None
    per_batch: bool
    now: Callable[[], float] = time.perf_counter
    capacity: int = 1
    shared: bool = False
    step_s: float | None = None
    local: float | None = None  # this process's own estimate
    last: tuple[float, int] = (0.0, 0)  # the previous window: (seconds, steps)
    yielded: float = 0.0  # when the last yield point (or the epoch) began
    start: float = 0.0  # when the current window (since the last sync) began
    steps: int = 0  # steps dispatched in the current window

    def reset(self) -> None:
        """After a yield point, or at an epoch's start: the device has nothing
        queued, and the interval starts again."""
        self.yielded = self.start = self.now()
        self.steps = 0

    def measuring(self) -> bool:
        """Whether the next sync is one only to measure (no estimate yet): the
        loop then waits for the block it just dispatched (the first)."""
        return self.step_s is None and self.every_ms is not None and not self.per_batch

    def block_steps(self) -> int:
        """The number of real steps for the next block."""
        if self.per_batch:
            return 1
        if self.every_ms is None:
            return self.capacity
        if self.step_s is None:
            return 1  # the first block measures
        steps = self.every_ms / 1000.0 / max(self.step_s, 1e-9)
        if steps >= self.capacity:  # also an infinite interval
            return self.capacity
        return max(1, round(steps))

    def dispatched(self, steps: int, compiled: bool = False) -> None:
        """After a block of ``steps`` steps was dispatched; ``compiled``: its call
        compiled first (that time is not a step's: the window starts after it)."""
        if compiled:  # the same call on every process: the counts still agree
            self.start, self.steps = self.now(), 0
        self.steps += steps

    def due(self) -> bool:
        """Whether this is a yield point: the device will have run what was
        dispatched (or, in one process, the wall clock says) about an interval
        after the last one; one more block would overshoot by more than half
        of it."""
        if self.per_batch:
            return True
        if self.every_ms is None or self.step_s is None:
            return False
        finish = self.start + self.steps * self.step_s
        if not self.shared:
            finish = max(finish, self.now())
        ahead = self.block_steps() * self.step_s / 2.0
        return (finish - self.yielded + ahead) * 1000.0 >= self.every_ms

    def synced(self) -> None:
        """At a sync (everything dispatched has run): the estimate becomes the
        wall time of this window and the one before over their steps (several
        processes keep it as ``sample()`` and take process 0's at ``agree``)."""
        if self.every_ms is not None and self.steps > 0:
            seconds = max(self.now() - self.start, 0.0)
            # over this window and the one before, weighed by their steps: a
            # one-step probe (its sync's overhead included) soon counts for little
            self.local = (seconds + self.last[0]) / (self.steps + self.last[1])
            self.last = (seconds, self.steps)
            if not self.shared:
                self.step_s = self.local
        self.start, self.steps = self.now(), 0

    def sample(self) -> float:
        """This process's estimate (0 before any), for ``agree``."""
        return self.local or 0.0

    def agree(self, step_s: float) -> None:
        """Several processes: process 0's estimate, the same on every process."""
        if self.shared and self.every_ms is not None and step_s > 0:
            self.step_s = step_s


def parse(
    yield_every: Any, now: Callable[[], float] | None = None, processes: int = 1
) -> YieldPolicy:
    """Validates ``yield_every`` and builds a policy."""
    clock = now or time.perf_counter
    shared = processes > 1
    if isinstance(yield_every, str):
        if yield_every == "batch":
            return YieldPolicy(0.0, True, clock, shared=shared)
        if yield_every in ("epoch", "never"):
            return YieldPolicy(None, False, clock, shared=shared)
        if yield_every == "auto":
            return YieldPolicy(AUTO_MS, False, clock, shared=shared)
    elif (
        isinstance(yield_every, numbers.Real)
        and not isinstance(yield_every, bool)
        and cast(float, yield_every) >= 0
    ):  # a Real: see validate
        return YieldPolicy(float(yield_every), False, clock, shared=shared)
    raise ValueError(
        errors.expected(
            "yield_every",
            "one of 'auto', 'batch', 'epoch', 'never' or a number of milliseconds >= 0",
            yield_every,
        )
    )
