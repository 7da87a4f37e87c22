"""``jaxfit compare RUN_DIR...``: a table of final metrics and overlaid learning
curves of any run directories (``jaxfit run`` outputs), a sweep's or not.

Each run directory gives one row, a population run one row per member
(``RUN[member i]``): the best value of the metric and its epoch, the final
epoch's value and that epoch, the test metrics metrics.json holds, and the
config values that differ between the rows (flattened key paths; the
``environment`` and ``population`` sections left out: a member's row has its
own seed and hyperparams instead). Rows are sorted by the best value, in
the metric's direction. Epochs count from 1, as ``jaxfit show`` and
metrics.json print them (history.json's ``epoch`` list counts from 0, as
Keras').

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

from jaxfit._src import errors, paths
from jaxfit._src.runner import compare_data, rundir
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
        from matplotlib.ticker import MaxNLocator

        figure, ax = plt.subplots() if ax is None else (ax.figure, ax)
        for row, label in zip(self.rows, self.labels()):
            if row.values:
                ax.plot(row.epochs, row.values, marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(self.metric)
        ax.set_title(f"{self.metric} ({self.mode}) of {len(self.rows)} runs")
        if any(row.values for row in self.rows):
            ax.legend(fontsize="small")
        return figure


_ABSENT = object()  # a key path one run's config lacks


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
      >>> comparison = compare(["runs/a", "runs/b"])  # doctest: +SKIP
      >>> print(comparison.table())  # doctest: +SKIP
    """
    if mode not in ("auto", "min", "max"):
        raise ConfigError(errors.expected("mode", "'auto', 'min' or 'max'", mode))
    runs = [compare_data.read_run(d) for d in compare_data.expanded(run_dirs)]
    target = _checked_out(out) if out is not None else None
    metric = metric if metric is not None else compare_data.default_metric(runs)
    keys = sorted({k for run in runs for k in run["history"] if k != "epoch"})
    if metric not in keys:
        raise ConfigError(
            errors.expected("metric", f"a key some run logged, one of {keys}", metric)
        )
    direction = compare_data.direction(metric, mode, runs)
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


def _rows(run: dict[str, Any], metric: str, mode: str) -> list[Row]:
    """The run's row, or a population run's row per member."""
    series = compare_data.series(run["history"], metric)
    config = compare_data.flat(
        {k: v for k, v in run["config"].items() if k not in compare_data.LEFT_OUT}
    )
    metrics = run["metrics"] or {}
    count = compare_data.members(run, series)
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
        mine = compare_data.member_config(run["config"], config, i)
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
