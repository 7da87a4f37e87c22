"""Preemption: SIGTERM turned into a clean stop at the next step boundary.

A TPU VM, Kubernetes and SLURM announce preemption with SIGTERM and kill the
process some seconds later. While ``handling()`` is active (``fit`` enters it, and
the YAML runner around a whole run), SIGTERM only records the request; the
training loop checks ``requested()`` after each dispatched block, stops there with
a yield point (so ``BackupAndRestore`` writes a backup of that exact position),
ends the fit as an interrupted one (backups kept) and raises ``Preempted``.
Outside a fit, the runner checks ``requested()`` between the stages of its ending.

``Preempted`` is a ``SystemExit`` whose code is the conventional ``128 + signum``
(143 for SIGTERM): uncaught, the process exits with that status and no
traceback, as a process killed by the signal would report to its scheduler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_depth = 0  # nested handling() blocks (the runner around fit)
_previous: Any = None  # the handler handling() replaced
_requested: int | None = None  # the signal received, until clear()


class Preempted(SystemExit):
    """SIGTERM (preemption) stopped training at a step boundary.

    Raised by ``fit`` / ``fit_dataset`` (and their async forms) and by
    ``jaxfit.run``. Its ``code`` is ``128 + signum`` (143 for SIGTERM), so an
    uncaught one exits the process with the conventional status.

    Attributes:
      signum: the signal received.
      message: one line, where training stopped (and how to resume, when known).
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _handler(signum: int, frame: Any) -> None:
    del frame
    global _requested
    _requested = signum


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """While active, SIGTERM sets ``requested()`` instead of killing the process.

    Installed only from the main thread and only over the default handler (a
    handler the user installed keeps SIGTERM); nested blocks share one
    installation. The outermost block starts with no request recorded; a
    request is kept after the block ends, until ``clear()`` or the next
    outermost block.
    """
    global _depth, _previous
    usable = threading.current_thread() is threading.main_thread()
    installed = False
    if usable:
        with _lock:
            if _depth == 0:
                current = signal.getsignal(signal.SIGTERM)
                if current in (signal.SIG_DFL, None):
                    _previous = current
                    clear()  # the outermost block starts clean
                    signal.signal(signal.SIGTERM, _handler)
                    installed = True
            elif signal.getsignal(signal.SIGTERM) is _handler:
                installed = True
            if installed:
                _depth += 1
    try:
        yield
    finally:
        if installed:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    signal.signal(
                        signal.SIGTERM,
                        signal.SIG_DFL if _previous is None else _previous,
                    )
                    _previous = None


def requested() -> int | None:
    """The preemption signal received while ``handling()`` was active, or None."""
    return _requested


def request(signum: int = signal.SIGTERM) -> None:
    """Records a preemption request as SIGTERM would (a seam for tests and for
    schedulers that announce preemption another way)."""
    _handler(signum, None)


def clear() -> None:
    """Forgets a recorded request (a new fit or run starts clean)."""
    global _requested
    _requested = None
