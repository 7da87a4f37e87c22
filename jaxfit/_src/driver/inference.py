"""``Trainer``'s evaluation and inference calls: ``evaluate``, ``evaluate_dataset``
and ``predict`` (on a ``TrainerBase``: its compiled steps and state)."""

from __future__ import annotations

from typing import Any

from jaxfit._src import errors
from jaxfit._src.data import arrays
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import evaluating, plans, predicting, validate
from jaxfit._src.driver.trainer_base import TrainerBase


class Inference(TrainerBase):
    """``evaluate``, ``evaluate_dataset`` and ``predict``."""

    @errors.filter_traceback
    def evaluate(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int = 32,
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: Any = None,
    ) -> dict[str, float]:
        """Evaluates the model (``train=False``) on in-memory arrays (Keras).

        Args:
          x, y: arrays or pytrees of arrays with a common leading sample axis.
          batch_size: samples per batch (the last one padded and masked).
            Defaults to `32`.
          sample_weight: per-sample weights of the loss (and the
            ``weighted_metrics``), an array of shape ``(n,)`` or one per output.
            Defaults to `None`.
          steps: at most this many batches. Defaults to `None` (all).
          callbacks: receive the ``on_test_*`` hooks (see ``Callback``).
            Defaults to `None`.

        Returns:
          ``{"loss": ..., <metric>: ...}``: means over the samples (the loss
          weighted by ``sample_weight``, as Keras), Python floats.

        Raises:
          ValueError, TypeError: bad arguments, before anything runs.
        """
        self._require("evaluate", optimizer=False)
        validate.positive_int("batch_size", batch_size)
        validate.positive_int("steps", steps, allow_none=True)
        data, n = arrays.standardize(x, y, sample_weight)
        plan = plans.array_eval_plan(
            self._prepare, self._spec.placement, data, n, batch_size, steps
        )
        return self._evaluate(plan, callbacks)

    @errors.filter_traceback
    def evaluate_dataset(
        self,
        dataset: Any,
        *,
        batches: int | None = None,
        callbacks: Any = None,
        producer_timeout: float | None = None,
    ) -> dict[str, float]:
        """Evaluates over a stream of batches (tfjs ``evaluateDataset``).

        Args:
          dataset: any source ``fit_dataset`` accepts.
          batches: at most this many batches. Defaults to `None` (all).
          callbacks: receive the ``on_test_*`` hooks. Defaults to `None`.
          producer_timeout: the most seconds to wait for any one batch, as in
            ``fit_dataset``. Defaults to `None` (as long as it takes; Ctrl-C
            still interrupts).

        Returns:
          ``{"loss": ..., <metric>: ...}``.

        Raises:
          ValueError, TypeError: bad arguments or a malformed first batch.
          TimeoutError: the producer gave no batch within ``producer_timeout``.
        """
        self._require("evaluate_dataset", optimizer=False)
        validate.positive_int("batches", batches, allow_none=True)
        validate.producer_timeout(producer_timeout)
        plan = plans.eval_plan(
            self._prepare,
            self._spec.placement,
            dataset,
            batches,
            1,
            "dataset",
            producer_timeout=producer_timeout,
        )
        assert plan is not None
        return self._evaluate(plan, callbacks)

    def _evaluate(self, plan: evaluating.EvalPlan, callbacks: Any) -> dict[str, float]:
        callback_list = callback_lib.CallbackList(
            callback_lib.normalize(callbacks), self, {"verbose": 0, "epochs": 1}
        )
        try:
            return evaluating.evaluate_loop(self.state, plan, callback_list)
        finally:
            plan.source.close()

    @errors.filter_traceback
    def predict(self, x: Any, *, batch_size: int = 32, callbacks: Any = None) -> Any:
        """Returns the model's outputs (``train=False``) as numpy arrays, in order.

        Batches are padded to ``batch_size`` so one compilation serves them all.

        Args:
          x: an array or pytree of arrays with a leading sample axis.
          batch_size: samples per batch. Defaults to `32`.
          callbacks: receive ``on_predict_begin`` / ``on_predict_end``.
            Defaults to `None`.

        Returns:
          The outputs for every sample of ``x``: a pytree like the model's output,
          of numpy arrays.

        Raises:
          ValueError, TypeError: bad arguments, or an ``x`` the model cannot take
            (its shapes named), before anything runs.
        """
        validate.positive_int("batch_size", batch_size)
        return predicting.predict(
            self._predict,
            self.state,
            self._spec.placement,
            x,
            batch_size,
            lambda steps: callback_lib.CallbackList(
                callback_lib.normalize(callbacks),
                self,
                {"verbose": 0, "epochs": 1, "steps": steps},
            ),
        )
