"""History files: CSV rows written and read (``History.to_csv`` / ``from_csv``,
the run directory's ``history.csv``)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from typing import Any


def write_csv(
    path: str | os.PathLike[str],
    columns: list[str],
    rows: Iterable[dict[str, Any]],
    separator: str = ",",
) -> None:
    """Writes ``rows`` under a header of ``columns``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, delimiter=separator)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(
    path: str | os.PathLike[str], separator: str = ","
) -> list[dict[str, Any]]:
    """The rows of a CSV file with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=separator))
