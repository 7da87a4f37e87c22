"""metrics.json and ``jaxfit show`` of a population run (``runner.population``).

A population run's metrics.json holds, besides the keys every run's has:

    population   ``{"members": N, "seeds": S, "settings": K, "hyperparams":
                 {key path: [K values]}}``
    per_member   member ``i``'s ``member``, ``setting``, ``seed`` (``seed + i``),
                 ``hyperparams`` (its setting's ``{key path: value}``),
                 ``final_epoch`` (its last epoch's logs), ``last_epoch``,
                 ``stopped_early`` (it ended before ``fit.epochs``, or a
                 callback stopped it), ``stopped_by`` (the EarlyStopping that
                 stopped it, or ``None``), ``weights_epoch`` (the epoch of the
                 weights it ends with: restore_best_weights' best, else its
                 last), ``best`` and ``best_epoch`` of the monitored metric, and ``test`` (its
                 test evaluation, or ``None``)
    settings     setting ``k``'s ``hyperparams``, ``members`` and ``mean`` /
                 ``std`` over its seeds of each final-epoch log and each test
                 metric (``test_<name>``); ``std`` is numpy's (``ddof=0``: 0.0
                 for one seed)
    best_member  the member with the best monitored value over its epochs
                 (``trainer.best_member``; ties to the lower index), its seed,
                 setting and value

``monitor`` is the metric the run watched (the first config callback's
``monitor``, else ``val_loss`` with validation, else ``loss``); the top-level
``final_epoch`` and ``test`` are the best member's (what ``jaxfit.load_run``
loads by default), and ``last_epoch`` the last epoch any member ran. Epochs
count from 1, as printed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src.runner import population
from jaxfit._src.runner.rundir import _Tracker
from jaxfit._src.runner.schema import RunConfig


def _mode(monitor: str, mode: str) -> str:
    if mode in ("min", "max"):
        return mode
    accuracy = monitor.removeprefix("val_").endswith(("acc", "accuracy"))
    return "max" if accuracy else "min"


def _monitor(config: RunConfig, callbacks: list[Any], history: Any) -> dict[str, Any]:
    """``{"name", "mode", "by"}``: the first config callback with a ``monitor``,
    else ``val_loss`` (with validation) or ``loss``, minimised."""
    names = [c.name for c in config.callbacks]
    built = [c for c in callbacks if not isinstance(c, _Tracker)][: len(names)]
    for i, callback in enumerate(built):
        if isinstance(callback, callbacks_lib.MonitorCallback):
            mode = _mode(callback.monitor, str(getattr(callback, "mode", "auto")))
            return {
                "name": callback.monitor,
                "mode": mode,
                "by": f"callbacks[{i}] {names[i]}",
            }
    keys = {k for h in history.members for k in h.history}
    return {
        "name": "val_loss" if "val_loss" in keys else "loss",
        "mode": "min",
        "by": None,
    }


def _best(member: Any, monitor: dict[str, Any]) -> tuple[int | None, float | None]:
    """``(best epoch, 1-based; value)`` of a member's History, or ``(None, None)``."""
    values = [float(v) for v in member.history.get(monitor["name"], [])]
    if not any(math.isfinite(v) for v in values):
        return None, None
    epoch, value = member.best(monitor["name"], monitor["mode"])
    return int(epoch) + 1, float(value)


def _stops(
    config: RunConfig, callbacks: list[Any], i: int, last: int
) -> dict[str, Any]:
    """Member ``i``'s ``weights_epoch`` and ``stopped_by``: from the copies of
    the config's EarlyStopping callbacks that acted for it (``member_copies``),
    as a plain run's ``weights_epoch`` and ``stopped_early`` are read."""
    out: dict[str, Any] = {"weights_epoch": last, "stopped_by": None}
    names = [c.name for c in config.callbacks]
    built = [c for c in callbacks if not isinstance(c, _Tracker)][: len(names)]
    for j, template in enumerate(built):
        copies = getattr(template, "member_copies", None)
        if not isinstance(template, callbacks_lib.EarlyStopping) or not copies:
            continue
        copy = copies[i]
        if copy.stopped_epoch > 0:
            out["stopped_by"] = f"callbacks[{j}] {names[j]}"
        if copy.restore_best_weights and copy.best_weights is not None:
            out["weights_epoch"] = copy.best_epoch + 1
    return out


def _per_member_test(test: dict[str, Any] | None, i: int) -> dict[str, float] | None:
    if test is None:
        return None
    return {k: float(np.asarray(v)[i]) for k, v in test.items()}


