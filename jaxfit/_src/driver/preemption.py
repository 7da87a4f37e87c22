"""Preemption: SIGTERM turned into a clean stop at the next step boundary.

A TPU VM, Kubernetes and SLURM announce preemption with SIGTERM and kill the
process some seconds later (the grace period). While ``handling()`` is active
(``fit`` enters it, and the YAML runner around a whole run), SIGTERM only records
the request; the training loop calls ``due()`` after each dispatched train call
(a step boundary: with fused blocks, the end of the block), stops there with a
yield point (so ``BackupAndRestore`` writes a backup of that exact position),
ends the fit as an interrupted one (backups kept) and raises ``Preempted``.
Outside a fit, the runner checks ``requested()`` between the stages of its ending.

Several processes stop at the same step. Where ``jax.distributed`` runs JAX's
preemption service (its default), SIGTERM belongs to JAX's own notifier, which
tells every process; ``due()`` asks JAX's preemption sync
(``multihost_utils.reached_preemption_sync_point``) with a count of train calls
that is the same on every process, so all of them stop after the same call
(``handling()`` then leaves SIGTERM to JAX). Without that service, a request seen
by one process is shared at the next regular yield point, where the loop agrees
on stopping (``agreed``).

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
_depth = 0  # nested handling() blocks on the main thread (the runner around fit)
_installed = False  # whether the outermost block installed _handler
_previous: Any = None  # the handler handling() replaced
_requested: int | None = None  # the signal this process received, until clear()
_shared: int | None = None  # several processes: the request all of them know of
_calls = 0  # due() calls under JAX's preemption sync (the same on every process)


class Preempted(SystemExit):
    """SIGTERM (preemption) stopped training at a step boundary.

    Raised by ``fit`` / ``fit_dataset`` (and their async forms) and by
    ``jaxfit.run``, after the stop's yield point (where ``BackupAndRestore``
    backs up the exact position) and ``on_train_end``. Its ``code`` is
    ``128 + signum`` (143 for SIGTERM), so an uncaught one exits the process with
    the conventional status. The trainer stays usable: ``trainer.state`` is the
    state at the stop.

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


def _jax_state() -> Any:
    """``jax.distributed``'s state when its client runs, else None."""
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - another jax layout
        return None
    state = distributed.global_state
    return state if state.client is not None else None


def _jax_sync() -> Any:
    """JAX's preemption sync manager when ``jax.distributed`` runs one, else None.

    Its C++ notifier owns SIGTERM then (Python still reports the default handler,
    so ``handling()`` must ask here rather than ``signal.getsignal``)."""
    state = _jax_state()
    return None if state is None else state.preemption_sync_manager


def _processes() -> int:
    state = _jax_state()
    return 1 if state is None else int(state.num_processes)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """While active, SIGTERM sets ``requested()`` instead of killing the process.

    Installed only from the main thread and only over the default handler (a
    handler the user installed keeps SIGTERM; JAX's preemption notifier, under
    ``jax.distributed``, keeps it too and ``due()`` asks JAX); nested blocks
    share one installation. The outermost block starts with no request
    recorded; a request is kept after the block ends, until ``clear()`` or the
    next outermost block.
    """
    global _depth, _installed, _previous
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        if _depth == 0:
            clear()  # the outermost block starts clean
            current = signal.getsignal(signal.SIGTERM)
            if current in (signal.SIG_DFL, None) and _jax_sync() is None:
                _previous = current
                signal.signal(signal.SIGTERM, _handler)
                _installed = True
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _installed:
                signal.signal(
                    signal.SIGTERM,
                    signal.SIG_DFL if _previous is None else _previous,
                )
                _installed, _previous = False, None


def active() -> bool:
    """Whether a ``handling()`` block is active. ``fit`` asks before entering its
    own: inside an outer one (the runner's), the outer caller reports a
    preemption itself and ``fit`` prints nothing."""
    return _depth > 0


def requested() -> int | None:
    """The preemption request to act on, or None.

    In one process: the signal received while ``handling()`` was active (or
    ``request()``). With several processes: the request every process knows of
    (agreed at a yield point, or reached through JAX's preemption sync), so that
    all of them act on it at the same point.
    """
    return _requested if _processes() == 1 else _shared


def request(signum: int = signal.SIGTERM) -> None:
    """Records a preemption request as SIGTERM would (a seam for tests and for
    schedulers that announce preemption another way)."""
    _handler(signum, None)


def clear() -> None:
    """Forgets a recorded request (a new fit or run starts clean)."""
    global _requested, _shared
    _requested = _shared = None


def due(processes: int) -> bool:
    """After each dispatched train call: whether training stops here.

    Free in a single process without ``jax.distributed`` (a flag read). Under
    JAX's preemption sync, every process calls it after the same train calls,
    and it is True on all of them after the same one. Several processes
    without that sync stop once their requests are shared (``agreed``), after
    the next train call; one process never stops on its own (the others would
    wait for it in the next collective).
    """
    global _calls, _requested, _shared
    sync = _jax_sync()
    if sync is not None:
        _calls += 1
        if sync.reached_sync_point(_calls):
            _requested = _requested or signal.SIGTERM
            _shared = _shared or _requested
            return True
    if processes == 1:
        return _requested is not None
    return _shared is not None


def agreed(stop: bool, processes: int, value: float = 0.0) -> tuple[bool, float]:
    """At a point every process reaches (a yield point): ``stop`` and ``value``
    (the yield policy's step time) as process 0 has them, and each process's
    preemption request shared with all (``requested()`` then answers on every
    one), in one collective (none in a single process)."""
    global _shared
    if processes == 1:
        return stop, value
    import numpy as np
    from jax.experimental import multihost_utils

    flags = np.asarray(
        multihost_utils.process_allgather(
            np.asarray([float(stop), float(_requested or 0), value], np.float32)
        )
    ).reshape(processes, 3)
    signum = int(flags[:, 1].max())
    if signum and _shared is None:
        _shared = signum
    return bool(flags[0, 0]), float(flags[0, 2])


def stopped_message(session: Any, callbacks: Any) -> str:
    """Where a preempted fit stopped, and how to resume it: one line."""
    where = session.position
    name = signal.Signals(session.preempted or signal.SIGTERM).name
    head = (
        f"jaxfit: {name} (preemption): training stopped at epoch {where.epoch} "
        f"after {where.batch} of its batches"
    )
    backup = next((cb for cb in callbacks.callbacks if hasattr(cb, "backup_dir")), None)
    status = 128 + (session.preempted or signal.SIGTERM)
    if backup is None:
        return (
            f"{head}; nothing was saved (no BackupAndRestore): trainer.state is the "
            f"state there (exit status {status})."
        )
    return (
        f"{head}; a rerun of the same fit with BackupAndRestore("
        f"{backup.backup_dir!r}) resumes from its last backup (exit status {status})."
    )
