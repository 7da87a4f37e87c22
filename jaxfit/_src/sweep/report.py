"""What a sweep directory says about its study: ``sweep.json``, ``best.yaml``,
``sweep.png``, and ``jaxfit show SWEEP_DIR``'s table.

``sweep.json`` lists every trial (number, state, values, objective, run
directory, the epoch it was pruned at, its one-line error) with the best trial
and the parameters' importances (Optuna's ``get_param_importances``, once two
trials completed); ``best.yaml`` is the best trial's whole config, runnable with
``jaxfit run best.yaml``; ``sweep.png`` plots the objective per trial with the
best so far, and the objective against each parameter. Each is written
atomically after every group (``write``) and at the end (``finish``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from jaxfit._src.runner import run as runner_run
from jaxfit._src.runner.rundir import _dump_json
from jaxfit._src.sweep import space
from jaxfit._src.sweep import spec as spec_lib

SWEEP_JSON = "sweep.json"


def _atomic(path: str, write: Callable[[str], None]) -> None:
    """``write`` into a temporary file of this process's, renamed onto ``path``:
    several workers of one sweep directory write these files."""
    partial = f"{path}.{os.getpid()}.partial"
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@dataclasses.dataclass
class SweepResult:
    """What ``sweep`` returns.

    Attributes:
      sweep_dir: the sweep directory.
      study: the Optuna study (``study.trials``, ``study.best_trial``...).
      best_run: the best trial's run directory (``jaxfit.load_run`` takes it),
        or ``None`` when no trial completed.
      best_value: its objective, or ``None``.
      best_params: its values, ``{config key path: value}``.
    """

    sweep_dir: str
    study: Any
    best_run: str | None
    best_value: float | None
    best_params: dict[str, Any]


def rows(study: Any, spec: spec_lib.SweepSpec) -> list[dict[str, Any]]:
    """One entry per trial of the study, in trial order."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        complete = all(p.path in trial.params for p in spec.params)
        out.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": spec.values(trial.params) if complete else None,
                "objective": trial.value,
                "run_dir": trial.user_attrs.get("jaxfit_run_dir"),
                "group": trial.user_attrs.get("jaxfit_group"),
                "error": trial.user_attrs.get("jaxfit_error"),
            }
        )
    return out


def _best(study: Any, spec: spec_lib.SweepSpec) -> dict[str, Any] | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        return None
    pick = max if spec.mode == "max" else min
    best = pick(done, key=lambda t: t.value)
    return {
        "number": best.number,
        "objective": best.value,
        "params": spec.values(best.params),
        "run_dir": best.user_attrs.get("jaxfit_run_dir"),
    }


def _importances(study: Any) -> dict[str, float] | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return None
    try:
        with warnings.catch_warnings():  # few trials: equal importances, said
            warnings.simplefilter("ignore")
            found = space.optuna_module().importance.get_param_importances(study)
    except (ValueError, RuntimeError):  # e.g. one value of every parameter
        return None
    return {k: float(v) for k, v in found.items()}


def write(
    sweep_dir: str, study: Any, spec: spec_lib.SweepSpec, base: Mapping[str, Any]
) -> dict[str, Any]:
    """``sweep.json`` and ``best.yaml`` as the study stands; returns the former."""
    best = _best(study, spec)
    value = {
        "study": study.study_name,
        "monitor": spec.monitor,
        "mode": spec.mode,
        "trials": spec.trials,
        "lanes": spec.lanes,
        "best": best,
        "importances": _importances(study),
        "trials_run": rows(study, spec),
    }
    _atomic(os.path.join(sweep_dir, SWEEP_JSON), lambda p: _dump_json(p, value))
    if best is not None:
        config = spec_lib.trial_config(base, best["params"])
        _atomic(
            os.path.join(sweep_dir, "best.yaml"),
            lambda p: runner_run._dump_yaml(p, config),
        )
    return value


def finish(
    sweep_dir: str,
    study: Any,
    spec: spec_lib.SweepSpec,
    base: Mapping[str, Any],
    say: Callable[..., None],
) -> Any:
    """The last ``write`` and ``sweep.png``; the ``SweepResult``."""
    value = write(sweep_dir, study, spec, base)
    _plot(value, spec, os.path.join(sweep_dir, "sweep.png"))
    for line in table(value):
        say(line)
    best = value["best"]
    return SweepResult(
        sweep_dir=sweep_dir,
        study=study,
        best_run=None if best is None else os.path.join(sweep_dir, best["run_dir"]),
        best_value=None if best is None else best["objective"],
        best_params={} if best is None else best["params"],
    )


