"""The run directory: creating it (process 0 only), its marker and lock, its
log, history files, curves and metrics, resuming and trimming, and `jaxfit show`.

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
import csv
import dataclasses
import datetime
import functools
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import paths
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import schema
from jaxfit._src.runner.checks import _in_run_dir
from jaxfit._src.runner.schema import ConfigError, RunConfig

_MAX_PATH = 4096  # bytes of a run directory path broadcast to the other processes
_MAX_READ = 16 * 2**20  # bytes `jaxfit show` reads of one file
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
    fd = os.open(os.path.join(run_dir, paths.MARKER), os.O_RDWR)
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
    """Why ``config`` (the run's config.yaml at ``--resume``) may not continue the
    run that began with ``stored``, or ``None``: a message that starts with the
    first changed key outside ``MAY_CHANGE`` (``fit.epochs`` only upward)."""
    for key, old, new in _changes(stored, _stored(config)):
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
    """Whether training has begun (``fit`` passed its checks: ``begin`` is called
    then), and where it stands as its callbacks see it: ``(epoch, batches
    done)``."""

    def __init__(self, epoch: int, begin: Callable[[], None]):
        super().__init__()
        self.epoch, self.batch = epoch, 0
        self.started = False
        self._begin = begin

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
    """The newest complete backup's ``(epoch, batch, stopped)``, or ``None``."""
    backups = callbacks_lib.BackupAndRestore(os.path.join(run_dir, BACKUP))._backups()
    if not backups:
        return None
    position = orbax_io.read_info(backups[-1][1]).get("position") or {}
    return (
        int(position.get("epoch", 0)),
        int(position.get("batch", 0)),
        bool(position.get("stopped", False)),
    )


def _training_ended(epoch: int, batch: int, stopped: bool, epochs: int) -> bool:
    """Whether a backup at ``(epoch, batch, stopped)`` is of a finished training
    (only the run's ending is left to do)."""
    return batch == 0 and (stopped or epoch >= epochs)


_EPOCH_LINE = re.compile(r"^Epoch (\d+)[/:]")


def _trim_for_resume(config: RunConfig, run_dir: str, epoch: int) -> None:
    """Drops what the epochs from ``epoch`` (0-based) on left in run.log (``Epoch
    N/..`` and ``Epoch N: ..`` lines) and in CSVLogger files: the resumed run
    writes them again."""
    path = os.path.join(run_dir, "run.log")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        kept = [
            line
            for line in lines
            if not ((match := _EPOCH_LINE.match(line)) and int(match.group(1)) > epoch)
        ]
        text = "".join(line + "\n" for line in kept)
        _atomic(path, lambda tmp: _write_text(tmp, text))
    for callback in config.callbacks:
        if callback.name != "CSVLogger":
            continue
        args = _in_run_dir(callback.args, run_dir)
        csv_path, separator = args.get("filename"), args.get("separator", ",")
        if not isinstance(csv_path, str) or not os.path.isfile(csv_path):
            continue
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter=separator))
        kept_rows = rows[:1] + [
            row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < epoch
        ]

        _atomic(csv_path, functools.partial(_write_rows, rows=kept_rows, sep=separator))


def _write_rows(path: str, rows: list[list[str]], sep: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=sep).writerows(rows)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _appending_csv(config: RunConfig) -> RunConfig:
    """A resumed run's CSVLoggers append to what the first part wrote."""
    return dataclasses.replace(
        config,
        callbacks=[
            dataclasses.replace(c, args={**c.args, "append": True})
            if c.name == "CSVLogger"
            else c
            for c in config.callbacks
        ],
    )


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


_BACKUP_ENTRY = re.compile(r"^(backup-\d+|\.backup-\d+\.(saving|old))$")


def _remove_backups(run_dir: str) -> None:
    """Removes what the runner's BackupAndRestore wrote in ``run_dir/backup``
    (``backup-<n>`` and their staging siblings), then the directory if nothing
    else is in it (its marker aside): anything else there is left alone."""
    backup = os.path.join(run_dir, BACKUP)
    if os.path.islink(backup) or not os.path.isdir(backup):
        return
    for name in os.listdir(backup):
        path = os.path.join(backup, name)
        if (
            _BACKUP_ENTRY.match(name)
            and os.path.isdir(path)
            and not os.path.islink(path)
        ):
            shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        if set(os.listdir(backup)) <= {paths.MARKER}:
            shutil.rmtree(backup)


