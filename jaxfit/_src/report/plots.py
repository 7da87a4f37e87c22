"""Plots of a training History (matplotlib, the optional ``plot`` extra, imported
when a plot is drawn)."""

from __future__ import annotations

from typing import Any

# Series on another scale than the losses: a second y axis in ``History.plot``.
_OWN_AXIS = ("learning_rate", "lr", "loss_scale")


def plot_history(history: Any, keys: list[str] | None = None, ax: Any = None) -> Any:
    """Draws ``history`` (a ``History``) as ``History.plot`` documents; returns the
    matplotlib Figure."""
    import matplotlib.pyplot as plt  # optional extra: jaxfit[plot]
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        figure, ax = plt.subplots()
    else:
        figure = ax.figure
    if keys:  # each series once: a val_ key drawn with its training key is not again
        unique = list(dict.fromkeys(keys))
        base = [
            k
            for k in unique
            if not (k.startswith("val_") and k.removeprefix("val_") in unique)
        ]
    else:
        base = [k for k in history.history if not k.startswith("val_")]
    main = [k for k in base if k not in _OWN_AXIS] or list(base)
    aside = [k for k in base if k not in main]
    handles = _draw(history, ax, main, 0)
    if aside:
        other = ax.twinx()
        handles += _draw(history, other, aside, len(main), linestyle=":")
        other.set_ylabel(", ".join(aside))
        if all(min(history.history[k]) > 0 for k in aside):
            values = [v for k in aside for v in history.history[k]]
            if max(values) > 20 * min(values):  # a decay over decades
                other.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = other if aside else ax  # the legend above every line
    top.legend(handles=handles, labels=[h.get_label() for h in handles])
    return figure


def _draw(
    history: Any, ax: Any, keys: list[str], first_colour: int, linestyle: str = "-"
) -> list[Any]:
    """Draws ``keys`` (and their ``val_`` twins, dashed) on ``ax``, colours
    ``C<first_colour>``...; returns the lines."""
    lines = []
    for i, key in enumerate(keys):
        colour = f"C{(first_colour + i) % 10}"
        lines += ax.plot(
            [e + 1 for e in history.epochs_of(key)],
            history.history[key],
            label=key,
            color=colour,
            linestyle=linestyle,
        )
        val = f"val_{key}"
        if val in history.history:
            lines += ax.plot(
                [e + 1 for e in history.epochs_of(val)],
                history.history[val],
                label=val,
                linestyle="--",
                color=colour,
            )
    return lines
