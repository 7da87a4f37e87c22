"""The run directory: creating it (process 0 only), its marker and lock, its
log, history files, curves and backups, resuming and trimming (``jaxfit show``
reads it: see ``show``; the ending writes it: see ``ending``).

A run directory is made by jaxfit (``os.mkdir``, never an existing directory)
and marked as jaxfit's by ``.jaxfit`` (``paths.MARKER``), a JSON file that also
holds the resolved config the run began with (``_stored``): ``--resume`` compares
the run's ``config.yaml`` with it (``_config_change``). While a run lasts, its
process holds an exclusive ``fcntl.flock`` on that marker (``_locked``): a second
``jaxfit run --resume`` of the directory is refused, and the operating system
releases the lock when the process ends, however it ends (SIGKILL included).
Every file of the ending is written atomically (a ``.<name>.tmp`` sibling, then
``os.replace``), so a kill never leaves a half-written one in place.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import paths
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.runner import schema
from jaxfit._src.runner.schema import ConfigError, RunConfig

_MAX_PATH = 4096  # bytes of a run directory path broadcast to the other processes
RUN_KIND = "run"  # the marker's "kind" in a run directory
COMPLETE = "metrics.json"  # written last, atomically: the run is complete
BACKUP = "backup"  # the runner's BackupAndRestore directory in the run directory
# What may differ between a run's stored config and its config.yaml at --resume.
MAY_CHANGE = ("fit.epochs", "fit.verbose", "compilation_cache")


def _environment() -> dict[str, Any]:
    return {
        "versions": orbax_io.versions(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _checked_workdir(workdir: Any) -> str:
    """``workdir`` once it can hold run directories: an existing directory or a
    path to make one at (run directories are always new subdirectories).

    Raises:
      ConfigError: ``""``, a file, a path under a file, or not a path (one line),
        before anything is created.
    """
    expected = "workdir: expected a directory to make run directories in"
    if not isinstance(workdir, (str, os.PathLike)) or isinstance(
        os.fspath(workdir), bytes
    ):
        raise ConfigError(f"{expected}, got {schema._describe(workdir)}")
    text = os.fspath(workdir)
    if not text.strip():
        raise ConfigError(f"{expected}, got {text!r}: name one, e.g. 'runs'.")
    if "\0" in text:
        raise ConfigError(f"{expected}, got {text!r}, which holds a NUL character.")
    if os.path.lexists(text) and not os.path.isdir(text):
        raise ConfigError(f"{expected}, got {text!r}, which is a file.")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{expected}, got {text!r}, under the file {parent!r}.")
    return text


def _stored(config: RunConfig) -> dict[str, Any]:
    """The config as the marker stores it: plain JSON data, without the
    ``environment`` section (versions and devices, not part of the experiment)."""
    value = {k: v for k, v in schema.to_dict(config).items() if k != "environment"}
    return json.loads(json.dumps(value, default=str))


def _make_run_dir(workdir: str, name: str, config: RunConfig) -> str:
    """``<workdir>/<name>-<timestamp>``, never an existing directory, marked as
    jaxfit's with ``config`` stored in the marker. The workdir is made if missing
    (never marked or removed: it is the user's place)."""
    os.makedirs(workdir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(workdir, f"{name}-{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.mkdir(path)  # atomic: fails if another run took the name
        except FileExistsError:
            continue
        marker = {"created_by": "jaxfit", "kind": RUN_KIND, "config": _stored(config)}
        _write_json(os.path.join(path, paths.MARKER), marker)
        return os.path.abspath(path)
    raise RuntimeError(f"could not create a run directory next to {base!r}")


def _marker(run_dir: str) -> dict[str, Any] | None:
    """The run directory's marker, or ``None`` when it is missing or not a run
    directory's."""
    try:
        with open(os.path.join(run_dir, paths.MARKER), encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("kind") == RUN_KIND else None


@contextlib.contextmanager
def _locked(run_dir: str) -> Iterator[None]:
    """Holds the run directory's lock (an exclusive ``flock`` on its marker) while
    the block runs; the OS drops it when the process ends, however it ends.

    Raises:
      ConfigError: another process holds it (a run of this directory is going on).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    marker = os.path.join(run_dir, paths.MARKER)
    try:
        fd = os.open(marker, os.O_RDWR)
    except OSError:
        try:  # a read-only copy: a shared-mode open still takes the lock here
            fd = os.open(marker, os.O_RDONLY)
        except OSError as error:
            raise ConfigError(
                f"--resume: cannot open {marker!r} to lock the run directory: "
                f"{error.strerror or error}."
            ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"--resume: {run_dir!r} is in use: another jaxfit run of it is "
                "going on (it holds the directory's lock); wait for it to end."
            ) from None
        yield
    finally:
        os.close(fd)


def _is_locked(run_dir: str) -> bool:
    """Whether a process holds the run directory's lock (the run is going on)."""
    try:
        import fcntl

        fd = os.open(os.path.join(run_dir, paths.MARKER), os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


_MISSING = object()  # a key one side of ``_changes`` lacks


def _changes(old: Any, new: Any, key: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of each leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*old, *(k for k in new if k not in old)]:
            sub = f"{key}.{name}" if key else str(name)
            if name not in old or name not in new:
                yield sub, old.get(name, _MISSING), new.get(name, _MISSING)
            else:
                yield from _changes(old[name], new[name], sub)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from _changes(a, b, f"{key}[{i}]")
    elif json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
        yield key, old, new


def _config_change(stored: dict[str, Any], config: RunConfig) -> str | None:
    """Why ``config`` (config.yaml at ``--resume``) may not continue the run begun
    with ``stored``, or ``None``: the first changed key outside ``MAY_CHANGE``
    (``fit.epochs`` only upward; a key new since, like ``tracking``, at None: no)."""
    for key, old, new in _changes(stored, _stored(config)):
        if old is _MISSING and new is None:
            continue
        if key in MAY_CHANGE and not (
            key == "fit.epochs"
            and isinstance(old, int)
            and (not isinstance(new, int) or new < old)
        ):
            continue
        began = "no such key" if old is _MISSING else repr(old)
        now = "no such key" if new is _MISSING else repr(new)
        return (
            f"{key}: expected the value the run began with, {began}, got {now}: "
            "--resume continues the same experiment, so config.yaml may change "
            "only fit.epochs (upward), fit.verbose and compilation_cache. Put it "
            "back, or start a new run."
        )
    return None


class _Tee:
    """Writes to every stream; the log (the last one) is flushed at every write,
    so what was printed is on disk even if the process is killed next."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        self.streams[-1].flush()
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _logging_to(path: str) -> Iterator[None]:
    """Copies stdout and stderr into ``path`` while the run lasts, line by line
    (flushed at every write)."""
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def _dump_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)


def _atomic(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into the sibling ``.<name>.tmp``, then renames it to
    ``path``: a kill leaves the previous file (or none), never a partial one."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp")
    if os.path.isfile(tmp) and not os.path.islink(tmp):
        os.remove(tmp)  # left by a killed write
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _write_json(path: str, value: Any) -> None:
    """``value`` as the JSON file ``path``, atomically."""
    _atomic(path, lambda tmp: _dump_json(tmp, value))


def _position_words(
    epoch: int,
    batch: int,
    epochs: int | None,
    steps: int | None,
    preposition: str = "in",
) -> str:
    """Where a run stands, 1-based as the progress lines count: ``in epoch 3/4
    after batch 2/8``, ``after epoch 2/4``; ``preposition="at"`` for where one
    starts (``at epoch 3/4``)."""

    def of(n: int, total: int | None) -> str:
        return f"{n}/{total}" if total else str(n)

    if preposition == "at":
        words = f"at epoch {of(epoch + 1, epochs)}"
        return words + (f", after batch {of(batch, steps)}" if batch else "")
    if batch == 0:
        return (
            "before the first batch"
            if epoch == 0
            else (f"after epoch {of(epoch, epochs)}")
        )
    return f"in epoch {of(epoch + 1, epochs)} after batch {of(batch, steps)}"


class _Tracker(callback_lib.Callback):
    """Whether training has begun (``begin`` is called then), where it stands:
    ``(epoch, batches done)``, and the wall time: seconds since it was made, plus
    a resumed run's earlier segments' (its state in the backups)."""

    def __init__(self, epoch: int, begin: Callable[[], None]):
        super().__init__()
        self.epoch, self.batch = epoch, 0
        self.started = False
        self._begin = begin
        self._start = time.monotonic()
        self._before = 0.0  # the earlier segments' seconds (a resumed run)

    def elapsed(self) -> float:
        """The run's wall time so far, in seconds (all its segments)."""
        return self._before + time.monotonic() - self._start

    def get_state(self):
        return {"wall_time_s": self.elapsed()}

    def set_state(self, state):
        value = state.get("wall_time_s") if isinstance(state, dict) else None
        if isinstance(value, (int, float)) and value >= 0:
            self._before = float(value)

    def on_train_begin(self, logs=None):
        self.started = True
        self._begin()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.batch = epoch, 0

    def on_yield(self, epoch, batch, logs=None):
        self.epoch, self.batch = epoch, batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.batch = epoch + 1, 0


def _stopped_at(trainer: Any, tracker: _Tracker) -> str:
    """Where an interrupted fit stopped: as of ``trainer.state`` where the trainer
    tells (the steps dispatched before Ctrl-C finish), else as of the last yield
    point."""
    position: Any = getattr(getattr(trainer, "session", None), "position", None) or (
        getattr(trainer, "_position", None)
    )
    epoch, batch = (
        (position.epoch, position.batch)
        if hasattr(position, "batch")
        else (tracker.epoch, tracker.batch)
    )
    params = trainer.history.params if trainer.history is not None else {}
    return _position_words(epoch, batch, params.get("epochs"), params.get("steps"))


def _resume_point(config: RunConfig, run_dir: str) -> tuple[int, int, bool]:
    """``(epoch, batch, stopped)`` (0-based) where ``--resume`` continues: the
    newest complete backup's position (``stopped``: a callback had ended
    training), or the start."""

    newest = _newest_backup(run_dir)
    return newest if newest is not None else (config.fit.initial_epoch, 0, False)


def _newest_backup(run_dir: str) -> tuple[int, int, bool] | None:
    """The newest intact backup's ``(epoch, batch, stopped)`` (the one a resume
    restores: a damaged newest one is passed over), or ``None``."""
    backup = callbacks_lib.BackupAndRestore(os.path.join(run_dir, BACKUP))
    newest = backup.newest_intact()
    if newest is None:
        return None
    position = newest[1].get("position") or {}
    return (
        int(position.get("epoch", 0)),
        int(position.get("batch", 0)),
        bool(position.get("stopped", False)),
    )


def _training_ended(epoch: int, batch: int, stopped: bool, epochs: int) -> bool:
    """Whether a backup at ``(epoch, batch, stopped)`` is of a finished training
    (only the run's ending is left to do)."""
    return batch == 0 and (stopped or epoch >= epochs)


def _silent(*args: Any, **kwargs: Any) -> None:
    del args, kwargs


def _process_index() -> int:
    """This process's index (0 writes the run directory); a seam for tests."""
    return jax.process_index()


def _shared_path(path: str | None) -> str:
    """Process 0's ``path``, on every process."""
    if jax.process_count() == 1:
        assert path is not None
        return path
    from jax.experimental import multihost_utils

    buffer = np.zeros(_MAX_PATH, np.uint8)
    if path is not None:
        encoded = os.fsencode(path)
        if len(encoded) > _MAX_PATH:
            raise ValueError(
                f"workdir: the run directory path is longer than "
                f"{_MAX_PATH} bytes: {path!r}"
            )
        buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8)
    return os.fsdecode(shared.tobytes().rstrip(b"\0"))


def _plot(history: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure = history.plot()
    try:
        _atomic(
            path,
            lambda tmp: figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight"),
        )
    finally:
        plt.close(figure)


def _remove_backups(run_dir: str) -> None:
    """Removes what the runner's BackupAndRestore wrote in ``run_dir/backup``
    (its ``BackupAndRestore.remove_backups``): anything else there is left alone."""
    backup = os.path.join(run_dir, BACKUP)
    if os.path.islink(backup) or not os.path.isdir(backup):
        return
    callbacks_lib.BackupAndRestore(backup).remove_backups()
