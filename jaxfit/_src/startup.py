"""Ctrl-C while ``import jaxfit`` runs is held, then raised once the imports end.

Importing JAX takes a second or two, and a SIGINT that lands in it can be lost:
Python runs the signal handler wherever the interpreter is, and when that is
inside a garbage-collection callback (jaxlib installs one) the
``KeyboardInterrupt`` is printed as "Exception ignored" and swallowed, so the
program goes on as if Ctrl-C had not been pressed (``jaxfit run`` then trained to
the end); inside a C extension's initialisation it becomes an ``ImportError``.
Importing this module first (``jaxfit/__init__.py`` does) records a SIGINT
instead, and ``done()`` raises ``KeyboardInterrupt`` at the end of the package's
imports. Only over Python's default handler and on the main thread; standard
library only.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_held: list[int] = []
_installed = False


def _record(signum: int, frame: Any) -> None:
    del frame
    _held.append(signum)


if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _record)
    _installed = True


def done() -> None:
    """Puts Python's handler back; raises ``KeyboardInterrupt`` if Ctrl-C came."""
    global _installed
    if _installed:
        _installed = False
        if signal.getsignal(signal.SIGINT) is _record:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if _held:
        _held.clear()
        raise KeyboardInterrupt
