"""``Trainer``'s evaluation and inference calls: ``evaluate``, ``evaluate_dataset``,
``predict`` and ``predict_dataset`` (on a ``TrainerBase``: its compiled steps
and state). Each call runs on a key of its own (``inference_rng``)."""

from __future__ import annotations

from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.core import inference_steps
from jaxfit._src.data import arrays
from jaxfit._src.data import predict_stream as predict_stream_lib
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import (
    evaluating,
    inference_rng,
    plans,
    predicting,
    validate,
)
from jaxfit._src.driver.trainer_base import TrainerBase


class Inference(TrainerBase):
    """``evaluate``, ``evaluate_dataset``, ``predict`` and ``predict_dataset``."""

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
            return evaluating.evaluate_loop(
                inference_rng.with_call_key(self), plan, callback_list
            )
        finally:
            plan.source.close()

    @errors.filter_traceback
    def predict(
        self, x: Any, *, batch_size: int | None = None, callbacks: Any = None
    ) -> Any:
        """Returns the model's outputs (``train=False``) as numpy arrays, in order.

        Batches are padded to ``batch_size`` so one compilation serves them all.
        Each batch gets a fresh ``rng`` key (an ``apply`` that uses it at
        inference, MC dropout say, draws new noise per batch and per call),
        derived from the trainer's seed and this call's number among the
        trainer's inference calls: the same seed and calls give the same
        outputs, and the training rng is left as it is.

        Args:
          x: an array or pytree of arrays with a leading sample axis; or a
            stream of input batches (a generator or generator function, a grain
            dataset, any iterable that is not a list, tuple or dict), which is
            ``predict_dataset(x)``.
          batch_size: samples per batch (arrays only; a stream brings its own
            batches). Defaults to `None` (32).
          callbacks: receive ``on_predict_begin``, ``on_predict_batch_begin`` /
            ``on_predict_batch_end`` (Keras' ``{"outputs": ...}``) and
            ``on_predict_end``. Defaults to `None`.

        Returns:
          The outputs for every sample of ``x``: a pytree like the model's output,
          of numpy arrays.

        Raises:
          ValueError, TypeError: bad arguments, or an ``x`` the model cannot take
            (its shapes named), before anything runs.
        """
        if predict_stream_lib.is_stream(x):
            if batch_size is not None:
                raise ValueError(
                    errors.expected(
                        "batch_size",
                        "None when x is a stream of batches (it brings its own)",
                        batch_size,
                    )
                )
            return self.predict_dataset(x, callbacks=callbacks)
        batch_size = 32 if batch_size is None else batch_size
        validate.positive_int("batch_size", batch_size)
        return predicting.predict(
            self._predict,
            self.state,
            lambda: inference_rng.with_call_key(self),
            self._spec.placement,
            x,
            batch_size,
            self._predict_callbacks(callbacks),
        )

    @errors.filter_traceback
    def predict_dataset(
        self,
        dataset: Any,
        *,
        batches: int | None = None,
        callbacks: Any = None,
        producer_timeout: float | None = None,
    ) -> Any:
        """Returns the model's outputs (``train=False``) over a stream of input
        batches, concatenated in order (Keras' ``predict`` on a dataset).

        The stream is read as ``fit_dataset`` reads its own (a background
        thread; batches of one shape padded, masked and fused into blocks; a
        short last batch padded to the bucket's size, not compiled again). A
        batch is ``x``, a tuple ``(x,)``, ``(x, y)`` or ``(x, y,
        sample_weight)``, or a dict with ``"xs"``: as in Keras, only ``x`` is
        used (a tuple ``x`` of several inputs is given as ``((a, b),)``). Keys
        as in ``predict``.

        Args:
          dataset: an iterable of batches, a generator function, a grain
            dataset or a ``tf.data.Dataset``.
          batches: at most this many batches. Defaults to `None` (all).
          callbacks: as in ``predict``. Defaults to `None`.
          producer_timeout: the most seconds to wait for any one batch, as in
            ``fit_dataset``. Defaults to `None`.

        Returns:
          A pytree like the model's output, of numpy arrays: the outputs of
          every row of every batch read.

        Raises:
          ValueError, TypeError: a bad argument, a stream with no batches, or a
            first batch the model cannot take; a later malformed batch names
            its index.
          TimeoutError: the producer gave no batch within ``producer_timeout``.
        """
        validate.positive_int("batches", batches, allow_none=True)
        validate.producer_timeout(producer_timeout)
        return predicting.predict_stream(
            self._predict_block(),
            self._predict,
            self.state,
            lambda: inference_rng.with_call_key(self),
            self._spec.placement,
            dataset,
            batches,
            producer_timeout,
            self._predict_callbacks(callbacks),
        )

    def _predict_callbacks(self, callbacks: Any) -> Any:
        callback_list = callback_lib.normalize(callbacks)
        return lambda steps: callback_lib.CallbackList(
            callback_list, self, {"verbose": 0, "epochs": 1, "steps": steps}
        )

    def _predict_block(self) -> Any:
        """The jitted predict block for the state's current shardings."""
        cached = self.__dict__.get("_predict_blocks")
        if cached is None or cached[0] is not self._shardings:
            where = self._spec.placement
            block = jax.jit(
                inference_steps.make_predict_block(self._spec.apply, self._spec.policy),
                in_shardings=(
                    self._shardings,
                    where.batch_sharding(2),
                    where.batch_sharding(2),
                ),
                out_shardings=(where.batch_sharding(2), where.replicated),
            )
            cached = self.__dict__["_predict_blocks"] = (self._shardings, block)
        return cached[1]