def table(value: Mapping[str, Any]) -> list[str]:
    """The trials sorted by their objective (the best first), one line each."""
    entries = value["trials_run"]
    sign = -1 if value["mode"] == "max" else 1
    scored = sorted(
        (e for e in entries if e["objective"] is not None),
        key=lambda e: sign * e["objective"],
    )
    rest = [e for e in entries if e["objective"] is None]
    lines = [f"trials by {value['monitor']} ({value['mode']}):"]
    for e in [*scored, *rest]:
        objective = "-" if e["objective"] is None else f"{e['objective']:.6g}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in (e["params"] or {}).items())
        error = f"  {e['error']}" if e["error"] else ""
        lines.append(
            f"  {e['number']:>3}  {e['state']:<8} {objective:>10}  {params}{error}"
        )
    best = value["best"]
    if best is not None:
        lines.append(
            f"best: trial {best['number']}, {value['monitor']} {best['objective']:.6g}"
            f" ({best['run_dir']}; best.yaml runs it with jaxfit run)"
        )
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plot(value: Mapping[str, Any], spec: spec_lib.SweepSpec, path: str) -> None:
    """sweep.png: the objective per trial and the best so far; against each
    parameter (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    entries = [e for e in value["trials_run"] if e["objective"] is not None]
    panels = 1 + len(spec.params)
    figure, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.5), squeeze=False)
    try:
        numbers = [e["number"] for e in entries]
        scores = [e["objective"] for e in entries]
        pick = max if spec.mode == "max" else min
        best = [pick(scores[: i + 1]) for i in range(len(scores))]
        axes[0][0].scatter(numbers, scores, s=14, label=spec.monitor)
        axes[0][0].step(numbers, best, where="post", label="best so far")
        axes[0][0].set_xlabel("trial")
        axes[0][0].legend(fontsize=8)
        for ax, param in zip(axes[0][1:], spec.params):
            xs = [_numeric(e["params"][param.path]) for e in entries]
            ax.scatter(xs, scores, s=14)
            ax.set_xlabel(param.path)
            if param.kind == "float" and param.log:
                ax.set_xscale("log")
        figure.tight_layout()
        _atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(figure)


def _numeric(value: Any) -> Any:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return str(value)


def is_sweep_dir(path: Any) -> bool:
    """Whether ``path`` is a sweep directory (its marker's kind)."""
    import json

    from jaxfit._src import paths

    try:
        with open(os.path.join(os.fspath(path), paths.MARKER), encoding="utf-8") as f:
            return json.load(f).get("kind") == "sweep"
    except (OSError, ValueError, AttributeError):
        return False


def show(sweep_dir: str) -> str:
    """``jaxfit show SWEEP_DIR``: the trials sorted by their objective, and how
    the best trial's config differs from the sweep's."""
    import json

    from jaxfit._src.runner import yaml_reader
    from jaxfit._src.runner.types import ConfigError

    try:
        with open(os.path.join(sweep_dir, SWEEP_JSON), encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"run_dir: the sweep directory {sweep_dir!r} has no readable "
            f"{SWEEP_JSON} yet ({type(error).__name__}): no trial has ended."
        ) from None
    counts: dict[str, int] = {}
    for e in value["trials_run"]:
        counts[e["state"]] = counts.get(e["state"], 0) + 1
    lines = [
        f"sweep: {value['study']}  ({sweep_dir})",
        f"trials: {value['trials']} ("
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        + f"), lanes {value['lanes']}",
        *table(value),
    ]
    best = value["best"]
    if best is not None:
        base, _ = yaml_reader.read(os.path.join(sweep_dir, "sweep.yaml"))
        lines.append("best.yaml differs from the sweep's config in:")
        flat_base = _flat({k: v for k, v in base.items() if k != "sweep"})
        for path, new in best["params"].items():
            lines.append(f"  {path}: {_short(flat_base.get(path))} -> {_short(new)}")
    if value.get("importances"):
        lines.append(
            "importances: "
            + ", ".join(f"{k} {v:.2f}" for k, v in value["importances"].items())
        )
    return "\n".join(lines)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
