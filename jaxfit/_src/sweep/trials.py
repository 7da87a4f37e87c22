"""Groups and trial directories: how a sweep's trials train and what each leaves.

**Groups.** Trials whose values differ only at key paths a population can vary
(``spec.packable``: injected optimizer hyperparameters, loss weights) train
together, up to ``lanes`` of them, as one runner run with a ``population:``
section: ``hyperparams`` holds each member's values and ``seed`` the config's
seed for every member, so member ``i`` trains exactly as ``jaxfit run`` of its
trial's config would. Any other difference (a shape, the data, ``fit``) makes
another group. A group run lives in ``SWEEP_DIR/groups/`` with a
``TrialReporter`` callback (``report_trials``) after the config's own: the
runner's backups, locking and ``--resume`` make it durable.

**Trial directories.** Once its group has run, trial ``n`` gets
``SWEEP_DIR/trials/NNN/``: a run directory as ``jaxfit run`` of its config
leaves (config.yaml, checkpoint/ with its member's state, history.json and
history.csv, curves.png, metrics.json with a ``sweep`` entry), so ``load_run``,
``jaxfit show`` and ``jaxfit evaluate`` take it. It is built in a
``.NNN.partial`` directory (jaxfit's marker in it) and renamed into place: a kill
leaves the partial one, which the next attempt removes and redoes.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from jaxfit._src import paths
from jaxfit._src.driver.history import History
from jaxfit._src.report import files
from jaxfit._src.runner import load, population
from jaxfit._src.runner import run as runner_run
from jaxfit._src.runner.rundir import (
    COMPLETE,
    RUN_KIND,
    _atomic,
    _plot,
    _write_json,
)
from jaxfit._src.runner.types import ConfigError
from jaxfit._src.sweep import report_trials
from jaxfit._src.sweep import spec as spec_lib
from jaxfit._src.sweep.spec import SweepSpec

REPORTER = "jaxfit._src.sweep.report_trials:TrialReporter"
LOG_DIR = "sweep"  # inside a group run: the members' logs (report_trials)


def group_key(spec: SweepSpec, config: Any, values: Mapping[str, Any]) -> str:
    """What trials of one group share: their values at unpackable key paths."""
    fixed = {
        p.path: values[p.path]
        for p in spec.params
        if not spec_lib.packable(p.path, config)
    }
    return json.dumps(fixed, sort_keys=True, default=str)


def group_config(
    spec: SweepSpec,
    config: Any,
    base: Mapping[str, Any],
    name: str,
    members: list[tuple[int, dict[str, Any]]],
) -> dict[str, Any]:
    """The group run's config (plain data): the first trial's config with a
    population of the members' ``(trial number, values)`` and the reporter."""
    raw = spec_lib.trial_config(base, members[0][1])
    packed = [p.path for p in spec.params if spec_lib.packable(p.path, config)]
    lists: dict[str, list[Any]] = {
        path: [values[path] for _, values in members] for path in packed
    }
    lists[population.SEED] = [int(raw.get("seed", 0))] * len(members)
    raw["name"] = name
    raw["population"] = {"seeds": 1, "hyperparams": lists}
    reporter = {
        "name": REPORTER,
        "args": {
            "group": name,
            "trials": [number for number, _ in members],
            "monitor": spec.monitor,
            "log_dir": LOG_DIR,
        },
    }
    raw["callbacks"] = [*(raw.get("callbacks") or []), reporter]
    return raw


def group_run_dir(groups_dir: str, name: str) -> str | None:
    """The run directory of group ``name`` (``<name>-<stamp>``), or ``None``."""
    found = sorted(glob.glob(os.path.join(groups_dir, f"{name}-*")))
    found = [d for d in found if os.path.isfile(os.path.join(d, paths.MARKER))]
    return found[-1] if found else None


def run_group(
    groups_dir: str,
    name: str,
    raw: Mapping[str, Any] | None,
    trials: list[Any],
    cache: Any,
) -> tuple[str, Any]:
    """Runs group ``name`` (``raw``: its config; ``None``: resume its run
    directory); returns ``(run directory, trainer)``, the Optuna ``trials``
    reporting in the meantime."""
    report_trials.ACTIVE[name] = trials
    try:
        if raw is None:
            run_dir = group_run_dir(groups_dir, name)
            assert run_dir is not None
            result = runner_run.run(run_dir, groups_dir, resume=run_dir)
        else:
            path = os.path.join(groups_dir, f"{name}.yaml")
            os.makedirs(groups_dir, exist_ok=True)
            _atomic(path, lambda p: runner_run._dump_yaml(p, dict(raw)))
            result = runner_run.run(path, groups_dir, compilation_cache=cache)
    finally:
        report_trials.ACTIVE.pop(name, None)
    return result.run_dir, result.trainer


