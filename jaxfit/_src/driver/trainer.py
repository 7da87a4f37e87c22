"""Trainer: owns the session (state) and the compiled steps; validates, then loops.

The path of a batch: ``fit`` binds its arguments into a ``FitArgs`` (checked
once), ``plans`` turns the data into a source (``data.sources``) and asks the
``Compiler`` for the jitted blocks (tracing the model abstractly, checking the
labels), and ``loop.fit_loop`` advances the ``FitSession`` block by block,
delivering each batch's logs to the callbacks at yield points.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxfit._src import errors
from jaxfit._src.checkpoint.checkpointing import Checkpointing
from jaxfit._src.core import apply as apply_lib
from jaxfit._src.core import model as model_lib
from jaxfit._src.core import placement
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.core.model import Model
from jaxfit._src.core.state import TrainState, strong
from jaxfit._src.driver import (
    arguments,
    compiler,
    loop,
    plans,
    steps,
    validate,
)
from jaxfit._src.driver.arguments import FitArgs, StreamFitArgs, Verbose, YieldEvery
from jaxfit._src.driver.history import History
from jaxfit._src.driver.inference import Inference
from jaxfit._src.driver.on_batch import OnBatch
from jaxfit._src.driver.session import FitSession
from jaxfit._src.driver.summary import Summary


class Trainer(Inference, OnBatch, Summary, Checkpointing):
    """Trains a pure JAX model with a Keras / TensorFlow.js ``fit`` API.

    The train and eval steps are each compiled once (ragged last batches are
    padded and masked), the state is donated, and the driver syncs with the
    device only at yield points.

    Errors that are the user's (a bad argument, or an exception raised by a
    callback, ``apply_fn`` or the data) leave every public call of the trainer
    with jaxfit's own frames removed from the traceback, so it shows the user's
    code only (as Keras and JAX filter theirs). Set the environment variable
    ``JAXFIT_TRACEBACK_FILTERING=off`` to see every frame.

    Args:
      apply_fn: ``apply(params, x, *, train=..., rng=..., state=..., mask=...)``
        returning the predictions (a pytree like ``y``), or ``(y_pred,
        new_state)`` when it declares ``state``. The keyword-only ``train``,
        ``rng``, ``state`` and ``mask`` are optional; jaxfit passes exactly those
        declared. ``mask`` is 1 for real rows and 0 for the padding rows of a
        ragged or device-padded batch: batch statistics that exclude them do not
        depend on the batch padding or the device count. Or a ``jaxfit.Model``
        (what ``jaxfit.from_flax`` / ``from_nnx`` / ``from_equinox`` return), which
        brings its own params and state.
      params: the initial parameters (any pytree of arrays; they are copied, so
        the arrays you pass stay valid), or an init function ``init(key) ->
        params``, called once with a key derived from ``seed``:
        ``jax.random.fold_in(jax.random.PRNGKey(seed), 0x696E6974)``, a stream
        apart from the dropout keys'. Defaults to `None` (only with a
        ``jaxfit.Model``).
      optimizer: an ``optax.GradientTransformation``. Defaults to `None` (a trainer
        for inference: ``predict`` works, ``fit`` asks for one; see ``compile``).
      loss: a loss name (``"mse"``, ``"categorical_crossentropy"``, ...), a callable
        ``(y_true, y_pred) -> per-sample loss`` of shape ``(batch,)``, or a pytree
        of those matching ``y``. A single loss applies to every output. Defaults
        to `None` (``fit`` and ``evaluate`` ask for one).
      metrics: a list of metric names or callables (applied to every output), or a
        dict ``{output name: metrics}``. As Keras (and tfjs), these are plain means
        over the samples: sample and class weights do not apply. Defaults to `None`.
      loss_weights: a pytree of floats matching ``y`` weighting each output's loss.
        Defaults to `None` (all 1).
      state: the initial model state for an ``apply_fn`` that declares ``state``.
        Defaults to `None`.
      seed: seeds dropout keys, the shuffling order and the keys of inference
        calls (``predict``, ``evaluate``...: a fresh key per batch and per call,
        from the seed and the call's number; the training rng is left as it
        is). Defaults to `0`.
      weighted_metrics: metrics weighted by ``sample_weight`` and ``class_weight``
        (Keras' ``weighted_metrics``); same forms as ``metrics``. Defaults to `None`.
      mesh: ``"auto"`` (every device, a 1-D data-parallel mesh), ``None`` (one
        device) or a ``jax.sharding.Mesh``. Batches are split along ``data_axis``
        (padded and masked to a multiple of its size); the loss is the same global
        mean on any number of devices. Defaults to `"auto"`.
      data_axis: the mesh axis batches are split along. Defaults to `"data"`.
      precision: ``"float32"``; ``"mixed_bfloat16"`` / ``"mixed_float16"`` (compute
        in low precision with float32 master weights and optimizer state; float16
        with dynamic loss scaling as Keras' LossScaleOptimizer: a step with
        non-finite gradients is skipped and the scale halved, logged as
        ``loss_scale``); or ``"bfloat16"`` (Keras' policy: params stored in
        bfloat16 too). Losses and metrics are computed in float32. Defaults to
        `"float32"`.
      param_sharding: ``None`` (params and optimizer state replicated), a pytree of
        ``jax.sharding.PartitionSpec`` structured like the params, or a function
        ``(path, leaf) -> PartitionSpec | None``; the optimizer's param-shaped
        state follows its params. Defaults to `None`.
      population: train this many members as one compiled program: member
        ``i`` trains exactly as this ``Trainer`` with ``seed=seed + i`` (and its
        ``hyperparams`` values) would: an init function ``params`` is called
        with member ``i``'s init key, a ``jaxfit.Model`` with an ``init`` starts
        member ``i`` from ``model.reinit(seed + i)``, and a params pytree is the
        start of every member. See the Populations guide. Defaults to `None`
        (one model).
      hyperparams: with ``population``, ``{name: one value per member}`` for
        any hyperparameter the optimizer injects (``optax.inject_hyperparams``),
        ``"loss_weights"``, and ``"seed"`` (each member's own seed in place of
        ``seed + i``: members of one seed that differ only in their values).
        Defaults to `None`.

    Raises:
      TypeError, ValueError: for a bad ``apply_fn``, ``optimizer``, unknown loss
        or metric names, with the argument and the received value in the message.

    Example:
      >>> import jax.numpy as jnp, numpy as np, optax, jaxfit
      >>> def apply(params, x):
      ...     return x @ params["w"]
      >>> x = np.ones((8, 3), np.float32); y = np.zeros((8, 1), np.float32)
      >>> trainer = jaxfit.Trainer(apply, {"w": jnp.zeros((3, 1))},
      ...                          optimizer=optax.sgd(0.1), loss="mse")
      >>> history = trainer.fit(x, y, epochs=2, batch_size=4, verbose=0)
      >>> history.epoch
      [0, 1]
    """

    population: int | None = None
    """The number of members trained as one program: ``None`` for one model (a
    :class:`~jaxfit.PopulationTrainer`, made by ``population=N``, holds ``N``)."""

    @errors.filter_traceback
    def __init__(
        self,
        apply_fn: Callable[..., Any] | Model,
        params: Any = None,
        *,
        optimizer: optax.GradientTransformation | None = None,
        loss: Any = None,
        metrics: Any = None,
        loss_weights: Any = None,
        state: Any = None,
        seed: int = 0,
        weighted_metrics: Any = None,
        mesh: Any = "auto",
        data_axis: str = "data",
        param_sharding: Any = None,
        precision: str = "float32",
        population: int | None = None,
        hyperparams: dict[str, Any] | None = None,
    ):
        if hyperparams is not None:
            raise ValueError(
                errors.expected(
                    "hyperparams",
                    "None without population (values per member need members)",
                    hyperparams,
                    "Pass population=N with one value per member.",
                )
            )
        apply, params, state = initial_model(apply_fn, params, state, seed)
        validate.optimizer(optimizer)
        validate.names(loss, metrics, weighted_metrics)
        where = placement.Placement(mesh, data_axis, param_sharding)
        self.policy = precision_lib.policy(precision)
        self._spec = compiler.Spec(
            apply,
            self.policy,
            where,
            optimizer,
            loss,
            metrics,
            weighted_metrics,
            loss_weights,
        )
        self._compiler = compiler.Compiler()
        self.history: History | None = None
        self.session = FitSession(
            initial_state(params, state, optimizer, self.policy, seed),
            where,
            seed=int(seed),
        )
        self._place_state(self.session.state)

    def __new__(cls, *args: Any, population: Any = None, **kwargs: Any) -> Any:
        # Trainer(..., population=N) is a population (see driver.population)
        if population is not None and cls is Trainer and _POPULATION:
            return super().__new__(_POPULATION[0])
        return super().__new__(cls)

    # -- fit ---------------------------------------------------------------------
    @errors.filter_traceback
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int = 32,
        epochs: int = 1,
        verbose: Verbose = "auto",
        callbacks: Any = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        class_weight: dict[int, float] | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int | list[int] = 1,
        yield_every: YieldEvery = "auto",
        accumulate_steps: int = 1,
        now: Callable[[], float] | None = None,
    ) -> History:
        """Trains for ``epochs`` epochs on in-memory arrays; returns the History.

        Arguments and semantics follow Keras 3 ``Model.fit``. ``epochs`` is the
        index of the final epoch: epochs ``initial_epoch .. epochs - 1`` run.
        ``validation_split`` holds out the last fraction (floor on the training
        side, as Keras and tfjs) before shuffling; ``validation_data`` overrides
        it. ``shuffle`` draws a fresh permutation per epoch from the seed. With
        ``steps_per_epoch``, batches form one stream continued across epochs
        (reshuffled at each pass). Batch callbacks receive each batch's own logs
        (tfjs semantics, not Keras' running means) at the next yield point
        (``yield_every``: ``"auto"`` every 125 ms, ``"batch"``, ``"epoch"``,
        ``"never"`` or a number of milliseconds); between yield points steps run
        in compiled blocks of about one interval of the measured step time.
        ``now`` injects the clock used by the yield policy (tests). Validation runs the ``on_test_*`` hooks, as Keras.
        ``accumulate_steps=k`` applies, once per group of ``k`` batches, the mean
        gradient over the group's real samples: the effective batch is ``k``
        times larger at the same memory. A ragged batch ends its group, so ``k``
        batches of ``b`` equal one of ``k * b`` on any epoch size; with full
        batches groups run on across epochs, and a group left partial when
        ``fit`` ends is dropped. ``validation_steps``, ``validation_batch_size`` and
        ``validation_freq`` without ``validation_data`` or ``validation_split``
        cannot act and are refused (Keras ignores them).

        Returns:
          The ``History`` callback of this run (also ``trainer.history``).

        Raises:
          ValueError, TypeError: bad arguments, raised before any step runs.
          RuntimeError: when called from inside a running ``fit``.
          MemoryError: the train step does not fit in device memory: refused
            before it runs where the device reports its limit (GPU, TPU), or XLA's
            ``RESOURCE_EXHAUSTED`` while it ran; the message names ``batch_size``.
            ``trainer.state`` is then the state before the failing step (see the
            Devices guide for what is guaranteed).
          Preempted: SIGTERM (preemption) arrived while it trained: training
            stopped at the next step boundary (with fused steps, the block's
            end), after a yield point where ``BackupAndRestore`` backs up that
            exact position; a ``SystemExit`` with code 143. ``trainer.state`` is
            the state at the stop, and rerunning the same ``fit`` with the same
            ``BackupAndRestore`` resumes there.
        """
        steps.finish(self._fit_steps(x, y, arguments.bind(FitArgs, locals())))
        return self.history  # type: ignore[return-value]

    @errors.filter_traceback
    async def fit_async(self, x: Any, y: Any, **kwargs: Any) -> History:
        """``fit`` that never blocks the event loop (notebooks).

        Takes the same keyword arguments as ``fit`` (checked as ``FitArgs``).
        What waits (tracing and compiling, the device at each yield point, a
        stream's producer) waits on a worker thread while the event loop runs
        other coroutines; the callbacks run on the event loop's thread, at the
        yield points. Raises as ``fit`` does (``Preempted`` included);
        cancelling the task ends the fit as an interrupt would.
        """
        args = FitArgs(**kwargs)
        plan = await self._plan_off_loop("fit", lambda: self._fit_plan(x, y, args))
        await steps.drive(loop.launch(self, plan, args, plan.source.batch_size))
        return self.history  # type: ignore[return-value]

    async def _plan_off_loop(
        self, call: str, make: Callable[[], loop.FitPlan]
    ) -> loop.FitPlan:
        """The plan made on a worker thread (tracing, the first batch); the fit
        is launched by the caller, on the event loop, so a task cancelled
        meanwhile leaves the trainer as it was. Another fit is refused while
        the plan is made."""
        self._start(call)
        self._planning = True
        made = asyncio.get_running_loop().run_in_executor(None, make)
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:  # the plan is never launched: close it
            made.add_done_callback(_close_plan)
            raise
        finally:
            self._planning = False

    @errors.filter_traceback
    def iterate_fit(self, x: Any, y: Any, args: FitArgs) -> Iterator[None]:
        """The generator behind ``fit``: everything is checked, traced and
        prepared before it returns; each ``next`` trains to the next yield
        point. Closing it early ends the fit as an interrupt would."""
        return steps.yield_points(self._fit_steps(x, y, args))

    def _fit_steps(self, x: Any, y: Any, args: FitArgs) -> steps.Steps:
        self._start("fit")
        plan = self._fit_plan(x, y, args)
        return loop.launch(self, plan, args, plan.source.batch_size)

    def _fit_plan(self, x: Any, y: Any, args: FitArgs) -> loop.FitPlan:
        return plans.fit_plan(
            self._prepare, self._spec.placement, lambda: self.seed, x, y, args
        )

    @errors.filter_traceback
    def fit_dataset(
        self,
        dataset: Any,
        *,
        epochs: int = 1,
        verbose: Verbose = "auto",
        callbacks: Any = None,
        validation_data: Any = None,
        validation_batches: int | None = None,
        class_weight: dict[int, float] | None = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        yield_every: YieldEvery = "auto",
        producer_timeout: float | None = None,
        now: Callable[[], float] | None = None,
    ) -> History:
        """Trains on a stream of batches (TensorFlow.js ``fitDataset``).

        ``dataset`` is any iterable of batches (re-iterated each epoch), a generator
        function (called afresh each epoch), a grain dataset or loader, or a
        ``tf.data.Dataset`` (through ``as_numpy_iterator()``; TensorFlow is never
        imported). A batch is ``{"xs", "ys"[, "sample_weight"]}`` or
        ``(x, y[, sample_weight])``. Without ``steps_per_epoch`` an epoch ends when
        the iterator is exhausted; with it, one iterator continues across epochs,
        and if it runs out training stops with tfjs' warning. Batches may vary in
        size: each is padded to the largest size seen so far and masked. A
        background thread reads and checks the batches and groups consecutive
        ones of a padded shape into blocks (about one ``yield_every`` interval
        of steps, at most 64) that run as one compiled call, as ``fit`` does;
        each batch's logs still reach the batch hooks (the Streams guide says
        when a block ends early). A batch of no rows is skipped (not a step).
        Other arguments are as in ``fit``.

        Args:
          validation_data: a ``tuple`` ``(x, y[, sample_weight])`` of arrays
            (batched like the first training batch), or any dataset as above.
            Defaults to `None`.
          validation_batches: at most this many validation batches per
            evaluation; refused without ``validation_data``. Defaults to `None`
            (all).
          producer_timeout: the most seconds to wait for any one batch of
            ``dataset`` (the first included) or of a validation stream; longer
            raises ``TimeoutError`` naming the batch (0-based, and its epoch).
            ``None`` waits as long as it takes. Either way the wait is
            interruptible: Ctrl-C stops ``fit_dataset`` at once, even while the
            producer is blocked. A producer blocked inside its ``__next__``
            cannot itself be stopped (Python cannot stop a thread): its daemon
            thread is left to end when the producer returns, and the trainer is
            usable at once (its state that of the last block run). Defaults to
            `None`.

        Returns:
          The ``History`` of this run.

        Raises:
          ValueError, TypeError: bad arguments or a malformed first batch, before
            any step; a later malformed batch names its index.
          TimeoutError: the producer gave no batch within ``producer_timeout``.
          MemoryError, Preempted: as in ``fit`` (a new, larger batch shape is
            checked before its first step too).
        """
        args = arguments.bind(StreamFitArgs, locals())
        steps.finish(self._fit_dataset_steps(dataset, args))
        return self.history  # type: ignore[return-value]

    @errors.filter_traceback
    async def fit_dataset_async(self, dataset: Any, **kwargs: Any) -> History:
        """``fit_dataset`` that never blocks the event loop, as ``fit_async``
        (takes the same keyword arguments, checked as ``StreamFitArgs``)."""
        args = StreamFitArgs(**kwargs)
        plan = await self._plan_off_loop(
            "fit_dataset",
            lambda: plans.stream_fit_plan(
                self._prepare, self._spec.placement, dataset, args
            ),
        )
        await steps.drive(loop.launch(self, plan, args, plan.source.padded_size))
        return self.history  # type: ignore[return-value]

    @errors.filter_traceback
    def iterate_fit_dataset(self, dataset: Any, args: StreamFitArgs) -> Iterator[None]:
        """The generator behind ``fit_dataset`` (see ``iterate_fit``)."""
        return steps.yield_points(self._fit_dataset_steps(dataset, args))

    def _fit_dataset_steps(self, dataset: Any, args: StreamFitArgs) -> steps.Steps:
        self._start("fit_dataset")
        plan = plans.stream_fit_plan(self._prepare, self._spec.placement, dataset, args)
        return loop.launch(self, plan, args, plan.source.padded_size)

    def _start(self, call: str) -> None:
        if self.session.running or getattr(self, "_planning", False):
            raise RuntimeError(
                f"{call}: the trainer is already running a fit; it is not re-entrant."
            )
        self._require(call, optimizer=True)


_POPULATION: list[type] = []  # registered by driver.population.trainer


def initial_model(
    apply_fn: Any, params: Any, state: Any, seed: Any
) -> tuple[Callable[..., Any], Any, Any]:
    """The normalized apply, params (an init function called with the seed's
    init key) and model state, checked."""
    errors.seed("seed", seed)  # before an init function is called with it
    params = model_lib.initialized(params, seed)
    unpacked_fn, params, state = model_lib.unpack(apply_fn, params, state)
    apply, _ = apply_lib.normalize(unpacked_fn)
    validate.arrays(params, "params", trainable=True)
    validate.arrays(state, "state", trainable=False)
    return apply, params, state


def initial_state(
    params: Any,
    state: Any,
    optimizer: optax.GradientTransformation | None,
    policy: precision_lib.Policy,
    seed: int,
) -> TrainState:
    """A fresh TrainState; strong dtypes throughout, so weak types washing out
    never recompiles."""
    params = precision_lib.cast_for_storage(policy, strong(params))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=None if optimizer is None else strong(optimizer.init(params)),
        model_state=precision_lib.cast_for_storage(policy, strong(state)),
        rng=jax.random.PRNGKey(seed),
        loss_scale=precision_lib.initial_loss_scale(policy),
    )


def _close_plan(made: Any) -> None:
    """Closes the sources of a plan made for a task cancelled meanwhile."""
    if not made.cancelled() and made.exception() is None:
        plan = made.result()
        plan.source.close()
        if plan.validation is not None:
            plan.validation.source.close()


def _init_signature(cls: type) -> inspect.Signature:
    """``cls(...)``'s signature: its ``__init__``'s without ``self`` (not the
    ``__new__`` that picks a population's class)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())  # type: ignore[misc]
    return inspect.Signature(parameters[1:])


Trainer.__signature__ = _init_signature(Trainer)  # type: ignore[attr-defined]

# The async twins take fit's and fit_dataset's keyword arguments (checked as FitArgs
# and StreamFitArgs); their signatures say so to introspection (notebooks' help).
Trainer.fit_async.__signature__ = inspect.signature(Trainer.fit)  # type: ignore[attr-defined]
Trainer.fit_dataset_async.__signature__ = inspect.signature(Trainer.fit_dataset)  # type: ignore[attr-defined]
