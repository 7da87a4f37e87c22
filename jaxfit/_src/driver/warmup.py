"""Compiling ahead: the programs a fit will need later, compiled on a background
thread while its first blocks run.

A fit's first compiled call compiles its train block in the foreground; the
programs it needs only later (the validation steps, at the end of the first
epoch) are lowered and compiled by
``jax.jit(...).lower(...).compile()`` on a thread started just before that first
call, so their compile time overlaps its compile and the first steps instead of
adding to the first epoch. JAX
keeps what it compiled there, and the later calls find it (no second compile).
The loop waits for the thread before it runs one of those programs, at the end
of the first epoch's steps, and when the fit ends. A failure there is ignored: the call compiles again and reports it.
Only in single-process runs (several processes compile in lockstep).
"""

from __future__ import annotations

import threading
from typing import Any

import jax


def specs(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree``'s arrays (what lowering needs)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=getattr(a, "sharding", None)
        ),
        tree,
    )


def sharded(sharding: Any) -> Any:
    """``tree -> tree`` giving every shape struct ``sharding``."""
    return lambda tree: jax.tree.map(lambda a: a.update(sharding=sharding), tree)


class Warmup:
    """One background thread compiling ``(jitted, argument shapes)`` jobs."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self.started = False

    def start(self, jobs: list[tuple[Any, tuple[Any, ...]]]) -> None:
        self.started = True
        if not jobs or jax.process_count() > 1:
            return

        def run() -> None:
            for jitted, args in jobs:
                try:
                    jitted.lower(*args).compile()
                except Exception:  # noqa: BLE001 - compiled (and raised) by the call
                    pass

        self._thread = threading.Thread(target=run, name="jaxfit-compile", daemon=True)
        self._thread.start()

    def busy(self) -> bool:
        """Whether a background compile is still running."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
