"""``jaxfit show RUN_DIR``: a summary of a run directory, whatever state it is in.

Complete (metrics.json, the run's last file, is there), going on (a process holds
the directory's lock), or not finished: where a ``--resume`` would continue and
where the run stopped; a population run's members and mean ± std per setting
(``population_report``). Robust to any directory contents: files are read only when
they are regular files (a FIFO is never opened for reading), at most 16 MiB of
each; a missing, partial or unexpected file is named in the summary instead of
raising; control characters (terminal escape sequences) are printed escaped.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import numpy as np

from jaxfit._src.runner import population_report, yaml_reader
from jaxfit._src.runner.rundir import (
    COMPLETE,
    _is_locked,
    _marker,
    _newest_backup,
    _position_words,
    _training_ended,
)
from jaxfit._src.runner.schema import ConfigError

_MAX_READ = 16 * 2**20  # bytes read of one file


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
    lines += _tracking_line(run_dir)
    lines.append("files: " + ", ".join(_listing(run_dir)))
    return "\n".join(_printable(line) for line in lines)


def _tracking_line(run_dir: str) -> list[str]:
    """``tracking: MLflow run <id> (<uri>)`` when the run is tracked
    (tracking.json, as ``tracking`` writes it), else nothing."""
    record, _ = _read_json(os.path.join(run_dir, "tracking.json"))
    mlflow = record.get("mlflow") if isinstance(record, dict) else None
    if not isinstance(mlflow, dict) or not isinstance(mlflow.get("run_id"), str):
        return []
    return [f"tracking: MLflow run {mlflow['run_id']} ({mlflow.get('tracking_uri')})"]


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
        raw, _ = yaml_reader.read(path)
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
        if isinstance(metrics.get("stop_reason"), str):
            lines.append(f"stopped: {metrics['stop_reason']}")
        elif isinstance(stopped, dict):  # a metrics.json of jaxfit 0.1.0's runner
            lines.append(
                f"stopped early: by {stopped.get('by')} after epoch "
                f"{stopped.get('epoch')}"
            )
        if "weights_epoch" in metrics:
            lines.append(
                f"weights: epoch {metrics['weights_epoch']}'s "
                f"({metrics.get('weights', '')})"
            )
        best = metrics.get("best_member")  # a population's: runner.population_report
        whose = f" (best member {best['member']})" if isinstance(best, dict) else ""
        if isinstance(metrics.get("final_epoch"), dict):
            lines.append(f"final epoch{whose}: " + _format(metrics["final_epoch"]))
        lines += _best_line(metrics, history)
        if isinstance(metrics.get("test"), dict):
            lines.append(f"test{whose}: " + _format(metrics["test"]))
        if isinstance(metrics.get("per_member"), list):
            lines += population_report.show_lines(metrics)
        if isinstance(metrics.get("wall_time_s"), (int, float)):
            lines.append(f"wall time: {_duration(float(metrics['wall_time_s']))}")
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        lines.append("metrics.json / history.json: unexpected contents")
    return lines


def _best_line(metrics: dict[str, Any], history: Any) -> list[str]:
    """``best <monitor> (<mode>, <who>): <value> at epoch <n>``: the metric the run
    monitored (metrics.json's ``monitor``), or for an older metrics.json the best
    val_loss in history.json."""
    monitor = metrics.get("monitor")
    if isinstance(monitor, dict) and monitor.get("name"):
        who = f", {monitor['by']}" if monitor.get("by") else ""
        head = f"best {monitor['name']} ({monitor.get('mode')}{who})"
        if not isinstance(monitor.get("best"), (int, float)):
            return [f"{head}: none (never logged, or never finite)"]
        return [f"{head}: {monitor['best']:.4f} at epoch {monitor.get('best_epoch')}"]
    if not (isinstance(history, dict) and history.get("val_loss")):
        return []
    values = [float(v) for v in history["val_loss"]]
    epochs_of = history["epoch"][-len(values) :]
    if all(np.isnan(values)):
        return []
    best = int(np.nanargmin(values))
    return [f"best val_loss: {values[best]:.4f} at epoch {int(epochs_of[best]) + 1}"]


def _duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``4.2 s``, as the run printed it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
    )


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
