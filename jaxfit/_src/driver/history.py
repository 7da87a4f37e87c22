"""History: the record of a run, always installed by ``fit``."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback
from jaxfit._src.report import files, plots


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
        return {
            "epoch": list(self.epoch),
            "history": {k: list(v) for k, v in self.history.items()},
            "epochs_of": {k: list(v) for k, v in self._epochs_of.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.epoch = [int(e) for e in state["epoch"]]
        self.history = {k: [float(v) for v in vs] for k, vs in state["history"].items()}
        self._epochs_of = {
            k: [int(e) for e in es] for k, es in state["epochs_of"].items()
        }

    def epochs_of(self, key: str) -> list[int]:
        """The epochs at which ``key`` was logged (fewer with ``validation_freq``)."""
        return list(self._epochs_of.get(key, self.epoch[-len(self.history[key]) :]))

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epoch={self.epoch}, keys={list(self.history)})"

    def to_dict(self) -> dict[str, Any]:
        """``{"epoch": [...], <key>: [...]}`` (a copy)."""
        return {
            "epoch": list(self.epoch),
            **{k: list(v) for k, v in self.history.items()},
        }

    def _rows(self) -> list[dict[str, Any]]:
        """One row per epoch; a key not logged at an epoch is left empty."""
        by_epoch = {
            key: dict(zip(self.epochs_of(key), values))
            for key, values in self.history.items()
        }
        return [
            {
                "epoch": epoch,
                **{key: by_epoch[key].get(epoch, "") for key in self.history},
            }
            for epoch in self.epoch
        ]

    def to_csv(self, path: str | os.PathLike[str], separator: str = ",") -> None:
        """Writes one row per epoch (columns: epoch, then the log keys)."""
        files.write_csv(path, ["epoch", *self.history], self._rows(), separator)

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], separator: str = ",") -> History:
        """Reads a file written by ``to_csv`` or ``CSVLogger``."""
        history = cls()
        for row in files.read_csv(path, separator):
            history.epoch.append(int(row.pop("epoch")))
            for key, value in row.items():
                if value not in ("", None):
                    history.history.setdefault(key, []).append(float(value))
                    history._epochs_of.setdefault(key, []).append(history.epoch[-1])
        return history

    def best(
        self, monitor: str = "val_loss", mode: Literal["auto", "min", "max"] = "auto"
    ) -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch for ``monitor``.

        ``mode="auto"`` means max for accuracy-like keys, else min (as Keras).
        """
        if monitor not in self.history:
            raise ValueError(
                errors.expected(
                    "monitor", f"a recorded key among {sorted(self.history)}", monitor
                )
            )
        if mode == "auto":
            mode = (
                "max"
                if monitor.removeprefix("val_").endswith(("acc", "accuracy"))
                else "min"
            )
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
        return plots.plot_history(self, keys, ax)
