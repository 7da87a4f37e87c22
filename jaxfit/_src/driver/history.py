"""History: the record of a run, always installed by ``fit``."""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback


class History(Callback):
    """Records epoch logs; ``fit`` returns it.

    Attributes:
      history: ``{log key: [value per epoch]}``; a validation key appears only for
        the epochs that ran validation (as Keras).
      epoch: the indices of the epochs run (``initial_epoch .. epochs - 1``).
      params: ``{"verbose", "epochs", "steps", "batch_size"}`` of the run.

    Example:
      >>> import jaxfit
      >>> h = jaxfit.History()
      >>> h.on_epoch_end(0, {"loss": 0.5}); h.on_epoch_end(1, {"loss": 0.25})
      >>> len(h), h.best("loss")
      (2, (1, 0.25))
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self._epochs_of: dict[str, list[int]] = {}  # the epochs each key was logged

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}
        self._epochs_of = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
            self._epochs_of.setdefault(key, []).append(epoch)

    def get_state(self) -> dict[str, Any]:
        """The epochs so far (a resumed run's History continues from them)."""
        return {"epoch": list(self.epoch),
                "history": {k: list(v) for k, v in self.history.items()},
                "epochs_of": {k: list(v) for k, v in self._epochs_of.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.epoch = [int(e) for e in state["epoch"]]
        self.history = {k: [float(v) for v in vs] for k, vs in state["history"].items()}
        self._epochs_of = {k: [int(e) for e in es]
                           for k, es in state["epochs_of"].items()}

    def epochs_of(self, key: str) -> list[int]:
        """The epochs at which ``key`` was logged (fewer with ``validation_freq``)."""
        return list(self._epochs_of.get(key, self.epoch[-len(self.history[key]):]))

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epoch={self.epoch}, keys={list(self.history)})"

    def to_dict(self) -> dict[str, Any]:
        """``{"epoch": [...], <key>: [...]}`` (a copy)."""
        return {"epoch": list(self.epoch), **{k: list(v) for k, v in self.history.items()}}

    def _rows(self) -> list[dict[str, Any]]:
        """One row per epoch; a key not logged at an epoch is left empty."""
        by_epoch = {key: dict(zip(self.epochs_of(key), values))
                    for key, values in self.history.items()}
        return [{"epoch": epoch, **{key: by_epoch[key].get(epoch, "")
                                    for key in self.history}} for epoch in self.epoch]

    def to_csv(self, path: str | os.PathLike[str], separator: str = ",") -> None:
        """Writes one row per epoch (columns: epoch, then the log keys)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["epoch", *self.history], delimiter=separator)
            writer.writeheader()
            writer.writerows(self._rows())

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], separator: str = ",") -> History:
        """Reads a file written by ``to_csv`` or ``CSVLogger``."""
        history = cls()
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter=separator):
                history.epoch.append(int(row.pop("epoch")))
                for key, value in row.items():
                    if value not in ("", None):
                        history.history.setdefault(key, []).append(float(value))
                        history._epochs_of.setdefault(key, []).append(history.epoch[-1])
        return history

    def best(self, monitor: str = "val_loss",
             mode: Literal["auto", "min", "max"] = "auto") -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch for ``monitor``.

        ``mode="auto"`` means max for accuracy-like keys, else min (as Keras).
        """
        if monitor not in self.history:
            raise ValueError(errors.expected(
                "monitor", f"a recorded key among {sorted(self.history)}", monitor))
        if mode == "auto":
            mode = "max" if monitor.removeprefix("val_").endswith(("acc", "accuracy")) \
                else "min"
        values = self.history[monitor]
        epochs = self.epochs_of(monitor)
        finite = [(v, e) for v, e in zip(values, epochs) if not math.isnan(v)]
        value, epoch = (max if mode == "max" else min)(finite)
        return epoch, value

    def plot(self, keys: list[str] | None = None, ax: Any = None) -> Any:
        """Plots each key against the epoch; ``val_`` keys share their key's colour.

        The x axis counts epochs from 1, as the progress lines do (``History.epoch``
        itself stays 0-based, as Keras'). Rates and scales (``learning_rate``,
        ``lr``, ``loss_scale``) get their own y axis on the right, so they do not
        flatten the losses and metrics; alone, they use the main axis.

        Args:
          keys: the series to draw, training names (``"loss"``) also drawing their
            ``val_`` twin. Defaults to `None` (all).
          ax: a matplotlib Axes to draw on (the second y axis, when one is needed,
            is its ``twinx()``). Defaults to `None` (a new figure).

        Returns:
          The matplotlib Figure.
        """
        import matplotlib.pyplot as plt  # optional extra: jaxfit[plot]
        from matplotlib.ticker import MaxNLocator

        if ax is None:
            figure, ax = plt.subplots()
        else:
            figure = ax.figure
        base = keys or [k for k in self.history if not k.startswith("val_")]
        main = [k for k in base if k not in _OWN_AXIS] or list(base)
        aside = [k for k in base if k not in main]
        handles = self._draw(ax, main, 0)
        if aside:
            other = ax.twinx()
            handles += self._draw(other, aside, len(main), linestyle=":")
            other.set_ylabel(", ".join(aside))
            if all(min(self.history[k]) > 0 for k in aside):
                values = [v for k in aside for v in self.history[k]]
                if max(values) > 20 * min(values):  # a decay over decades
                    other.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        top = other if aside else ax  # the legend above every line
        top.legend(handles=handles, labels=[h.get_label() for h in handles])
        return figure

    def _draw(self, ax: Any, keys: list[str], first_colour: int,
              linestyle: str = "-") -> list[Any]:
        """Draws ``keys`` (and their ``val_`` twins, dashed) on ``ax``, colours
        ``C<first_colour>``...; returns the lines."""
        lines = []
        for i, key in enumerate(keys):
            colour = f"C{(first_colour + i) % 10}"
            lines += ax.plot([e + 1 for e in self.epochs_of(key)], self.history[key],
                             label=key, color=colour, linestyle=linestyle)
            val = f"val_{key}"
            if val in self.history:
                lines += ax.plot([e + 1 for e in self.epochs_of(val)],
                                 self.history[val], label=val, linestyle="--",
                                 color=colour)
        return lines


# Series on another scale than the losses: a second y axis in ``History.plot``.
_OWN_AXIS = ("learning_rate", "lr", "loss_scale")
