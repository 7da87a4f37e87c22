"""Ctrl-C during a fit: deferred while a step's result is being stored, never lost."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class InterruptGuard:
    """Defers Ctrl-C that lands between a step's dispatch and storing its result,
    and never loses one.

    The dispatched call consumes (donates) the previous state; if
    KeyboardInterrupt struck before the new state was stored, ``trainer.state``
    would point at deleted buffers. Inside ``critical()`` the interrupt is held
    and raised right after; elsewhere it is raised at once, as usual. Python
    drops an exception raised inside a garbage-collection callback (jaxlib runs
    one), so every Ctrl-C is also recorded, and ``check()`` at each step boundary
    raises it again if the fit is still running.
    """

    def __init__(self) -> None:
        self.in_critical = False
        self.pending = False
        self.interrupted = False

    def handler(self, signum, frame) -> None:
        del signum, frame
        self.interrupted = True
        if self.in_critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raises a Ctrl-C that came during this fit and was lost on its way."""
        if self.interrupted:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        usable = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if not usable:  # another handler owns Ctrl-C, or not the main thread
            yield
            return
        signal.signal(signal.SIGINT, self.handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.in_critical = True
        try:
            yield
        finally:
            self.in_critical = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