def metrics(
    config: RunConfig, history: Any, callbacks: list[Any], test: dict[str, Any] | None
) -> dict[str, Any]:
    """The population's metrics.json (less ``wall_time_s``), from its History,
    the run's callbacks and its test evaluation (``{name: one value per
    member}``, or ``None``)."""
    assert config.population is not None
    monitor = _monitor(config, callbacks, history)
    per_member = []
    for row, member in zip(population.members(config), history.members):
        final = {k: float(v[-1]) for k, v in member.history.items() if v}
        last = member.epoch[-1] + 1 if member.epoch else config.fit.initial_epoch
        best_epoch, best = _best(member, monitor)
        stops = _stops(config, callbacks, row["member"], last)
        per_member.append(
            {
                **row,
                "final_epoch": final,
                "last_epoch": last,
                **stops,
                "stopped_early": last < config.fit.epochs or bool(stops["stopped_by"]),
                "best": best,
                "best_epoch": best_epoch,
                "test": _per_member_test(test, row["member"]),
            }
        )
    best_member = _best_member(per_member, monitor)
    chosen = per_member[best_member["member"]] if best_member else per_member[0]
    stopped = sum(m["stopped_early"] for m in per_member)
    if best_member is not None:  # the population's best: the best member's
        monitor.update(best=best_member["best"], best_epoch=best_member["best_epoch"])
    else:
        monitor.update(best=None, best_epoch=None)
    return {
        "population": {
            "members": len(per_member),
            "seeds": config.population.seeds,
            "settings": len(population.settings(config)),
            "hyperparams": dict(config.population.hyperparams),
        },
        "per_member": per_member,
        "settings": _settings(config, per_member),
        "best_member": best_member,
        "monitor": monitor,
        "final_epoch": chosen["final_epoch"],
        "test": chosen["test"],
        "last_epoch": max(m["last_epoch"] for m in per_member),
        "stopped_early": None,
        "stop_reason": (
            f"{len(per_member)} members: {len(per_member) - stopped} ran all "
            f"{config.fit.epochs} epochs, {stopped} stopped early"
        ),
    }


def _best_member(
    per_member: list[dict[str, Any]], monitor: dict[str, Any]
) -> dict[str, Any] | None:
    """The member with the best ``best`` (ties to the lower index), or ``None``
    when no member logged a finite value."""
    scored = [m for m in per_member if m["best"] is not None]
    if not scored:
        return None
    pick = max if monitor["mode"] == "max" else min
    chosen = pick(scored, key=lambda m: m["best"])
    return {
        key: chosen[key]
        for key in ("member", "seed", "setting", "hyperparams", "best", "best_epoch")
    } | {"monitor": monitor["name"], "mode": monitor["mode"]}


def _settings(
    config: RunConfig, per_member: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each setting's members and ``mean`` / ``std`` (ddof=0) over its seeds."""
    out = []
    for k, values in enumerate(population.settings(config)):
        mine = [m for m in per_member if m["setting"] == k]
        flat = [
            {
                **m["final_epoch"],
                **{f"test_{n}": v for n, v in (m["test"] or {}).items()},
            }
            for m in mine
        ]
        keys = list(dict.fromkeys(key for row in flat for key in row))
        columns = {key: [row[key] for row in flat if key in row] for key in keys}
        out.append(
            {
                "setting": k,
                "hyperparams": values,
                "members": [m["member"] for m in mine],
                "mean": {key: float(np.mean(v)) for key, v in columns.items()},
                "std": {key: float(np.std(v)) for key, v in columns.items()},
            }
        )
    return out


def _values(hyperparams: Any) -> str:
    if not isinstance(hyperparams, dict) or not hyperparams:
        return ""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in hyperparams.items()
    )


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def show_lines(metrics: dict[str, Any]) -> list[str]:
    """``jaxfit show``'s lines of a complete population run: the members (each
    one's seed, values, final epoch and test metrics), mean ± std per setting,
    and the best member."""
    info = metrics["population"]
    lines = [
        f"population: {info['members']} members = {info['settings']} setting"
        f"{'' if info['settings'] == 1 else 's'} x {info['seeds']} seed"
        f"{'' if info['seeds'] == 1 else 's'}"
    ]
    for m in metrics["per_member"]:
        values = _values(m.get("hyperparams"))
        head = f"  member {m['member']} (seed {m['seed']}{', ' + values if values else ''})"
        final = " - ".join(f"{k}: {_number(v)}" for k, v in m["final_epoch"].items())
        test = m.get("test")
        tail = (
            " | test " + " - ".join(f"{k}: {_number(v)}" for k, v in test.items())
            if isinstance(test, dict)
            else ""
        )
        stop = (
            f", stopped after epoch {m['last_epoch']}" if m.get("stopped_early") else ""
        )
        lines.append(f"{head}{stop}: {final}{tail}")
    for s in metrics["settings"]:
        values = _values(s.get("hyperparams"))
        count = len(s["members"])
        head = f"  setting {s['setting']}{' (' + values + ')' if values else ''}, mean ± std over {count} seed{'' if count == 1 else 's'}"
        body = " - ".join(
            f"{k}: {_number(v)} ± {_number(s['std'][k])}" for k, v in s["mean"].items()
        )
        lines.append(f"{head}: {body}")
    best = metrics.get("best_member")
    if isinstance(best, dict):
        lines.append(
            f"best member: {best['member']} (seed {best['seed']}, setting "
            f"{best['setting']}): {best['monitor']} {_number(best['best'])} at epoch "
            f"{best['best_epoch']} ({best['mode']}); jaxfit.load_run loads it by default"
        )
    return lines