def show(run_dir: str | os.PathLike[str]) -> str:
    """``jaxfit show``: a summary of a run directory, whatever state it is in.

    Complete (metrics.json, the run's last file, is there), going on (a process
    holds the directory's lock), or not finished: where a ``--resume`` would
    continue. Files are read only when they are regular files, at most 16 MiB
    of each; a missing, partial or unexpected file is named in the summary
    instead of raising, and control characters (terminal escape sequences) are
    printed escaped.

    Raises:
      ConfigError: ``run_dir`` is not a directory with a readable config.yaml (one
        line).
    """
    run_dir = os.fspath(run_dir)
    config = _shown_config(run_dir)
    environment = _section(config, "environment")
    versions = _section(environment, "versions")
    optimizer = _section(config, "optimizer")
    lines = [
        f"run: {config.get('name', '?')}  ({run_dir})",
        _component_line("model", config),
        _component_line("data", config),
        f"optimizer: {optimizer.get('name', '?')} "
        f"learning_rate={optimizer.get('learning_rate', '?')}",
        f"created: {environment.get('created', '?')} on "
        f"{environment.get('backend', '?')}, jax {versions.get('jax', '?')}",
    ]
    metrics, problem = _read_json(os.path.join(run_dir, COMPLETE))
    if isinstance(metrics, dict):
        lines += _outcome(run_dir, config, metrics)
    else:
        lines += _unfinished(run_dir, config, problem)
    lines.append("files: " + ", ".join(_listing(run_dir)))
    return "\n".join(_printable(line) for line in lines)


def _shown_config(run_dir: str) -> dict[str, Any]:
    """The run directory's config.yaml as a mapping (as written: not checked).

    Raises:
      ConfigError: no such directory, no (regular) config.yaml, unreadable or
        invalid YAML, or not a mapping; one line.
    """
    expected = "run_dir: expected a jaxfit run directory (with config.yaml), got "
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{expected}{run_dir!r}, which is not a directory.")
    path = os.path.join(run_dir, "config.yaml")
    if not _regular(path):
        raise ConfigError(f"{expected}{run_dir!r}, which has no config.yaml file.")
    if os.path.getsize(path) > _MAX_READ:
        raise ConfigError(f"{expected}{run_dir!r}: its config.yaml is over 16 MiB.")
    try:
        raw, _ = config_lib.read(path)
    except (ConfigError, ValueError, RecursionError, OSError) as error:
        text = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"{expected}{run_dir!r}: {text[:300]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{expected}{run_dir!r}: its config.yaml is not a mapping "
            f"({type(raw).__name__})."
        )
    return raw


def _section(mapping: Any, key: str) -> dict[str, Any]:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _component_line(key: str, config: dict[str, Any]) -> str:
    section = _section(config, key)
    return f"{key}: {section.get('name', '?')} {section.get('args') or ''}".rstrip()


