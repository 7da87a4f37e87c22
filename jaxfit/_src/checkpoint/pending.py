"""``PendingSave``: a checkpoint write in flight, on its own thread.

Orbax copies device arrays to host memory before ``save`` returns, so the train
step may donate the state's buffers right after; the file writes run on a
thread, and ``PendingSave`` waits for it. A synchronous save waits at once;
Ctrl-C while it waits lets the write finish (a second Ctrl-C abandons it) and is
then raised. A background save still in flight when the interpreter exits is
joined before Python shuts its thread pools down (``_join_at_exit``), so
orbax's threads never fail with "cannot schedule new futures after interpreter
shutdown".
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable

ANNOUNCE_AFTER_S = 1.0  # a wait for a write after Ctrl-C says so after this long


_live: set[PendingSave] = set()  # background saves in flight
_live_lock = threading.Lock()
_exit_hook: list[bool] = []  # whether the join-at-exit hook is registered


def _silence_orbax() -> None:
    """Mutes orbax's logger (absl) for a write left running at exit: its
    threads would otherwise log tracebacks as Python shuts down."""
    logging.getLogger("absl").disabled = True


def _join_at_exit() -> None:
    """Joins the background saves still in flight. Runs in ``threading``'s own
    shutdown hooks, before ``concurrent.futures`` refuses new work (hooks run in
    reverse order of registration, and this one is registered after orbax's
    imports), so a write the main thread did not wait for still completes."""
    with _live_lock:
        pending = list(_live)
    for save in pending:
        try:
            save.join(at_exit=True)
        except KeyboardInterrupt:  # a second Ctrl-C: leave it, quietly
            _silence_orbax()
            return


def _register_exit_hook() -> None:
    register = getattr(threading, "_register_atexit", None)
    with _live_lock:
        if _exit_hook or register is None:
            return
        try:
            register(_join_at_exit)
        except RuntimeError:  # the interpreter is already shutting down
            return
        _exit_hook.append(True)


class PendingSave:
    """A save in flight: ``wait()`` blocks until it is in place (or raises).

    The files are written on a thread in both modes; without ``background`` the
    constructor waits for it. Ctrl-C while waiting does not stop the write: it
    finishes (a wait longer than a second says so on stderr, one line), then the
    KeyboardInterrupt is raised; a second Ctrl-C abandons the write (the
    previous checkpoint at the path is intact, the staging directory is cleaned
    at the next save).
    """

    def __init__(self, path: str, finish: Callable[[], None], background: bool):
        self.path = path
        self._error: BaseException | None = None
        self._abandoned = False
        # Waited on instead of Thread.join: a join interrupted by Ctrl-C can
        # leave the thread marked as stopped while it still runs (CPython).
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(finish,), name="jaxfit-checkpoint", daemon=True
        )
        if background:
            _register_exit_hook()
            with _live_lock:
                _live.add(self)
        self._thread.start()
        if not background:
            self.join()

    def _run(self, finish: Callable[[], None]) -> None:
        try:
            finish()
        except BaseException as error:  # noqa: BLE001 - re-raised by wait()
            self._error = error
        finally:
            with _live_lock:
                _live.discard(self)
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def join(self, at_exit: bool = False) -> None:
        """Waits for the write thread; Ctrl-C is deferred until it is done (see
        the class docstring). A wait after Ctrl-C (or, ``at_exit``, any wait)
        that lasts more than ``ANNOUNCE_AFTER_S`` says so on stderr, once."""
        if self._abandoned or self._done.is_set():
            return
        interrupted = False
        announce_at = time.monotonic() + ANNOUNCE_AFTER_S if at_exit else None
        while not self._done.is_set():
            try:
                self._done.wait(0.1)
            except KeyboardInterrupt:
                if interrupted:  # the second Ctrl-C
                    self._abandon()
                    raise
                interrupted = True
                if announce_at is None:
                    announce_at = time.monotonic() + ANNOUNCE_AFTER_S
            if announce_at is not None and time.monotonic() >= announce_at:
                announce_at = math.inf  # once
                print(
                    f"jaxfit: finishing the checkpoint write to {self.path!r} "
                    "(Ctrl-C again to abandon it).",
                    file=sys.stderr,
                    flush=True,
                )
        if interrupted:
            raise KeyboardInterrupt

    def _abandon(self) -> None:
        self._abandoned = True
        with _live_lock:
            _live.discard(self)
        _silence_orbax()
        print(
            f"jaxfit: abandoned the checkpoint write to {self.path!r}; any "
            "previous checkpoint there is intact.",
            file=sys.stderr,
            flush=True,
        )

    def wait(self) -> str:
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.path
