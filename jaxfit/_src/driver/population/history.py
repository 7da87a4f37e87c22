"""``PopulationHistory``: what a population's ``fit`` returns."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxfit._src import errors
from jaxfit._src.driver.history import History


class PopulationHistory(History):
    """A population's record: one value per member at each epoch, and each
    member's own ``History``.

    Attributes:
      history: ``{log key: [array per epoch]}``, each array of one value per
        member (member axis first), ``NaN`` for a member that had stopped.
      epoch: the indices of the epochs the population ran.
      members: member ``i``'s ``History``, exactly what a plain trainer of that
        member would return: its epochs only (a member stopped early has fewer),
        floats.

    Example:
      >>> import jax.numpy as jnp, numpy as np, optax, jaxfit
      >>> x = np.ones((8, 3), np.float32); y = np.zeros((8, 1), np.float32)
      >>> trainer = jaxfit.Trainer(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 1))},
      ...     optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
      ...     loss="mse", population=2, hyperparams={"learning_rate": [0.01, 0.1]})
      >>> history = trainer.fit(x, y, epochs=2, batch_size=4, verbose=0)
      >>> history.history["loss"][0].shape, len(history.members[1].epoch)
      ((2,), 2)
    """

    def __init__(self, members: list[History] | None = None) -> None:
        super().__init__()
        self.members: list[History] = list(members or [])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(np.array(value, np.float64))  # type: ignore[arg-type]
            self._epochs_of.setdefault(key, []).append(epoch)

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["history"] = {
            k: [np.asarray(v).tolist() for v in vs] for k, vs in self.history.items()
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.epoch = [int(e) for e in state["epoch"]]
        self.history = {
            k: [np.asarray(v, np.float64) for v in vs]  # type: ignore[misc]
            for k, vs in state["history"].items()
        }
        self._epochs_of = {
            k: [int(e) for e in es] for k, es in state["epochs_of"].items()
        }

    def __repr__(self) -> str:
        return (
            f"PopulationHistory(members={len(self.members)}, epoch={self.epoch}, "
            f"keys={list(self.history)})"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"epoch": [...], <key>: [[value per member] per epoch]}``."""
        return {
            "epoch": list(self.epoch),
            **{
                k: [np.asarray(v).tolist() for v in vs]
                for k, vs in self.history.items()
            },
        }

    def _rows(self) -> list[dict[str, Any]]:
        """One row per member and epoch (columns: epoch, member, the keys)."""
        rows = []
        for i, history in enumerate(self.members):
            for row in history._rows():
                rows.append({"epoch": row.pop("epoch"), "member": i, **row})
        return rows

    def to_csv(self, path: Any, separator: str = ",") -> None:
        """Writes one row per member and epoch (columns: epoch, member, keys)."""
        from jaxfit._src.report import files

        keys = list(dict.fromkeys(k for h in self.members for k in h.history))
        files.write_csv(path, ["epoch", "member", *keys], self._rows(), separator)

    def best(self, monitor: str = "val_loss", mode: Any = "auto") -> tuple[int, float]:
        """Refused: a population has a best per member (``members[i].best``) and
        a best member (``trainer.best_member``)."""
        raise ValueError(
            errors.expected(
                "history",
                "a member's History: history.members[i].best(...), or "
                "trainer.best_member(monitor) for the best member",
                errors.Description("a population's History"),
            )
        )

    def plot(self, keys: list[str] | None = None, ax: Any = None) -> Any:
        """Plots every member's curves (one colour per key, a line per member;
        ``val_`` keys dashed).

        Args:
          keys: the series to draw (training names also draw their ``val_``
            twin). Defaults to `None` (all).
          ax: a matplotlib Axes. Defaults to `None` (a new figure).

        Returns:
          The matplotlib Figure.
        """
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots() if ax is None else (ax.figure, ax)
        names = list(dict.fromkeys(k for h in self.members for k in h.history))
        base = [k for k in (keys or names) if not k.startswith("val_")]
        for c, key in enumerate(base):
            color = f"C{c % 10}"
            for i, history in enumerate(self.members):
                for name, style in ((key, "-"), (f"val_{key}", "--")):
                    if name in history.history:
                        epochs = [e + 1 for e in history.epochs_of(name)]
                        label = name if i == 0 else None
                        ax.plot(
                            epochs,
                            history.history[name],
                            style,
                            color=color,
                            alpha=0.7,
                            linewidth=1.0,
                            label=label,
                        )
        ax.set_xlabel("epoch")
        ax.set_title(f"{len(self.members)} members")
        if base:
            ax.legend()
        return figure