def _regular(path: str) -> bool:
    """Whether ``path`` is a regular file (not a FIFO, device or directory)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _read_text(path: str, tail: bool = False) -> str | None:
    """At most 16 MiB of the regular file ``path`` (its end with ``tail``), or
    ``None`` when it is missing, not a regular file or unreadable. Opened
    without blocking, so a FIFO swapped in is never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if tail and info.st_size > _MAX_READ:
            os.lseek(fd, info.st_size - _MAX_READ, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(_MAX_READ + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def _read_json(path: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, what is wrong)`` for a missing, unreadable,
    partial or oversized JSON file."""
    if not os.path.lexists(path):
        return None, "missing"
    if not _regular(path):
        return None, "not a regular file"
    text = _read_text(path)
    if text is None:
        return None, "unreadable"
    if len(text) > _MAX_READ:
        return None, "over 16 MiB"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, "partial or not JSON"


def _listing(run_dir: str) -> list[str]:
    """The run directory's entries, less jaxfit's hidden ones (``.jaxfit``, the
    ``.<name>.tmp`` / ``.saving`` siblings of a write in progress)."""
    try:
        return sorted(n for n in os.listdir(run_dir) if not n.startswith("."))
    except OSError:
        return ["(unreadable)"]


def _printable(text: str) -> str:
    """``text`` with control characters (terminal escapes) written as escapes."""
    return "".join(
        c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode()
        for c in text
    )


def _unfinished(run_dir: str, config: dict[str, Any], problem: str | None) -> list[str]:
    """``jaxfit show`` of a run without (a readable) metrics.json: whether it is
    going on, how to resume it, where it would continue and where it stopped."""
    lines = []
    if problem not in (None, "missing"):
        lines.append(f"metrics.json: {problem}")
    fit = _section(config, "fit")
    epochs = fit.get("epochs") if isinstance(fit.get("epochs"), int) else None
    resume = f"resume with jaxfit run --resume {run_dir}"
    if _is_locked(run_dir):
        lines.append("status: running (a jaxfit run of it holds its lock)")
    elif config.get("backup") is False:
        lines.append("status: not finished (it ran with backup: false)")
    elif _marker(run_dir) is None:
        lines.append("status: not finished (not resumable: no run marker .jaxfit)")
    else:
        try:
            newest: Any = _newest_backup(run_dir)
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            newest = "unreadable"
        lines.append(f"status: not finished ({resume})")
        if newest == "unreadable":
            lines.append("resumes: its newest backup is unreadable")
        elif newest is None:
            lines.append("resumes: from the start (no backup was written)")
        else:
            epoch, batch, stopped = newest
            lines.append(
                "resumes: "
                + (
                    "training had ended; it writes the run's files"
                    if epochs is not None
                    and _training_ended(epoch, batch, stopped, epochs)
                    else _position_words(epoch, batch, epochs, None, "at")
                )
            )
    stopped_line = _last_interruption(run_dir)
    return lines + ([f"last: {stopped_line}"] if stopped_line else [])


def _outcome(
    run_dir: str, config: dict[str, Any], metrics: dict[str, Any]
) -> list[str]:
    """``jaxfit show`` of a complete run: epochs, how it stopped, its weights and
    metrics. Epochs count from 1 here, as in the progress lines and run.log
    (history.json's "epoch" list is History.epoch: 0-based, as Keras')."""
    history, problem = _read_json(os.path.join(run_dir, "history.json"))
    lines: list[str] = []
    try:
        epochs = _section(config, "fit").get("epochs")
        counted = (
            str(len(history["epoch"]))
            if isinstance(history, dict) and isinstance(history.get("epoch"), list)
            else f"? (history.json: {problem or 'unexpected contents'})"
        )
        lines.append(
            f"epochs: {counted}"
            + (
                f" (the last: {metrics['last_epoch']}/{epochs})"
                if "last_epoch" in metrics
                else ""
            )
        )
        stopped = metrics.get("stopped_early")
        if isinstance(stopped, dict):
            lines.append(
                f"stopped early: by {stopped.get('by')} after epoch "
                f"{stopped.get('epoch')}"
            )
        if "weights_epoch" in metrics:
            lines.append(
                f"weights: epoch {metrics['weights_epoch']}'s "
                f"({metrics.get('weights', '')})"
            )
        if isinstance(metrics.get("final_epoch"), dict):
            lines.append("final epoch: " + _format(metrics["final_epoch"]))
        if isinstance(history, dict) and history.get("val_loss"):
            values = [float(v) for v in history["val_loss"]]
            epochs_of = history["epoch"][-len(values) :]
            if not all(np.isnan(values)):
                best = int(np.nanargmin(values))
                lines.append(
                    f"best val_loss: {values[best]:.4f} at epoch "
                    f"{int(epochs_of[best]) + 1}"
                )
        if isinstance(metrics.get("test"), dict):
            lines.append("test: " + _format(metrics["test"]))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        lines.append("metrics.json / history.json: unexpected contents")
    return lines


def _last_interruption(run_dir: str) -> str | None:
    """Where the last ``jaxfit run: interrupted ...`` / ``preempted ...`` line of
    run.log says the run stopped, if there is one."""
    text = _read_text(os.path.join(run_dir, "run.log"), tail=True)
    if text is None:
        return None
    found = [
        line.strip()
        for line in text.splitlines()
        if line.startswith(("jaxfit run: interrupted", "jaxfit run: preempted"))
    ]
    return found[-1].removeprefix("jaxfit run: ").split(";")[0] if found else None


def _format(values: dict[str, Any]) -> str:
    return " - ".join(
        f"{k}: {v:.4f}" if isinstance(v, (int, float)) else f"{k}: {v}"
        for k, v in values.items()
    )
