"""``jaxfit compare RUN_DIR...``: a table of final metrics and overlaid learning
curves of any run directories (``jaxfit run`` outputs), a sweep's or not.

Each run directory gives one row, a population run one row per member
(``RUN[member i]``): the best value of the metric and its epoch, the final
epoch's value and that epoch, the test metrics metrics.json holds, and the
config values that differ between the rows (flattened key paths; the
``environment`` and ``population`` sections left out: a member's row has its
own seed and hyperparams instead). Rows are sorted by the best value, in the metric's direction.
Epochs count from 1, as ``jaxfit show`` and metrics.json print them
(history.json's ``epoch`` list counts from 0, as Keras').

Where the numbers come from: history.json (a complete run), else the newest
intact backup's History (a run that did not finish: marked ``(unfinished)``,
compared on the epochs it has). A directory with a ``trials/`` folder (a sweep)
stands for the run directories in it, sorted. Nothing is written unless
``out`` is given; the PNG is written atomically (a temporary sibling renamed
into place) after every check has passed, so a refusal or a kill leaves no
file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Literal

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src import paths
from jaxfit._src.runner import rundir, show
from jaxfit._src.runner.schema import ConfigError

_SOFTWARE = "jaxfit compare"  # the PNG's Software text: a file compare wrote
_MAX_LEGEND_KEYS = 3  # differing keys that still make a short legend label


@dataclasses.dataclass(frozen=True)
class Row:
    """One run (or one population member) of a ``Comparison``.

    Attributes:
      label: the run directory as given (``RUN[member i]`` for a member).
      run_dir: the run directory.
      member: the member's index in a population run, else ``None``.
      unfinished: whether the run has no metrics.json (it did not complete).
      epochs: the epochs (from 1) at which the metric was logged.
      values: the metric at those epochs.
      best: the best finite value, or ``None`` (the metric was never logged).
      best_epoch: its epoch (from 1; the first of equal values), or ``None``.
      final: the value at the last epoch the metric was logged, or ``None``.
      final_epoch: that epoch (from 1), or ``None``.
      test: the test metrics metrics.json holds (``{}`` without).
      config: the run's flattened config (``{key path: value}``).
    """

    label: str
    run_dir: str
    member: int | None
    unfinished: bool
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    best: float | None
    best_epoch: int | None
    final: float | None
    final_epoch: int | None
    test: dict[str, float]
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What ``compare`` found: the rows, sorted by the best value.

    Attributes:
      metric: the compared log key.
      mode: ``"min"`` or ``"max"``: the direction of "best".
      rows: one per run or population member, best first (rows without the
        metric last, in the order given).
      differing: the config key paths whose values are not all equal.
      missing: the labels of the rows that never logged the metric.
      out: the PNG written, or ``None``.
    """

    metric: str
    mode: str
    rows: tuple[Row, ...]
    differing: tuple[str, ...]
    missing: tuple[str, ...]
    out: str | None = None

    def table(self) -> str:
        """The rows as an aligned text table, one line each, a header first."""
        tests = list(dict.fromkeys(k for row in self.rows for k in row.test))
        header = [
            "run",
            f"best {self.metric}",
            "at epoch",
            f"final {self.metric}",
            "last epoch",
            *(f"test_{k}" for k in tests),
            *self.differing,
        ]
        lines = [header]
        for row in self.rows:
            label = row.label + (" (unfinished)" if row.unfinished else "")
            lines.append(
                [
                    label,
                    _number(row.best),
                    _number(row.best_epoch),
                    _number(row.final),
                    _number(row.final_epoch),
                    *(_number(row.test.get(k)) for k in tests),
                    *(_value(row.config.get(k, _ABSENT)) for k in self.differing),
                ]
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in lines
        )

    def labels(self) -> list[str]:
        """Short labels of the rows, for a legend: the differing config values
        (``learning_rate=0.1``) when there are at most three and they tell the
        rows apart, else the run directory's name."""
        if 0 < len(self.differing) <= _MAX_LEGEND_KEYS:
            short = [
                ", ".join(
                    f"{key.rsplit('.', 1)[-1]}={_value(row.config.get(key, _ABSENT))}"
                    for key in self.differing
                )
                for row in self.rows
            ]
            if len(set(short)) == len(short):
                return short
        return [
            os.path.basename(os.path.normpath(row.run_dir))
            + ("" if row.member is None else f"[member {row.member}]")
            for row in self.rows
        ]

    def plot(self, ax: Any = None) -> Any:
        """Draws the metric's learning curve of every row (one line each, the
        short ``labels`` in the legend; x: the epoch, from 1).

        Args:
          ax: a matplotlib Axes to draw on. Defaults to `None` (a new figure).

        Returns:
          The matplotlib Figure.
        """
        import matplotlib.pyplot as plt  # optional extra: jaxfit[plot]

        figure, ax = plt.subplots() if ax is None else (ax.figure, ax)
        for row, label in zip(self.rows, self.labels()):
            if row.values:
                ax.plot(row.epochs, row.values, marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(self.metric)
        ax.set_title(f"{self.metric} ({self.mode}) of {len(self.rows)} runs")
        if any(row.values for row in self.rows):
            ax.legend(fontsize="small")
        return figure


_ABSENT = object()  # a key path one run's config lacks
# Config sections not compared: the machine's, and a population's (its
# members' rows carry their own seed and values instead).
_LEFT_OUT = ("environment", "population")


def compare(
    run_dirs: Any,
    *,
    metric: str | None = None,
    mode: Literal["auto", "min", "max"] = "auto",
    out: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Compares run directories: the table of ``jaxfit compare``, and its plot.

    Args:
      run_dirs: run directories (``jaxfit run`` outputs), or a sweep directory
        (one with ``trials/``) standing for the run directories in its
        ``trials/``, sorted; a str or path is one directory.
      metric: the log key to compare. Defaults to `None`: the metric the first
        run monitored (metrics.json's ``monitor``), else ``val_loss`` when a run
        logged it, else ``loss``.
      mode: ``"min"`` or ``"max"``; ``"auto"``: the monitor's direction when
        ``metric`` is what the run monitored, else max for accuracy-like keys
        and min for others (as ``History.best``). Defaults to `"auto"`.
      out: a PNG file to draw the learning curves into (needs matplotlib: the
        ``plot`` extra); written atomically. Defaults to `None`: no file.

    Returns:
      The ``Comparison`` (``.table()`` is the text ``jaxfit compare`` prints).

    Raises:
      ConfigError: (one line, before anything is written) no run directory, a
        path that is not a run directory, a metric no run logged (the logged
        keys listed), a bad ``mode``, or an ``out`` jaxfit may not write.

    Example:
      >>> comparison = compare(["runs/a", "runs/b"], metric="val_loss")  # doctest: +SKIP
      >>> print(comparison.table())  # doctest: +SKIP
    """
    if mode not in ("auto", "min", "max"):
        raise ConfigError(
            f"mode: expected 'auto', 'min' or 'max', got {mode!r} "
            f"({type(mode).__name__})."
        )
    runs = [_read_run(d) for d in _expanded(run_dirs)]
    target = _checked_out(out) if out is not None else None
    metric = metric if metric is not None else _default_metric(runs)
    keys = sorted({k for run in runs for k in run["history"] if k != "epoch"})
    if metric not in keys:
        raise ConfigError(
            f"metric: expected a key some run logged, one of {keys}, got {metric!r}."
        )
    direction = _direction(metric, mode, runs)
    rows = [row for run in runs for row in _rows(run, metric, direction)]
    order = sorted(range(len(rows)), key=lambda i: _sort_key(rows[i], direction, i))
    rows = [rows[i] for i in order]
    comparison = Comparison(
        metric=metric,
        mode=direction,
        rows=tuple(rows),
        differing=tuple(_differing(rows)),
        missing=tuple(row.label for row in rows if row.best is None),
        out=target,
    )
    if target is not None:
        _save(comparison, target)
    return comparison


def _expanded(run_dirs: Any) -> list[str]:
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
                f"run_dirs: expected run directories (str or os.PathLike), got "
                f"{path!r} ({type(path).__name__})."
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


def _read_run(run_dir: str) -> dict[str, Any]:
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


def _default_metric(runs: list[dict[str, Any]]) -> str:
    for run in runs:
        monitor = (run["metrics"] or {}).get("monitor")
        if isinstance(monitor, dict) and isinstance(monitor.get("name"), str):
            return monitor["name"]
    logged = any("val_loss" in run["history"] for run in runs)
    return "val_loss" if logged else "loss"


def _direction(metric: str, mode: str, runs: list[dict[str, Any]]) -> str:
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


def _series(history: dict[str, Any], metric: str) -> list[tuple[int, Any]]:
    """``(epoch from 1, value per epoch)`` of ``metric``; a key logged at fewer
    epochs (``validation_freq``) is matched to the last ones, as
    ``History.epochs_of`` does without its record."""
    values = history.get(metric)
    epochs = history.get("epoch")
    if not isinstance(values, list) or not isinstance(epochs, list):
        return []
    epochs = epochs[len(epochs) - len(values) :] if len(values) <= len(epochs) else []
    return [(int(e) + 1, v) for e, v in zip(epochs, values)]


def _members(run: dict[str, Any], series: list[tuple[int, Any]]) -> int | None:
    """The number of members of a population run, or ``None``."""
    for values in run["history"].values():
        if values and isinstance(values[0], list) and run["history"].get("epoch"):
            return len(values[0])
    population = run["config"].get("population")
    if isinstance(population, dict) and not series:
        per_member = (run["metrics"] or {}).get("per_member")
        return len(per_member) if isinstance(per_member, list) else None
    return None


def _rows(run: dict[str, Any], metric: str, mode: str) -> list[Row]:
    """The run's row, or a population run's row per member."""
    series = _series(run["history"], metric)
    config = _flat({k: v for k, v in run["config"].items() if k not in _LEFT_OUT})
    metrics = run["metrics"] or {}
    count = _members(run, series)
    if count is None:
        test = metrics.get("test")
        points = [(e, float(v)) for e, v in series if isinstance(v, (int, float))]
        return [_row(run, run["dir"], None, points, mode, test, config)]
    rows = []
    per_member = metrics.get("per_member")
    for i in range(count):
        points = [
            (e, float(v[i]))
            for e, v in series
            if isinstance(v, list) and i < len(v) and isinstance(v[i], (int, float))
        ]
        points = [(e, v) for e, v in points if not math.isnan(v)]  # stopped: NaN
        test = None
        if isinstance(per_member, list) and i < len(per_member):
            test = per_member[i].get("test")
        mine = _member_config(run["config"], config, i)
        rows.append(_row(run, f"{run['dir']}[member {i}]", i, points, mode, test, mine))
    return rows


def _row(
    run: dict[str, Any],
    label: str,
    member: int | None,
    points: list[tuple[int, float]],
    mode: str,
    test: Any,
    config: dict[str, Any],
) -> Row:
    finite = [(v, e) for e, v in points if math.isfinite(v)]
    pick = max if mode == "max" else min  # the first best, as Keras keeps
    best = pick(finite, key=lambda pair: pair[0], default=None)
    return Row(
        label=label,
        run_dir=run["dir"],
        member=member,
        unfinished=run["unfinished"],
        epochs=tuple(e for e, _ in points),
        values=tuple(v for _, v in points),
        best=None if best is None else best[0],
        best_epoch=None if best is None else best[1],
        final=points[-1][1] if points else None,
        final_epoch=points[-1][0] if points else None,
        test={
            str(k): float(v)
            for k, v in (test if isinstance(test, dict) else {}).items()
            if isinstance(v, (int, float))
        },
        config=config,
    )


def _member_config(
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


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key path: leaf}`` of a nested mapping (lists are leaves)."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _differing(rows: list[Row]) -> list[str]:
    """The key paths whose values are not all equal (a missing one counts)."""
    keys = list(dict.fromkeys(k for row in rows for k in row.config))
    return [
        key
        for key in keys
        if len({_canonical(row.config.get(key, _ABSENT)) for row in rows}) > 1
    ]


def _canonical(value: Any) -> str:
    if value is _ABSENT:
        return "\0absent"
    return json.dumps(value, sort_keys=True, default=str)


def _sort_key(row: Row, mode: str, index: int) -> tuple[int, float, int]:
    if row.best is None:
        return (1, 0.0, index)
    return (0, -row.best if mode == "max" else row.best, index)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _value(value: Any) -> str:
    if value is _ABSENT:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _is_compare_png(path: str) -> bool:
    """Whether ``path`` is a PNG this module wrote (its Software text)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return (
        head.startswith(b"\x89PNG")
        and (b"tEXtSoftware\x00" + _SOFTWARE.encode()) in head
    )


def _checked_out(out: Any) -> str:
    """``out`` made absolute, once it is a PNG file jaxfit may write: new,
    empty or one ``compare`` wrote (``paths.checked_file``), and matplotlib
    importable.

    Raises:
      ConfigError: a refused path, or no matplotlib (one line).
    """
    text = os.fspath(out) if isinstance(out, (str, os.PathLike)) else None
    if isinstance(text, str) and text.endswith(("/", os.sep)):
        raise ConfigError(f"out: expected a PNG file name, got {text!r}, a directory.")
    try:
        target = paths.checked_file(
            out, "out", what="a PNG file", owned=_is_compare_png
        )
    except (paths.PathError, TypeError) as error:
        raise ConfigError(str(error)) from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "out: drawing the curves needs matplotlib: "
            "pip install 'jaxfit-trainer[plot]'."
        ) from None
    return target


def _save(comparison: Comparison, path: str) -> None:
    """Draws the curves into ``path``, atomically (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths.make_parent(path)
    figure = comparison.plot()
    try:
        rundir._atomic(
            path,
            lambda tmp: figure.savefig(
                tmp,
                format="png",
                dpi=100,
                bbox_inches="tight",
                metadata={"Software": _SOFTWARE},
            ),
        )
    finally:
        plt.close(figure)
