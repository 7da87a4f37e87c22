"""The run directory: creating it (process 0 only), its log, history files,
curves and metrics, resuming and trimming, and `jaxfit show`."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import jax
import numpy as np

from jaxfit._src import callbacks as callbacks_lib
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner.checks import _in_run_dir
from jaxfit._src.runner.schema import ConfigError, RunConfig

_MAX_PATH = 4096  # bytes of a run directory path broadcast to the other processes


def _environment() -> dict[str, Any]:
    return {
        "versions": orbax_io.versions(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _make_run_dir(workdir: str, name: str) -> str:
    """``<workdir>/<name>-<timestamp>``; never an existing directory."""
    os.makedirs(workdir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(workdir, f"{name}-{stamp}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.mkdir(path)  # atomic: fails if another run took the name
            return os.path.abspath(path)
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory next to {base!r}")


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _logging_to(path: str) -> Iterator[None]:
    """Copies stdout and stderr into ``path`` while the run lasts."""
    with open(path, "a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)


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


def _resume_point(config: RunConfig, run_dir: str) -> tuple[int, int]:
    """``(epoch, batch)`` (0-based) where ``--resume`` continues: the newest
    complete backup's position, or the start."""

    backups = callbacks_lib.BackupAndRestore(os.path.join(run_dir, "backup"))._backups()
    if not backups:
        return config.fit.initial_epoch, 0
    position = orbax_io.read_info(backups[-1][1]).get("position") or {}
    return int(position.get("epoch", 0)), int(position.get("batch", 0))


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
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
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
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=separator).writerows(kept_rows)


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
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def show(run_dir: str | os.PathLike[str]) -> str:
    """A summary of a finished (or running) run directory."""
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(
            f"run_dir: expected a jaxfit run directory (with "
            f"config.yaml), got {run_dir!r}."
        )
    with open(path, encoding="utf-8") as f:
        config = config_lib._yaml().safe_load(f)
    environment = config.get("environment") or {}
    lines = [
        f"run: {config['name']}  ({run_dir})",
        f"model: {config['model']['name']} {config['model']['args'] or ''}".rstrip(),
        f"data: {config['data']['name']} {config['data']['args'] or ''}".rstrip(),
        f"optimizer: {config['optimizer']['name']} "
        f"learning_rate={config['optimizer']['learning_rate']}",
        f"created: {environment.get('created', '?')} on "
        f"{environment.get('backend', '?')}, jax "
        f"{environment.get('versions', {}).get('jax', '?')}",
    ]
    finished = os.path.isfile(os.path.join(run_dir, "history.json"))
    lines += _outcome(run_dir, config) if finished else _unfinished(run_dir)
    return "\n".join(lines)


def _unfinished(run_dir: str) -> list[str]:
    """``jaxfit show`` of a run without history.json: how to resume it, and
    where it was interrupted."""
    backup = os.path.isdir(os.path.join(run_dir, "backup"))
    lines = [
        "status: not finished"
        + (f" (resume with jaxfit run --resume {run_dir})" if backup else "")
    ]
    stopped = _last_interruption(run_dir)
    return lines + ([f"last: {stopped}"] if stopped else [])


def _outcome(run_dir: str, config: dict[str, Any]) -> list[str]:
    """``jaxfit show`` of a finished run: epochs, how it stopped, its weights and
    metrics. Epochs count from 1 here, as in the progress lines and run.log
    (history.json's "epoch" list is History.epoch: 0-based, as Keras')."""
    with open(os.path.join(run_dir, "history.json"), encoding="utf-8") as f:
        history = json.load(f)
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    lines: list[str] = []
    epochs = config.get("fit", {}).get("epochs")
    lines.append(
        f"epochs: {len(history['epoch'])}"
        + (
            f" (the last: {metrics['last_epoch']}/{epochs})"
            if "last_epoch" in metrics
            else ""
        )
    )
    stopped = metrics.get("stopped_early")
    if stopped:
        lines.append(
            f"stopped early: by {stopped['by']} after epoch {stopped['epoch']}"
        )
    if "weights_epoch" in metrics:
        lines.append(
            f"weights: epoch {metrics['weights_epoch']}'s "
            f"({metrics.get('weights', '')})"
        )
    lines.append("final epoch: " + _format(metrics["final_epoch"]))
    if "val_loss" in history:
        values = history["val_loss"]
        epochs_of = history["epoch"][-len(values) :]
        best = int(np.nanargmin(values))
        lines.append(
            f"best val_loss: {values[best]:.4f} at epoch {epochs_of[best] + 1}"
        )
    if "test" in metrics:
        lines.append("test: " + _format(metrics["test"]))
    lines.append("files: " + ", ".join(sorted(os.listdir(run_dir))))
    return lines


def _last_interruption(run_dir: str) -> str | None:
    """The last ``jaxfit run: interrupted ...`` line of run.log, if any."""
    path = os.path.join(run_dir, "run.log")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        found = [
            line.strip() for line in f if line.startswith("jaxfit run: interrupted")
        ]
    return found[-1].removeprefix("jaxfit run: ").split(";")[0] if found else None


def _format(values: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