def objective(history: Mapping[str, Any], monitor: str, mode: str) -> float | None:
    """The best finite value of ``monitor`` over the epochs, or ``None``."""
    values = [float(v) for v in history.get(monitor, []) if math.isfinite(float(v))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def member_outcome(
    group_dir: str, member: int, spec: SweepSpec
) -> tuple[dict[str, Any], int | None, float | None]:
    """A member's ``(history, pruned at, objective)`` from its group's logs."""
    history, pruned_at = report_trials.read(os.path.join(group_dir, LOG_DIR), member)
    return history, pruned_at, objective(history, spec.monitor, spec.mode)


def trial_dir(sweep_dir: str, number: int) -> str:
    return os.path.join(sweep_dir, "trials", f"{number:03d}")


def materialize(
    sweep_dir: str,
    number: int,
    raw: Mapping[str, Any],
    group_dir: str,
    member: int,
    trainer: Any,
    sweep_entry: dict[str, Any],
) -> str:
    """Trial ``number``'s run directory (module docstring); returns its path.

    ``trainer`` is the group's population trainer when this process ran it, else
    ``None`` (member ``member`` is then loaded from the group's checkpoint)."""
    final = trial_dir(sweep_dir, number)
    if os.path.isfile(os.path.join(final, COMPLETE)):
        return final
    paths.make_dir(os.path.join(sweep_dir, "trials"), "sweep trials")
    partial = os.path.join(sweep_dir, "trials", f".{number:03d}.partial")
    _clear_partial(partial)
    os.makedirs(partial)
    _write_json(
        os.path.join(partial, paths.MARKER),
        {"created_by": "jaxfit", "kind": RUN_KIND, "config": dict(raw)},
    )
    shown = {**raw, "environment": _environment(group_dir)}
    _atomic(
        os.path.join(partial, "config.yaml"),
        lambda p: runner_run._dump_yaml(p, shown),
    )
    one = (
        trainer.member(member)
        if trainer is not None
        else load.load_run(group_dir, member=member)
    )
    one.save(os.path.join(partial, "checkpoint"), metadata={"config": dict(raw)})
    history, _ = report_trials.read(os.path.join(group_dir, LOG_DIR), member)
    _write_history(partial, history)
    metrics = _trial_metrics(group_dir, member, history, sweep_entry)
    _write_json(os.path.join(partial, COMPLETE), metrics)
    os.replace(partial, final)
    return final


def _clear_partial(partial: str) -> None:
    """Removes what a killed attempt left at ``partial``: a marked directory, or
    one a kill left before its marker was in place (empty, or holding only the
    marker's own temporary file). Anything else there is refused, untouched."""
    if not os.path.lexists(partial):
        return
    if paths.remove_marked_tree(partial):  # jaxfit's own, from a killed attempt
        return
    left = [] if os.path.islink(partial) else os.listdir(partial)
    if os.path.isdir(partial) and set(left) <= {f".{paths.MARKER}.tmp"}:
        for name in left:
            os.remove(os.path.join(partial, name))
        os.rmdir(partial)
        return
    raise ConfigError(
        f"{partial}: expected jaxfit's half-written trial directory (its marker "
        f"{paths.MARKER} in it) or nothing, got other files ({sorted(left)[:5]}); "
        "jaxfit does not remove files it did not write: move them away and resume."
    )


def _write_history(run_dir: str, history: Mapping[str, Any]) -> None:
    """history.json, history.csv and curves.png of a member's logs."""
    _write_json(os.path.join(run_dir, "history.json"), dict(history))
    keys = [k for k in history if k != "epoch"]
    rows = [
        {"epoch": e, **{k: history[k][j] for k in keys if j < len(history[k])}}
        for j, e in enumerate(history["epoch"])
    ]
    _atomic(
        os.path.join(run_dir, "history.csv"),
        lambda p: files.write_csv(p, ["epoch", *keys], rows),
    )
    made = History()
    made.epoch = list(history["epoch"])
    made.history = {k: list(history[k]) for k in keys}
    if made.epoch:
        _plot(made, os.path.join(run_dir, "curves.png"))


def _trial_metrics(
    group_dir: str, member: int, history: Mapping[str, Any], entry: dict[str, Any]
) -> dict[str, Any]:
    """The trial's metrics.json: a plain run's keys, from its group's row."""
    with open(os.path.join(group_dir, COMPLETE), encoding="utf-8") as f:
        group = json.load(f)
    row = group["per_member"][member]
    stopped = row.get("stopped_by")
    pruned = entry.get("pruned_at")
    return {
        "final_epoch": row["final_epoch"],
        "last_epoch": row["last_epoch"],
        "weights_epoch": row["weights_epoch"],
        "weights": (
            "the last epoch's"
            if row["weights_epoch"] == row["last_epoch"]
            else f"epoch {row['weights_epoch']}'s, restored by {stopped or 'EarlyStopping'}"
        ),
        "monitor": {
            **group["monitor"],
            "best": row["best"],
            "best_epoch": row["best_epoch"],
        },
        "stopped_early": (
            {"by": "the sweep's pruner", "epoch": pruned + 1}
            if pruned is not None
            else ({"by": stopped} if stopped else None)
        ),
        "stop_reason": (
            f"pruned after epoch {pruned + 1}"
            if pruned is not None
            else (f"stopped early by {stopped}" if stopped else "ran every epoch")
        ),
        "test": row["test"],
        "wall_time_s": group.get("wall_time_s"),
        "sweep": entry,
    }


def _environment(group_dir: str) -> Any:
    """The group run's ``environment`` section (versions, devices, when)."""
    from jaxfit._src.runner import yaml_reader

    raw, _ = yaml_reader.read(os.path.join(group_dir, "config.yaml"))
    return raw.get("environment") if isinstance(raw, dict) else None
