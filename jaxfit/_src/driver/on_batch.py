"""Keras' one-batch calls: ``train_on_batch``, ``test_on_batch``,
``predict_on_batch``, through the compiled train, eval and predict steps.

A batch is padded (and masked) to the largest batch size the same call has seen
on this trainer, a multiple of the data axis, so a smaller batch after a larger
one compiles nothing new; a larger one compiles once. No callbacks run (as
Keras). Each returns its values at once (a sync per call, as Keras).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import placement
from jaxfit._src.data import arrays, checks
from jaxfit._src.driver import inference_rng, predicting, steps
from jaxfit._src.driver.trainer_base import TrainerBase


def _flat(logs: dict[str, float], return_dict: bool) -> Any:
    """Keras' return value: the dict, or its values in order (one: a scalar)."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


class OnBatch(TrainerBase):
    """``train_on_batch``, ``test_on_batch`` and ``predict_on_batch``."""

    def _rows(self, call: str, n: int) -> int:
        """The padded batch size of ``call``'s batch of ``n`` samples: the
        largest seen so far (rounded up to the data axis)."""
        sizes = self.__dict__.setdefault("_on_batch_rows", {})
        sizes[call] = max(sizes.get(call, 0), self._spec.placement.padded(n))
        return sizes[call]

    def _block(self, data: dict[str, Any], n: int, rows: int) -> Any:
        """``data`` as a one-batch block of ``rows`` rows (the rest padding,
        mask 0), this process's rows on the mesh."""

        def pad(leaf: Any) -> np.ndarray:
            return _pad(leaf, n, rows)[None]

        mask = np.ones(n, np.float32)
        block = {
            "x": jax.tree.map(pad, data["x"]),
            "y": jax.tree.map(pad, data["y"]),
            "sample_weight": tuple(pad(w) for w in data["sample_weight"]),
            "mask": pad(mask),
        }
        where = self._spec.placement
        local = where.local_rows(rows)
        return where.put_block(jax.tree.map(lambda a: a[:, local], block), rows)

    def _standard(self, x: Any, y: Any, sample_weight: Any) -> tuple[Any, int]:
        data, n = arrays.standardize(x, y, sample_weight)
        if n == 0:
            raise ValueError(errors.expected("x", "at least one sample", data["x"]))
        return data, n

    @errors.filter_traceback
    def train_on_batch(
        self,
        x: Any,
        y: Any,
        sample_weight: Any = None,
        class_weight: dict[int, float] | None = None,
        return_dict: bool = False,
    ) -> Any:
        """Runs one optimizer step on exactly this batch (Keras 3).

        The step is ``fit``'s compiled train step: the same numbers as ``fit``
        on this one batch (``batch_size=len(x)``, ``shuffle=False``), the rng
        advanced as there. As Keras 3, the returned values are this batch's
        alone (metrics are not accumulated across calls). No callbacks run.

        Args:
          x, y: one batch: arrays or pytrees of arrays with a common leading
            sample axis.
          sample_weight: per-sample loss weights, shape ``(n,)`` or one per
            output. Defaults to `None`.
          class_weight: ``{class index: weight}``, as in ``fit``; with
            ``sample_weight`` too the two multiply (as in ``fit``; Keras refuses
            both). Defaults to `None`.
          return_dict: return ``{"loss": ..., <metric>: ...}``. Defaults to
            `False`.

        Returns:
          The batch's loss (a float) when nothing else is logged, else the
          list ``[loss, <output>_loss..., metrics...]`` in the logs' order, or
          the dict with ``return_dict``.

        Raises:
          ValueError, TypeError: bad arguments, before the step runs.
          RuntimeError: called while ``fit`` runs.
        """
        self._refuse_running("train_on_batch")
        self._require("train_on_batch", optimizer=True)
        data, n = self._standard(x, y, sample_weight)
        if class_weight is not None:
            checks.check_class_weight(class_weight, data["y"])
            data = arrays.with_class_weight(data, class_weight)
        rows = self._rows("train", n)
        compiled = self._prepare(data["x"], data["y"], n)
        state = self._spec.placement.place(self.state, compiled.state_shardings)
        block = self._block(data, n, rows)
        state, totals, _ = compiled.train_block(state, compiled.empty_totals(), block)
        self.session.state = state
        logs = steps.host_values(compiled.log_names, placement.fetch(totals))
        return _flat(logs, return_dict)

    @errors.filter_traceback
    def test_on_batch(
        self,
        x: Any,
        y: Any,
        sample_weight: Any = None,
        return_dict: bool = False,
    ) -> Any:
        """Evaluates this one batch (Keras 3): ``evaluate``'s numbers on it.

        Args:
          x, y: one batch, as in ``train_on_batch``.
          sample_weight: per-sample loss weights. Defaults to `None`.
          return_dict: return the dict of logs. Defaults to `False`.

        Returns:
          As ``train_on_batch``: the loss, the list of values, or the dict.

        Raises:
          ValueError, TypeError: bad arguments, before anything runs.
        """
        self._require("test_on_batch", optimizer=False)
        data, n = self._standard(x, y, sample_weight)
        rows = self._rows("test", n)
        compiled = self._prepare(data["x"], data["y"], n)
        block = self._block(data, n, rows)
        state = inference_rng.with_call_key(self)
        _, totals, _ = compiled.eval_block(state, compiled.empty_totals(), block)
        logs = steps.host_values(compiled.log_names, placement.fetch(totals))
        return _flat(logs, return_dict)

    @errors.filter_traceback
    def predict_on_batch(self, x: Any) -> Any:
        """The model's outputs (``train=False``) on this one batch (Keras 3).

        Args:
          x: one batch: an array or pytree of arrays with a leading sample axis.

        Returns:
          A pytree like the model's output, of numpy arrays, one row per
          sample of ``x``.

        Raises:
          ValueError, TypeError: an ``x`` that is not arrays, or that the model
            cannot take.
        """
        arrays.require_arrays(x, "x", "the inputs")
        data = arrays.to_numpy(x, "x")
        n = arrays.num_samples({"x": data})
        if n == 0:
            raise ValueError(errors.expected("x", "at least one sample", data))
        rows = self._rows("predict", n)
        predicting.check_shapes(self._predict, self.state, data, rows, n, "x")
        state = inference_rng.with_call_key(self)  # x checked: nothing compiled
        where = self._spec.placement
        local = where.local_rows(rows)
        x_pad = jax.tree.map(lambda a: _pad(a, n, rows)[local], data)
        mask = _pad(np.ones(n, np.float32), n, rows)[local]
        y_pred, _ = self._predict(state, *where.put_batch((x_pad, mask), rows))
        return jax.tree.map(lambda a: np.asarray(a)[:n], placement.gather(y_pred))

    def _refuse_running(self, call: str) -> None:
        if self.session.running:
            raise RuntimeError(
                f"{call}: the trainer is running a fit; call it between calls."
            )


def _pad(leaf: Any, n: int, rows: int) -> np.ndarray:
    """``leaf``'s ``n`` rows followed by zero rows up to ``rows``."""
    leaf = np.asarray(leaf)
    out = np.zeros((rows, *leaf.shape[1:]), leaf.dtype)
    out[:n] = leaf
    return out
