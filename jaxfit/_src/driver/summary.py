"""``trainer.summary()``: Keras' model summary for a pytree of params.

One row per leaf of the params (its path, shape, dtype, count and bytes), then
the model state's leaves (Keras' non-trainable weights), the totals (Keras'
"Total / Trainable / Non-trainable params", with bytes), the optimizer state's
size, and the output shapes: traced abstractly (``jax.eval_shape``, nothing
runs) on ``x`` when given, else the shapes the trainer last traced (its
``fit`` / ``evaluate``), else left out with a hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.data import arrays
from jaxfit._src.driver import compiler
from jaxfit._src.driver.trainer_base import TrainerBase

_COLUMNS = ("Param (path)", "Shape", "Dtype", "Count", "Bytes")


def readable_bytes(count: int) -> str:
    """``"4.82 KB"``: Keras' ``readable_memory_size`` (powers of 1024)."""
    size, units = float(count), ("B", "KB", "MB", "GB", "TB", "PB")
    unit = 0
    while size >= 1024 and unit < len(units) - 1:
        size, unit = size / 1024, unit + 1
    return f"{size:.2f} {units[unit]}"


def _rows(tree: Any, prefix: str) -> list[tuple[str, str, str, int, int]]:
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(np.shape(leaf))
        dtype = np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
        count = int(np.prod(shape, dtype=np.int64))
        rows.append(
            (
                prefix + jax.tree_util.keystr(path),
                str(shape),
                dtype.name,
                count,
                count * dtype.itemsize,
            )
        )
    return rows


def _totals(rows: list[tuple[str, str, str, int, int]]) -> tuple[int, int]:
    return sum(r[3] for r in rows), sum(r[4] for r in rows)


def _table(rows: list[tuple[str, str, str, int, int]]) -> list[str]:
    cells = [_COLUMNS] + [(p, s, d, f"{c:,}", f"{b:,}") for p, s, d, c, b in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    lines = []
    for i, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(w) if j < 3 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if i == 0:
            lines.append("-" * len(lines[0]))
    return lines


def _heading(population: int | None) -> str:
    if population is None:
        return "Trainer summary"
    return (
        f"Trainer summary: a population of {population} members (the shapes lead "
        "with the member axis, the totals count every member; the output shape "
        "is each member's)"
    )


class Summary(TrainerBase):
    """``summary``."""

    @errors.filter_traceback
    def summary(
        self, x: Any = None, *, print_fn: Callable[[str], Any] | None = print
    ) -> str:
        """Prints a table of the params, the model state and the output shapes
        (Keras' ``model.summary()``), and returns it.

        Args:
          x: an example batch (an array or pytree of arrays with a leading
            sample axis) to show the output shapes on; only its shapes are read
            (``jax.eval_shape``: nothing runs, nothing compiles). Defaults to
            `None` (the shapes the trainer last traced, by ``fit`` or
            ``evaluate``, if any).
          print_fn: called with the whole text; ``None`` prints nothing.
            Defaults to `print`.

        Returns:
          The text printed (unlike Keras, which returns ``None``).

        Raises:
          ValueError: an ``x`` the model cannot take (its shapes named).
        """
        state = self.state
        params = _rows(state.params, "params")
        model_state = _rows(state.model_state, "state")
        p_count, p_bytes = _totals(params)
        s_count, s_bytes = _totals(model_state)
        o_count, o_bytes = _totals(_rows(state.opt_state, "opt_state"))
        lines = [_heading(getattr(self, "population", None)), ""]
        lines += _table(params + model_state) + [""]
        lines += [
            f"Total params: {p_count + s_count:,} "
            f"({readable_bytes(p_bytes + s_bytes)})",
            f"Trainable params: {p_count:,} ({readable_bytes(p_bytes)})",
            f"Non-trainable params: {s_count:,} ({readable_bytes(s_bytes)})",
            f"Optimizer params: {o_count:,} ({readable_bytes(o_bytes)})",
            "",
        ]
        lines += self._output_lines(x)
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _output_lines(self, x: Any) -> list[str]:
        """The output shapes, ``None`` for the batch axis (as Keras)."""
        outputs = self._outputs(x)
        if outputs is None:
            return ["Output shape: unknown (pass an example batch: trainer.summary(x))"]
        leaves = jax.tree_util.tree_flatten_with_path(outputs)[0]
        return [
            f"Output shape{jax.tree_util.keystr(path)}: "
            f"{(None, *leaf.shape[1:])} {np.dtype(leaf.dtype).name}"
            for path, leaf in leaves
        ]

    def _outputs(self, x: Any) -> Any:
        if x is None:
            traced = [c.y_pred for c in self._compiler._cache.values()]
            return traced[-1] if traced else None
        arrays.require_arrays(x, "x", "an example batch")
        x = arrays.to_numpy(x, "x")
        spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), x)
        apply = precision_lib.make_compute_apply(self.policy, self._spec.apply)
        state = self.state
        if getattr(self, "population", None) is not None:  # one member's shapes
            state = jax.tree.map(lambda a: a[0], state)
        rows = jax.tree.leaves(spec)[0].shape[0]
        try:
            return jax.eval_shape(
                lambda s, xb, m: apply(
                    s.params, s.model_state, xb, train=False, rng=s.rng, mask=m
                )[0],
                state,
                spec,
                jax.ShapeDtypeStruct((rows,), jnp.float32),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"x: the model cannot be applied to x of {compiler.shapes(spec)} "
                f"with params of {compiler.shapes(state.params)}: "
                f"{compiler.first_line(error)}. Check x's feature shape."
            ) from None
