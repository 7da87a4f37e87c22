"""What a resumed run drops first and how its CSVLoggers go on: the lines that
the epochs after the newest backup left in run.log and in CSVLogger files
(a population's per-member files included) are dropped, since the resumed run
writes them again, and the CSVLoggers append (split out of ``rundir``)."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import re

from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.runner import population
from jaxfit._src.runner.run_callbacks import _in_run_dir
from jaxfit._src.runner.rundir import _atomic
from jaxfit._src.runner.schema import RunConfig

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
        filename, separator = args.get("filename"), args.get("separator", ",")
        if not isinstance(filename, str):
            continue
        for csv_path in _csv_files(config, filename):
            if os.path.isfile(csv_path):
                _trim_csv(csv_path, separator, epoch)


def _csv_files(config: RunConfig, filename: str) -> list[str]:
    """A CSVLogger's file, or each member's of a population (``for_member``)."""
    if config.population is None:
        return [filename]
    count = len(population.members(config))
    return [str(callback_lib.member_path(filename, i)) for i in range(count)]


def _trim_csv(csv_path: str, separator: str, epoch: int) -> None:
    """Keeps the header and the rows of the epochs before ``epoch`` (0-based)."""
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
