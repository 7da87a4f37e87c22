"""Reading run directories for ``compare``: which directories a list of paths
stands for (a sweep's ``trials/*``), each run's config, History and metrics
(history.json, else the newest intact backup's History), the metric's series
and a population member's own config values."""

from __future__ import annotations

import os
from typing import Any

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import errors
from jaxfit._src.runner import rundir, show
from jaxfit._src.runner.schema import ConfigError

# Config sections not compared: the machine's, and a population's (its
# members' rows carry their own seed and values instead).
LEFT_OUT = ("environment", "population")


def expanded(run_dirs: Any) -> list[str]:
    """The run directories: each given path, a sweep's ``trials/*`` in its
    place (sorted).

    Raises:
      ConfigError: no path, a path that is not a string or os.PathLike, or a
        sweep without trials.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    given = list(run_dirs)
    if not given:
        raise ConfigError("run_dirs: expected at least one run directory, got none.")
    found = []
    for path in given:
        if not isinstance(path, (str, os.PathLike)) or isinstance(
            os.fspath(path), bytes
        ):
            raise ConfigError(
                errors.expected(
                    "run_dirs", "run directories (str or os.PathLike)", path
                )
            )
        text = os.path.normpath(os.fspath(path))
        trials = os.path.join(text, "trials")
        if not os.path.isdir(trials):
            found.append(text)
            continue
        inside = sorted(
            os.path.join(trials, n)
            for n in os.listdir(trials)
            if not n.startswith(".") and os.path.isdir(os.path.join(trials, n))
        )
        if not inside:
            raise ConfigError(
                f"run_dirs: expected a sweep directory with trials, got {text!r}, "
                "whose trials/ holds no run directory yet."
            )
        found += inside
    return found


def read_run(run_dir: str) -> dict[str, Any]:
    """``{"dir", "config", "history", "metrics", "unfinished"}`` of a run
    directory (history: history.json's form, ``{}`` when none is readable).

    Raises:
      ConfigError: not a run directory (neither metrics.json, history.json nor
        jaxfit's run marker), naming it.
    """
    metrics, _ = show._read_json(os.path.join(run_dir, rundir.COMPLETE))
    history, _ = show._read_json(os.path.join(run_dir, "history.json"))
    marked = rundir._marker(run_dir) is not None
    if not os.path.isdir(run_dir) or not (
        isinstance(metrics, dict) or isinstance(history, dict) or marked
    ):
        raise ConfigError(
            f"run_dirs: expected a jaxfit run directory (with metrics.json or "
            f"history.json), got {run_dir!r}, which "
            + ("is not a directory." if not os.path.isdir(run_dir) else "is not one.")
        )
    if not isinstance(history, dict):
        history = _backup_history(run_dir)
    try:
        config = show._shown_config(run_dir)
    except ConfigError:
        config = {}
    return {
        "dir": run_dir,
        "config": config,
        "history": history,
        "metrics": metrics if isinstance(metrics, dict) else None,
        "unfinished": not isinstance(metrics, dict),
    }


def _backup_history(run_dir: str) -> dict[str, Any]:
    """The History of the newest intact backup (an unfinished run's epochs so
    far) in history.json's form, or ``{}``."""
    backup = os.path.join(run_dir, rundir.BACKUP)
    if os.path.islink(backup) or not os.path.isdir(backup):
        return {}
    try:
        newest = callbacks_lib.BackupAndRestore(backup).newest_intact()
    except (OSError, ValueError, TypeError):
        return {}
    states = newest[1].get("callbacks") if newest is not None else None
    if not isinstance(states, dict):
        return {}
    state = states.get("History") or states.get("PopulationHistory")
    if not isinstance(state, dict) or not isinstance(state.get("history"), dict):
        return {}
    return {"epoch": list(state.get("epoch") or []), **state["history"]}


def default_metric(runs: list[dict[str, Any]]) -> str:
    """The metric the first run with a metrics.json monitored, else
    ``val_loss`` when a run logged it, else ``loss``."""
    for run in runs:
        monitor = (run["metrics"] or {}).get("monitor")
        if isinstance(monitor, dict) and isinstance(monitor.get("name"), str):
            return monitor["name"]
    logged = any("val_loss" in run["history"] for run in runs)
    return "val_loss" if logged else "loss"


def direction(metric: str, mode: str, runs: list[dict[str, Any]]) -> str:
    """``mode``, or for ``"auto"`` the direction a run monitored ``metric``
    in, else max for accuracy-like keys and min otherwise."""
    if mode != "auto":
        return mode
    for run in runs:
        monitor = (run["metrics"] or {}).get("monitor")
        if (
            isinstance(monitor, dict)
            and monitor.get("name") == metric
            and monitor.get("mode") in ("min", "max")
        ):
            return str(monitor["mode"])
    accuracy = metric.removeprefix("val_").endswith(("acc", "accuracy"))
    return "max" if accuracy else "min"


def series(history: dict[str, Any], metric: str) -> list[tuple[int, Any]]:
    """``(epoch from 1, value per epoch)`` of ``metric``; a key logged at fewer
    epochs (``validation_freq``) is matched to the last ones, as
    ``History.epochs_of`` does without its record."""
    values = history.get(metric)
    epochs = history.get("epoch")
    if not isinstance(values, list) or not isinstance(epochs, list):
        return []
    epochs = epochs[len(epochs) - len(values) :] if len(values) <= len(epochs) else []
    return [(int(e) + 1, v) for e, v in zip(epochs, values)]


def members(run: dict[str, Any], points: list[tuple[int, Any]]) -> int | None:
    """The number of members of a population run, or ``None``."""
    for values in run["history"].values():
        if values and isinstance(values[0], list) and run["history"].get("epoch"):
            return len(values[0])
    population = run["config"].get("population")
    if isinstance(population, dict) and not points:
        per_member = (run["metrics"] or {}).get("per_member")
        return len(per_member) if isinstance(per_member, list) else None
    return None


def member_config(
    raw: dict[str, Any], flat: dict[str, Any], member: int
) -> dict[str, Any]:
    """Member ``member``'s flattened config: its seed (``seed + i``) and its
    setting's values (``i = setting * seeds + s``, as
    ``runner.population.members``)."""
    population = raw.get("population")
    population = population if isinstance(population, dict) else {}
    seeds = population.get("seeds", 1)
    lists = population.get("hyperparams") or {}
    out = dict(flat)
    if isinstance(raw.get("seed"), int):
        out["seed"] = raw["seed"] + member
    if isinstance(seeds, int) and seeds > 0 and isinstance(lists, dict):
        setting = member // seeds
        for path, values in lists.items():
            if isinstance(values, list) and setting < len(values):
                out[str(path)] = values[setting]
    return out


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key path: leaf}`` of a nested mapping (lists are leaves)."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out
