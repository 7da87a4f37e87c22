"""Trainer: owns the TrainState and the compiled steps; validates, then loops."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
from typing import Any, Callable, Iterator, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfit._src import errors
from jaxfit._src.core import apply as apply_lib
from jaxfit._src.core import hyperparams, losses
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.core import metrics as metrics_lib
from jaxfit._src.core import step as step_lib
from jaxfit._src.core.model import Model
from jaxfit._src.core.state import TrainState, strong
from jaxfit._src.data import arrays, checks, iterables
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import loop, placement, progress, validate, yield_policy
from jaxfit._src.driver.history import History

YieldEvery = Literal["auto", "batch", "epoch", "never"] | float


_UNCHANGED: Any = object()  # compile(): an argument left out keeps its value


class Trainer:
    """Trains a pure JAX model with a Keras / TensorFlow.js ``fit`` API.

    The train and eval steps are each compiled once (ragged last batches are
    padded and masked), the state is donated, and the driver syncs with the
    device only at yield points.

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
      params: the initial parameters (any pytree of arrays). They are copied, so
        the arrays you pass stay valid. Defaults to `None` (only with a
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
      seed: seeds dropout keys and the shuffling order. Defaults to `0`.
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
    ):
        if isinstance(apply_fn, Model):  # from an adapter: (apply, params, state)
            if params is not None:
                raise TypeError(errors.expected(
                    "params", "None when apply_fn is a jaxfit.Model (it holds the "
                    "params)", params))
            if state is not None:
                raise TypeError(errors.expected(
                    "state", "None when apply_fn is a jaxfit.Model (it holds the "
                    "state)", state))
            apply_fn, params, state = apply_fn.apply_fn, apply_fn.params, apply_fn.state
        elif params is None:
            raise TypeError(errors.expected(
                "params", "the model's parameters (a pytree of arrays), or a "
                "jaxfit.Model as the first argument", params))
        self._apply, self._has_state = apply_lib.normalize(apply_fn)
        _check_arrays(params, "params", trainable=True)
        _check_arrays(state, "state", trainable=False)
        _check_optimizer(optimizer)
        validate.non_negative_int("seed", seed)
        _check_names(loss, metrics, weighted_metrics)
        self._placement = placement.Placement(mesh, data_axis, param_sharding)
        self.policy = precision_lib.policy(precision)
        self._optimizer = optimizer
        self._loss = loss
        self._metrics = metrics
        self._weighted_metrics = weighted_metrics
        self._loss_weights = loss_weights
        self.seed = int(seed)
        # strong dtypes throughout, so weak types washing out never recompiles
        params = precision_lib.cast_for_storage(self.policy, strong(params))
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=None if optimizer is None else strong(optimizer.init(params)),
            model_state=precision_lib.cast_for_storage(self.policy, strong(state)),
            rng=jax.random.PRNGKey(seed),
            loss_scale=precision_lib.initial_loss_scale(self.policy),
        )
        self._place_state(state)
        self.stop_training = False
        self.history: History | None = None
        self._running = False
        self._callbacks: list[Any] = []  # the running (or last) fit's callbacks
        self._position = loop.Position()  # where training stands, for checkpoints
        self._resume: loop.Position | None = None  # set by a restoring callback
        self._fit_finished = False  # whether the last fit ended normally
        self._compiled: dict[Any, loop.Compiled] = {}

    def _place_state(self, state: TrainState) -> None:
        """Places a state of a (possibly) new structure: shardings, then the
        predict step built for them (the train and eval steps are per fit)."""
        self._shardings = self._placement.state_shardings(state, self._optimizer)
        self._state = self._placement.place(state, self._shardings)
        self._predict = jax.jit(step_lib.make_predict_step(self._apply, self.policy),
                                in_shardings=(self._shardings,
                                              self._placement.batch_sharding(1),
                                              self._placement.batch_sharding(1)),
                                out_shardings=self._placement.batch_sharding(1))

    # -- compile: the optimizer, loss and metrics ---------------------------------
    def compile(self, optimizer: Any = _UNCHANGED, loss: Any = _UNCHANGED,
                metrics: Any = _UNCHANGED, loss_weights: Any = _UNCHANGED,
                weighted_metrics: Any = _UNCHANGED) -> None:
        """Changes the optimizer, loss or metrics between calls (Keras' ``compile``).

        The params, model state, step and rng are kept. A new optimizer (another
        object than the current one) starts from a fresh optimizer state; the
        same optimizer keeps its state. The train and eval steps are rebuilt at
        the next ``fit`` / ``evaluate``. Arguments left out keep their current
        values (unlike Keras, where they reset to the defaults); pass ``None``
        to remove one. Assigning ``trainer.optimizer``, ``trainer.loss``,
        ``trainer.metrics``, ``trainer.loss_weights`` or
        ``trainer.weighted_metrics`` calls this.

        Args:
          optimizer: an ``optax.GradientTransformation``.
          loss: as ``Trainer(loss=...)``.
          metrics: as ``Trainer(metrics=...)``.
          loss_weights: as ``Trainer(loss_weights=...)``.
          weighted_metrics: as ``Trainer(weighted_metrics=...)``.

        Raises:
          TypeError, ValueError: a bad optimizer, unknown loss or metric names;
            nothing is changed.
          RuntimeError: called while ``fit`` runs (from a callback).

        Example:
          >>> import jax.numpy as jnp, optax, jaxfit
          >>> trainer = jaxfit.Trainer(lambda p, x: x @ p["w"], {"w": jnp.zeros((3, 1))},
          ...                          optimizer=optax.sgd(0.1), loss="mse")
          >>> trainer.compile(optimizer=optax.adam(1e-3), metrics=["mae"])
          >>> trainer.loss, trainer.metrics
          ('mse', ['mae'])
        """
        if self._running:
            raise RuntimeError("compile: the trainer is running a fit; change the "
                               "optimizer, loss or metrics between calls.")
        pick = lambda new, old: old if new is _UNCHANGED else new  # noqa: E731
        optimizer = pick(optimizer, self._optimizer)
        loss, metrics = pick(loss, self._loss), pick(metrics, self._metrics)
        weighted_metrics = pick(weighted_metrics, self._weighted_metrics)
        _check_optimizer(optimizer)
        _check_names(loss, metrics, weighted_metrics)
        if optimizer is not self._optimizer:
            state = self._state.replace(opt_state=None if optimizer is None else strong(
                optimizer.init(self._state.params)))
            self._optimizer = optimizer
            self._place_state(state)
        self._loss, self._metrics = loss, metrics
        self._weighted_metrics = weighted_metrics
        self._loss_weights = pick(loss_weights, self._loss_weights)
        self._compiled.clear()  # rebuilt, with the new objective, when next used

    @property
    def optimizer(self) -> optax.GradientTransformation | None:
        """The optax optimizer; assigning one calls ``compile(optimizer=...)``."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: optax.GradientTransformation | None) -> None:
        self.compile(optimizer=value)

    @property
    def loss(self) -> Any:
        """The loss; assigning one calls ``compile(loss=...)``."""
        return self._loss

    @loss.setter
    def loss(self, value: Any) -> None:
        self.compile(loss=value)

    @property
    def metrics(self) -> Any:
        """The metrics; assigning calls ``compile(metrics=...)``."""
        return self._metrics

    @metrics.setter
    def metrics(self, value: Any) -> None:
        self.compile(metrics=value)

    @property
    def loss_weights(self) -> Any:
        """The per-output loss weights; assigning calls ``compile(loss_weights=...)``."""
        return self._loss_weights

    @loss_weights.setter
    def loss_weights(self, value: Any) -> None:
        self.compile(loss_weights=value)

    @property
    def weighted_metrics(self) -> Any:
        """The weighted metrics; assigning calls ``compile(weighted_metrics=...)``."""
        return self._weighted_metrics

    @weighted_metrics.setter
    def weighted_metrics(self, value: Any) -> None:
        self.compile(weighted_metrics=value)

    def _require(self, call: str, optimizer: bool) -> None:
        """Fails before anything runs when ``call`` needs what was not given."""
        missing = [name for name, value in (("optimizer", self._optimizer if optimizer
                                             else True), ("loss", self._loss))
                   if value is None]
        if missing:
            raise ValueError(
                f"{call}: this trainer has no {' and no '.join(missing)} (it was built "
                "for inference, e.g. by Trainer.load without them). Pass them with "
                "trainer.compile(" + ", ".join(f"{m}=..." for m in missing) + ") or "
                "to Trainer(...).")

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> TrainState:
        """The current ``TrainState``; readable and replaceable between calls."""
        return self._state

    @state.setter
    def state(self, value: TrainState) -> None:
        if not isinstance(value, TrainState):
            raise TypeError(errors.expected("state", "a jaxfit.TrainState", value))
        if value.loss_scale is None and self.policy.loss_scaling:
            value = value.replace(loss_scale=precision_lib.initial_loss_scale(self.policy))
        value = strong(value)
        if jax.tree.structure(value) != jax.tree.structure(self._state):
            self._place_state(value)
        else:
            self._state = self._placement.place(value, self._shardings)

    @property
    def params(self) -> Any:
        """Shortcut for ``trainer.state.params``; assignable."""
        return self._state.params

    @params.setter
    def params(self, value: Any) -> None:
        value = precision_lib.cast_for_storage(self.policy, strong(value))
        self._state = self._state.replace(
            params=self._placement.place(value, self._shardings.params))

    @property
    def learning_rate(self) -> float | None:
        """The optimizer's injected learning rate, or ``None`` when it has none.

        Settable between calls, without recompiling, when the optimizer was built
        with ``optax.inject_hyperparams``, e.g.
        ``optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)``.
        """
        value = hyperparams.get(self._state.opt_state)
        return None if value is None else float(placement.fetch(value))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        current = hyperparams.get(self._state.opt_state)
        if current is None:
            raise ValueError(errors.expected(
                "learning_rate", "an optimizer built with optax.inject_hyperparams, "
                "e.g. optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)",
                self.optimizer, "Its learning rate cannot be changed otherwise."))
        # placed like the current rate, so a running fit's compiled step still fits
        new = self._placement.place(np.asarray(value, dtype=current.dtype),
                                    current.sharding)
        self._state = self._state.replace(
            opt_state=hyperparams.replace(self._state.opt_state, new))

    # -- checkpoints (orbax, imported lazily: an edge) ---------------------------
    def save(self, path: str | os.PathLike[str], *, weights_only: bool = False,
             metadata: dict[str, Any] | None = None) -> str:
        """Saves a checkpoint directory at ``path`` (orbax); returns its absolute path.

        A full checkpoint holds the whole ``TrainState`` (params, optimizer state
        with its learning rate, model state, rng, step), the data-order seed, the
        run's position (epoch, batches of it already run, that epoch's running
        sums), the state of the running (or last) fit's callbacks (the History so
        far, EarlyStopping's counters...), and ``metadata.json`` with the jaxfit,
        jax, jaxlib and optax versions and your ``metadata``. It is written next to
        ``path`` and renamed into place, so a crash mid-save leaves any previous
        checkpoint at ``path`` intact. Called from a callback during ``fit``, it
        records the exact point reached, which ``BackupAndRestore`` resumes from.

        Args:
          path: the checkpoint directory; replaced if it exists.
          weights_only: keep only the params (``restore`` then replaces only the
            params). Defaults to `False`.
          metadata: JSON-serialisable data stored in ``metadata.json`` under
            ``"metadata"`` (the config of a YAML run). Defaults to `None`.

        Returns:
          The absolute checkpoint path.

        Raises:
          OSError: the checkpoint could not be written (disk full, permissions);
            any previous checkpoint at ``path`` is kept.
        """
        from jaxfit._src.checkpoint import run_state

        return run_state.save(self, path, weights_only=weights_only,
                              metadata=metadata).wait()

    def restore(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Replaces ``trainer.state`` (and the data-order seed) with a checkpoint's.

        A weights-only checkpoint replaces only the params. The run's position and
        callback states are for ``BackupAndRestore``; ``restore`` leaves them.
        Arrays are placed like the trainer's current state, so a checkpoint written
        on several devices restores onto one (and the reverse).

        Returns:
          The checkpoint's ``metadata.json`` as a dict.

        Raises:
          FileNotFoundError: no checkpoint at ``path``.
          ValueError: the checkpoint does not match this trainer (another model or
            optimizer); the message names the first differing path and both shapes,
            and ``trainer.state`` is unchanged.
        """
        from jaxfit._src.checkpoint import run_state

        if self._running:
            raise RuntimeError("restore: the trainer is running a fit; restore "
                               "between calls, or use callbacks.BackupAndRestore.")
        return run_state.restore_state(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], apply_fn: Callable[..., Any],
             **kwargs: Any) -> Trainer:
        """Builds a Trainer around a checkpoint's params, then restores it whole.

        ``Trainer.load(path, apply, optimizer=..., loss=...)``: the keyword
        arguments are those of ``Trainer`` (the optimizer must be the one the
        checkpoint was trained with, for its state to fit).
        ``Trainer.load(path, apply)`` without an optimizer loads for inference:
        the params, model state, step, rng and seed, not the optimizer state;
        ``predict`` works, and ``compile(optimizer=..., loss=...)`` makes it
        trainable (with a fresh optimizer state).

        Raises:
          FileNotFoundError, ValueError: as ``restore``.
        """
        from jaxfit._src.checkpoint import run_state

        stored, info = run_state.load_arrays(path)
        if kwargs.get("optimizer") is not None:
            trainer = cls(apply_fn, stored["params"], **kwargs)
            trainer.restore(path)
            return trainer
        # for inference: everything but the optimizer state
        if stored.get("model_state") is not None:
            kwargs.setdefault("state", stored["model_state"])
        trainer = cls(apply_fn, stored["params"], **kwargs)
        if not info.get("weights_only"):
            trainer.state = trainer.state.replace(step=stored["step"], rng=stored["rng"])
            trainer.seed = int(info["seed"])
        return trainer

    # -- compiled steps --------------------------------------------------------
    def _optimizer_for(self, accumulate_steps: int) -> optax.GradientTransformation:
        if accumulate_steps == 1:
            return self.optimizer
        return optax.MultiSteps(self.optimizer, every_k_schedule=accumulate_steps)

    def _accumulating(self, state: TrainState, accumulate_steps: int) -> TrainState:
        """``state`` with its optimizer state inside ``optax.MultiSteps``' (fresh
        accumulators) for a fit with ``accumulate_steps`` > 1."""
        if accumulate_steps == 1:
            return state
        multi = strong(self._optimizer_for(accumulate_steps).init(state.params))
        return state.replace(opt_state=multi._replace(inner_opt_state=state.opt_state))

    @staticmethod
    def _accumulated(state: TrainState) -> TrainState:
        """Back to the plain optimizer state after a fit that accumulated (a partial
        accumulation is dropped)."""
        if isinstance(state.opt_state, optax.MultiStepsState):
            return state.replace(opt_state=state.opt_state.inner_opt_state)
        return state

    def _prepare(self, x: Any, y: Any, batch_size: int, accumulate_steps: int = 1,
                 argname: str = "") -> loop.Compiled:
        """Checks ``y``'s labels, then builds (once per structure and feature
        shapes of x and y) the objective and the jitted blocks.

        Traces the model and the loss abstractly (no compile) at the user's
        ``batch_size`` (before padding to the data axis, so errors quote the
        user's shapes), so shape errors surface before anything runs, naming
        ``argname`` + ``x`` / ``y`` (``"validation_data."``, ``"dataset batch 0:
        "``). ``x`` and ``y`` are the whole arrays (or one batch): their labels
        are checked against the losses and metrics on every call.
        """
        compiled = self._build(x, y, batch_size, accumulate_steps, argname)
        checks.check_labels(compiled.objective, y, compiled.y_pred, argname + "y")
        return compiled

    def _build(self, x: Any, y: Any, batch_size: int, accumulate_steps: int,
               argname: str) -> loop.Compiled:
        x_spec = _batch_spec(x, batch_size)
        y_spec = _batch_spec(y, batch_size)
        key = (jax.tree.structure(y_spec), _features(y_spec),
               jax.tree.structure(x_spec), _features(x_spec), accumulate_steps)
        if key in self._compiled:
            return self._compiled[key]
        optimizer = self._optimizer_for(accumulate_steps)
        state = jax.eval_shape(lambda s: self._accumulating(s, accumulate_steps),
                               self._state)
        state_sh = (self._shardings if accumulate_steps == 1 else
                    self._placement.state_shardings(state, optimizer))
        compute_apply = precision_lib.make_compute_apply(self.policy, self._apply)
        try:
            forward, y_pred = jax.make_jaxpr(
                lambda s, xb: compute_apply(s.params, s.model_state, xb, train=False,
                                            rng=s.rng)[0], return_shape=True,
            )(state, x_spec)
        except (TypeError, ValueError) as error:  # shapes of x and params disagree
            raise ValueError(
                f"{argname}x: the model cannot be applied to x of "
                f"{_shapes(x_spec)} with params of {_shapes(self._state.params)}: "
                f"{_first_line(error)}. Check x's feature shape against the model "
                "(and validation_data against the training data).") from None
        objective = step_lib.make_objective(
            self.loss, self.loss_weights, self.metrics, y_spec, y_pred,
            self.weighted_metrics,
        )
        # labels first: what the losses need of y reads better than a shape error
        checks.check_labels(objective, y_spec, y_pred, argname + "y")
        try:
            parts = jax.eval_shape(objective.per_sample, y_spec, y_pred)
        except (TypeError, ValueError) as error:  # y and the outputs disagree
            raise ValueError(
                f"{argname}y: the loss cannot compare y of {_shapes(y_spec)} with the "
                f"model's output of {_shapes(y_pred)}: {_first_line(error)}. Give y "
                "the output's shape (or pick the loss that matches your labels)."
            ) from None
        for name, part in zip(objective.output_names, parts):
            if tuple(part.shape) != (batch_size,):
                raise ValueError(
                    errors.expected(
                        "loss",
                        f"a per-sample loss of shape ({batch_size},) for output "
                        f"{name!r}",
                        part,
                        "A loss callable must return one value per sample; do not "
                        "reduce over the batch.",
                    )
                )
        train_step = step_lib.make_train_step(self._apply, objective, optimizer,
                                              policy=self.policy)
        # The train step itself is traced once, by jit, on its first call (before
        # any step runs); tracing it here too would double the model's tracing.
        # XLA:CPU runs convolutions inside a loop (lax.scan) an order of magnitude
        # slower than outside one, and conv nets are compute-bound anyway: on CPU
        # they run one step per compiled call (measured: benchmarks/RESULTS.md).
        fuse = not (jax.default_backend() == "cpu" and _uses(forward, _CONV))
        eval_step = step_lib.make_eval_step(self._apply, objective, policy=self.policy)
        # Shardings are part of the compiled step: state as placed, batches split
        # along the data axis, totals and logs replicated.
        rep, data = self._placement.replicated, self._placement.batch_sharding(2)
        train_block = jax.jit(step_lib.make_block(train_step),
                              in_shardings=(state_sh, rep, data),
                              out_shardings=(state_sh, rep, rep), donate_argnums=(0, 1))
        eval_block_fn = step_lib.make_block(eval_step)
        eval_block = jax.jit(
            lambda s, totals, b: eval_block_fn(s, totals, b)[1:],
            in_shardings=(state_sh, rep, data), out_shardings=(rep, rep),
            donate_argnums=(1,))
        names = objective.log_names
        compiled = loop.Compiled(names, train_block, eval_block,
                                 jax.jit(lambda: step_lib.empty_logs(names),
                                         out_shardings=rep), state_sh, accumulate_steps,
                                 fuse, objective, y_pred)
        self._compiled[key] = compiled
        return compiled

    # -- data ------------------------------------------------------------------
    @staticmethod
    def _dataset(x, y, sample_weight, argprefix=""):
        x = arrays.to_numpy(x, argprefix + "x")
        y = arrays.to_numpy(y, argprefix + "y")
        sample_weight = arrays.to_numpy(sample_weight, argprefix + "sample_weight")
        n = arrays.num_samples({argprefix + "x": x, argprefix + "y": y,
                                argprefix + "sample_weight": sample_weight})
        num_outputs = len(jax.tree.leaves(y))
        if sample_weight is None:
            weights = [np.ones(n, np.float32)] * num_outputs
        elif len(jax.tree.leaves(sample_weight)) == 1:  # one vector for every output
            weights = [_weight_vector(sample_weight, n, argprefix)] * num_outputs
        else:
            if jax.tree.structure(sample_weight) != jax.tree.structure(y):
                raise ValueError(errors.expected(
                    argprefix + "sample_weight",
                    "one array of shape (n,), or one per output structured like y",
                    sample_weight))
            weights = [_weight_vector(w, n, argprefix) for w in jax.tree.leaves(sample_weight)]
        return {"x": x, "y": y, "sample_weight": tuple(weights)}, n

    # -- fit ---------------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int = 32,
        epochs: int = 1,
        verbose: Literal["auto", 0, 1, 2] = "auto",
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
        (tfjs semantics, not Keras' running means) at the next yield point; see
        ``yield_every`` in DESIGN.md. ``now`` injects the clock used by the yield
        policy (tests). Validation runs the ``on_test_*`` hooks, as Keras.
        ``accumulate_steps=k`` accumulates the gradients of ``k`` batches and applies
        their mean once (``optax.MultiSteps``): the effective batch is ``k`` times
        larger at the same memory (an accumulation left partial when ``fit`` ends
        is dropped).

        Returns:
          The ``History`` callback of this run (also ``trainer.history``).

        Raises:
          ValueError, TypeError: bad arguments, raised before any step runs.
          RuntimeError: when called from inside a running ``fit``.
        """
        run = self._fit_run(locals())
        for _ in run:
            pass
        return self.history  # type: ignore[return-value]

    async def fit_async(self, x: Any, y: Any, **kwargs: Any) -> History:
        """``fit`` that awaits the event loop at every yield point (notebooks).

        Takes the same arguments as ``fit``; other coroutines run while it trains.
        """
        bound = _FIT_SIGNATURE.bind(self, x, y, **kwargs)
        bound.apply_defaults()
        for _ in self._fit_run(dict(bound.arguments)):
            await asyncio.sleep(0)
        return self.history  # type: ignore[return-value]

    def _fit_run(self, args: dict[str, Any]) -> Iterator[None]:
        """Validates every argument, prepares data and steps, then returns the loop."""
        if self._running:
            raise RuntimeError("fit: the trainer is already running a fit; it is not re-entrant.")
        self._require("fit", optimizer=True)
        validate.positive_int("batch_size", args["batch_size"])
        validate.epochs(args["epochs"], args["initial_epoch"])
        validate.verbose(args["verbose"])
        validate.validation_split(args["validation_split"])
        validate.validation_data(args["validation_data"])
        validate.class_weight(args["class_weight"])
        validate.positive_int("steps_per_epoch", args["steps_per_epoch"], allow_none=True)
        validate.positive_int("validation_steps", args["validation_steps"], allow_none=True)
        validate.positive_int("validation_batch_size", args["validation_batch_size"],
                              allow_none=True)
        validate.validation_freq(args["validation_freq"])
        validate.positive_int("accumulate_steps", args["accumulate_steps"])
        accumulate = int(args["accumulate_steps"])
        policy = yield_policy.parse(args["yield_every"], args.get("now"))
        user_callbacks = callback_lib.normalize(args["callbacks"])
        # class_weight weights training batches only (Keras 3, tfjs): it is applied
        # after the validation split; a sample_weight is split with the data.
        data, n = self._dataset(args["x"], args["y"], args["sample_weight"])
        if args["class_weight"] is not None:  # the whole y, before any split
            checks.check_class_weight(args["class_weight"], data["y"])
        validation = None
        if args["validation_data"] is not None:
            vx, vy, *vw = args["validation_data"]
            val_data, val_n = self._dataset(vx, vy, vw[0] if vw else None,
                                            "validation_data.")
        elif args["validation_split"] > 0:
            train, val_data = arrays.split_last(data, n, args["validation_split"])
            data = train
            val_n = int(val_data["sample_weight"][0].shape[0])
            n = n - val_n
            if n == 0 or val_n == 0:
                raise ValueError(errors.expected(
                    "validation_split", "a fraction leaving samples on both sides",
                    args["validation_split"]))
        if n == 0:
            raise ValueError(errors.expected("x", "at least one sample", args["x"]))
        if args["class_weight"] is not None:
            per_class = arrays.class_weights(data["y"], args["class_weight"])
            data = {**data, "sample_weight": tuple(
                w * per_class for w in data["sample_weight"])}
        batches = arrays.Batches(n, args["batch_size"], shuffle=bool(args["shuffle"]),
                                 seed=self.seed, steps_per_epoch=args["steps_per_epoch"],
                                 pad_to=self._placement.padded)
        compiled = self._prepare(data["x"], data["y"], batches.batch_size, accumulate)
        if args["validation_data"] is not None or args["validation_split"] > 0:
            val_batch = args["validation_batch_size"] or args["batch_size"]
            validation = self._array_eval_plan(
                val_data, val_n, val_batch, args["validation_steps"], accumulate,
                "validation_data." if args["validation_data"] is not None else "")
        batch_bytes = batches.padded_size * sum(
            leaf.dtype.itemsize * int(np.prod(leaf.shape[1:]))
            for leaf in jax.tree.leaves(data))
        size = 1 if policy.per_batch or not compiled.fuse else arrays.block_size(
            batches.steps_per_epoch,
            max(1, min(loop.MAX_BLOCK, loop.BLOCK_BYTES // max(batch_bytes, 1))))

        def epoch_blocks(epoch: int, start: int):
            batches.seed = self.seed  # a restored checkpoint may bring its own
            index, mask = batches.epoch_indices(epoch)
            return self._blocks(data, index[start:], mask[start:], size)

        plan = loop.FitPlan(epoch_blocks, args["epochs"], args["initial_epoch"], policy,
                            validation, args["validation_freq"], compiled, prime=True)
        return self._launch(plan, user_callbacks, args["verbose"], batches.steps_per_epoch,
                            batches.batch_size)

    def _blocks(self, data: dict[str, Any], index: np.ndarray, mask: np.ndarray,
                size: int) -> Any:
        """This process's rows of each block, gathered on the host and put on the
        mesh ahead of use."""
        width = index.shape[1]
        rows = self._placement.local_rows(width)
        host = arrays.blocks(data, index[:, rows], mask[:, rows], size)
        return arrays.prefetch(host, lambda b: self._placement.put_block(b, width))

    def _put_streamed(self, block: Any) -> Any:
        """A streamed block (this process's batch) onto the mesh."""
        return self._placement.put_block(
            block, int(block["mask"].shape[1]) * jax.process_count())

    def _launch(self, plan: loop.FitPlan, user_callbacks: list[Any], verbose: Any,
                steps: int | None, batch_size: int | None) -> Iterator[None]:
        """Installs History (and the epoch logger), then returns the guarded loop."""
        # only process 0 prints
        verbose = progress.resolve_verbose(verbose) if jax.process_index() == 0 else 0
        history = History()
        installed = [history] + user_callbacks
        if verbose:
            installed.append(progress.ProgressBar(verbose))
        params = {"verbose": verbose, "epochs": plan.epochs, "steps": steps,
                  "batch_size": batch_size, "do_validation": plan.validation is not None}
        callbacks = callback_lib.CallbackList(installed, self, params)
        self.history = history
        self._callbacks = callbacks.callbacks
        return self._guarded(loop.fit_loop(self, plan, callbacks), plan)

    def _guarded(self, run: Iterator[None], plan: loop.FitPlan) -> Iterator[None]:
        self._running = True
        self.stop_training = False
        try:
            # A copy (the arrays the user holds are never donated), on the mesh.
            compiled = plan.compiled
            self._state = self._placement.place(
                self._accumulating(self._state, compiled.accumulate_steps),
                compiled.state_shardings)
            yield from run
        finally:
            self._running = False
            self._state = self._accumulated(self._state)
            plan.cleanup()  # also when the loop never started

    # -- fit_dataset ---------------------------------------------------------------
    def fit_dataset(
        self,
        dataset: Any,
        *,
        epochs: int = 1,
        verbose: Literal["auto", 0, 1, 2] = "auto",
        callbacks: Any = None,
        validation_data: Any = None,
        validation_batches: int | None = None,
        class_weight: dict[int, float] | None = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        yield_every: YieldEvery = "auto",
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
        background thread keeps two batches on the device ahead of use.

        Args:
          validation_data: a ``tuple`` ``(x, y[, sample_weight])`` of arrays
            (batched like the first training batch), or any dataset as above.
            Defaults to `None`.
          validation_batches: at most this many validation batches per
            evaluation. Defaults to `None` (all).
          Other arguments are as in ``fit``.

        Returns:
          The ``History`` of this run.

        Raises:
          ValueError, TypeError: bad arguments or a malformed first batch, before
            any step; a later malformed batch names its index.
        """
        for _ in self._fit_dataset_run(locals()):
            pass
        return self.history  # type: ignore[return-value]

    async def fit_dataset_async(self, dataset: Any, **kwargs: Any) -> History:
        """``fit_dataset`` that awaits the event loop at every yield point."""
        bound = _FIT_DATASET_SIGNATURE.bind(self, dataset, **kwargs)
        bound.apply_defaults()
        for _ in self._fit_dataset_run(dict(bound.arguments)):
            await asyncio.sleep(0)
        return self.history  # type: ignore[return-value]

    def _fit_dataset_run(self, args: dict[str, Any]) -> Iterator[None]:
        if self._running:
            raise RuntimeError("fit_dataset: the trainer is already running a fit; it is "
                               "not re-entrant.")
        self._require("fit_dataset", optimizer=True)
        validate.epochs(args["epochs"], args["initial_epoch"])
        validate.verbose(args["verbose"])
        validate.class_weight(args["class_weight"])
        validate.positive_int("steps_per_epoch", args["steps_per_epoch"], allow_none=True)
        validate.positive_int("validation_batches", args["validation_batches"],
                              allow_none=True)
        policy = yield_policy.parse(args["yield_every"], args.get("now"))
        user_callbacks = callback_lib.normalize(args["callbacks"])
        stream = iterables.Stream(args["dataset"], "dataset")
        if (stream.one_shot and args["steps_per_epoch"] is None
                and args["epochs"] - args["initial_epoch"] > 1):
            raise ValueError(iterables.MSG_ONE_SHOT.format(
                argname="dataset", epoch=args["initial_epoch"] + 1))
        batcher = iterables.Batcher("dataset", args["class_weight"],
                                    self._placement.local_multiple)
        first_epoch = stream.iterator(args["initial_epoch"])
        first = next(first_epoch, _MISSING)
        if first is _MISSING:
            raise ValueError(errors.expected("dataset", "at least one batch", "no batches"))
        example, _ = batcher(first, 0)
        batch_size = int(example["mask"].shape[1])
        compiled = self._prepare(*_unblock(example), int(example["mask"].sum()),
                                 argname="dataset batch 0: ")
        batcher.check = _label_check(compiled, "dataset")
        validation = self._stream_eval_plan(args["validation_data"],
                                            args["validation_batches"], batch_size,
                                            "validation_data", compiled)
        steps, initial = args["steps_per_epoch"], args["initial_epoch"]
        pending = [itertools.chain([first], first_epoch)]  # the first epoch's iterator
        if steps is not None:  # one iterator continues across epochs
            feeds: list[Iterator[Any]] = []

            def continued(epoch: int, start: int):
                if not feeds:  # the first call; after a resume, skip what was run
                    skip = (epoch - initial) * steps + start
                    feeds.append(iter(iterables.Feeder(
                        iterables.skip(pending.pop(), skip, batcher), batcher,
                        self._put_streamed, start_index=skip)))
                return itertools.islice(feeds[0], steps - start)

            plan = loop.FitPlan(continued, args["epochs"], initial, policy, validation,
                                1, compiled, required_steps=steps,
                                cleanup=lambda: feeds and feeds[0].close())
        else:
            def epoch_blocks(epoch: int, start: int):
                source = pending.pop() if pending else stream.iterator(epoch)
                return iterables.Feeder(iterables.skip(source, start, batcher), batcher,
                                        self._put_streamed, start_index=start)

            plan = loop.FitPlan(epoch_blocks, args["epochs"], initial, policy,
                                validation, 1, compiled)
        # callbacks' params["steps"]: steps_per_epoch, else a sized dataset's length
        # (tfjs: dataset.size), so the progress bar shows a total
        return self._launch(plan, user_callbacks, args["verbose"],
                            steps if steps is not None else _length(args["dataset"]),
                            batch_size)

    def _stream_eval_plan(self, data: Any, batches: int | None, batch_size: int,
                          argname: str, compiled: loop.Compiled | None = None
                          ) -> loop.EvalPlan | None:
        """Evaluation over a tuple of arrays or a stream of batches.

        ``compiled`` is the training step's (validation shares its structure);
        without it the stream's first batch is read here to build the eval step.
        """
        if data is None:
            return None
        if isinstance(data, tuple):
            validate.validation_data(data)
            vx, vy, *vw = data
            arrays_data, n = self._dataset(vx, vy, vw[0] if vw else None,
                                           argname + ".")
            return self._array_eval_plan(arrays_data, n, batch_size, batches,
                                         argname=argname + ".")
        stream = iterables.Stream(data, argname)
        batcher = iterables.Batcher(argname, None, self._placement.local_multiple)
        pending: list[Iterator[Any]] = []
        if compiled is None:
            iterator = stream.iterator(0)
            first = next(iterator, _MISSING)
            if first is _MISSING:
                raise ValueError(errors.expected(argname, "at least one batch",
                                                 "no batches"))
            example, _ = iterables.Batcher(argname, None,
                                           self._placement.local_multiple)(first, 0)
            compiled = self._prepare(*_unblock(example), int(example["mask"].sum()),
                                     argname=f"{argname} batch 0: ")
            pending.append(itertools.chain([first], iterator))
        batcher.check = _label_check(compiled, argname)

        def blocks():
            source = pending.pop() if pending else stream.iterator(0)
            return iterables.Feeder(iterables.take(source, batches), batcher,
                                    self._put_streamed)

        return loop.EvalPlan(blocks, compiled, required_batches=batches)

    def evaluate_dataset(self, dataset: Any, *, batches: int | None = None,
                         callbacks: Any = None) -> dict[str, float]:
        """Evaluates over a stream of batches (tfjs ``evaluateDataset``).

        Args:
          dataset: any source ``fit_dataset`` accepts.
          batches: at most this many batches. Defaults to `None` (all).
          callbacks: receive the ``on_test_*`` hooks. Defaults to `None`.

        Returns:
          ``{"loss": ..., <metric>: ...}``.
        """
        self._require("evaluate_dataset", optimizer=False)
        validate.positive_int("batches", batches, allow_none=True)
        plan = self._stream_eval_plan(dataset, batches, 1, "dataset")
        assert plan is not None
        callback_list = callback_lib.CallbackList(
            callback_lib.normalize(callbacks), self, {"verbose": 0, "epochs": 1})
        return loop.evaluate_loop(self, plan, callback_list)

    # -- evaluate / predict --------------------------------------------------------
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
        """Returns ``{"loss": ..., <metric>: ...}`` over the data (Keras reductions).

        Raises:
          ValueError, TypeError: bad arguments, before anything runs.
        """
        self._require("evaluate", optimizer=False)
        validate.positive_int("batch_size", batch_size)
        validate.positive_int("steps", steps, allow_none=True)
        data, n = self._dataset(x, y, sample_weight)
        plan = self._array_eval_plan(data, n, batch_size, steps)
        callback_list = callback_lib.CallbackList(
            callback_lib.normalize(callbacks), self, {"verbose": 0, "epochs": 1})
        return loop.evaluate_loop(self, plan, callback_list)

    def _array_eval_plan(self, data: dict[str, Any], n: int, batch_size: int,
                         steps: int | None, accumulate_steps: int = 1,
                         argname: str = "") -> loop.EvalPlan:
        """Evaluation over in-memory arrays, one padded batch per call."""
        batches = arrays.Batches(n, batch_size, shuffle=False, seed=0,
                                 pad_to=self._placement.padded)
        compiled = self._prepare(data["x"], data["y"], batches.batch_size,
                                 accumulate_steps, argname)

        def blocks():
            index, mask = batches.epoch_indices(0)
            if steps is not None:
                index, mask = index[:steps], mask[:steps]
            return self._blocks(data, index, mask, 1)

        return loop.EvalPlan(blocks, compiled)

    def predict(self, x: Any, *, batch_size: int = 32, callbacks: Any = None) -> Any:
        """Returns the model's outputs (``train=False``) as numpy arrays, in order.

        Batches are padded to ``batch_size`` so one compilation serves them all.
        """
        validate.positive_int("batch_size", batch_size)
        x = arrays.to_numpy(x, "x")
        n = arrays.num_samples({"x": x})
        batches = arrays.Batches(n, batch_size, shuffle=False, seed=0,
                                 pad_to=self._placement.padded)
        x_spec = _batch_spec(x, batches.padded_size)
        try:  # traced once (jit reuses it): a shape mismatch names x, before any run
            jax.eval_shape(self._predict, self._state, x_spec,
                           jax.ShapeDtypeStruct((batches.padded_size,), jnp.float32))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"x: the model cannot be applied to x of "
                f"{_shapes(_batch_spec(x, batches.batch_size))} with params of "
                f"{_shapes(self._state.params)}: {_first_line(error)}. Check x's "
                "feature shape against the model.") from None
        callback_list = callback_lib.CallbackList(
            callback_lib.normalize(callbacks), self,
            {"verbose": 0, "epochs": 1, "steps": batches.steps_per_epoch})
        callback_list.call("on_predict_begin")
        index, mask = batches.epoch_indices(0)
        rows = self._placement.local_rows(index.shape[1])
        outputs = []
        for start in range(index.shape[0]):
            x_batch, mask_batch = self._placement.put_batch(
                (arrays.take(x, index[start][rows]), mask[start][rows]), index.shape[1])
            outputs.append(self._predict(self._state, x_batch, mask_batch))
        host = placement.gather(outputs)
        # Padding rows sit at the end of *every* batch once a batch is padded to a
        # multiple of the data axis (and at the end of the ragged last one): keep
        # the real rows by the mask, which is in sample order (no shuffle).
        real = mask.reshape(-1) > 0
        result = jax.tree.map(lambda *parts: np.concatenate(parts)[real], *host)
        callback_list.call("on_predict_end")
        return result


_FIT_SIGNATURE = inspect.signature(Trainer.fit)
_FIT_DATASET_SIGNATURE = inspect.signature(Trainer.fit_dataset)
_MISSING = object()


def _length(dataset: Any) -> int | None:
    """``len(dataset)`` when the dataset knows it (a list, a grain dataset), else
    ``None`` (a generator, an infinite or unsized stream)."""
    try:
        length = len(dataset)
    except Exception:  # noqa: BLE001 - unsized, or tf.data's infinite cardinality
        return None
    return length if isinstance(length, int) and length > 0 else None


def _weight_vector(weights: Any, n: int, argprefix: str) -> np.ndarray:
    array = np.asarray(jax.tree.leaves(weights)[0], np.float32)
    if array.size != n:
        raise ValueError(errors.expected(
            argprefix + "sample_weight", f"one weight per sample, shape ({n},)", array))
    return array.reshape(n)


def _unblock(block: dict[str, Any]) -> tuple[Any, Any]:
    """The ``x`` and ``y`` of a one-batch block, without the block axis."""
    return (jax.tree.map(lambda a: a[0], block["x"]),
            jax.tree.map(lambda a: a[0], block["y"]))


_CONV = "conv_general_dilated"


def _uses(jaxpr: Any, primitive: str) -> bool:
    """Whether ``primitive`` appears in ``jaxpr`` or any jaxpr nested in it."""
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    if _uses(sub, primitive):
                        return True
    return False


def _label_check(compiled: loop.Compiled, argname: str) -> Callable[[Any, int], None]:
    """A streamed batch's label check (run in the feeder thread)."""
    def check(y: Any, index: int) -> None:
        checks.check_labels(compiled.objective, y, compiled.y_pred,
                            f"{argname} batch {index}: y")
    return check


def _features(tree: Any) -> tuple[Any, ...]:
    """Each leaf's shape without the batch axis, and dtype (part of a cache key)."""
    return tuple((leaf.shape[1:], leaf.dtype) for leaf in jax.tree.leaves(tree))


def _shapes(tree: Any) -> str:
    """``"shape (32, 5) float32"`` for one array, ``"shapes ['a'] (32, 5) float32,
    ['b'] (32,) int32"`` for a pytree: what error messages quote."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(leaves) == 1 and not leaves[0][0]:
        leaf = leaves[0][1]
        return f"shape {tuple(leaf.shape)} {leaf.dtype}"
    return "shapes " + ", ".join(f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} "
                                 f"{leaf.dtype}" for path, leaf in leaves)


def _first_line(error: BaseException) -> str:
    """The cause, for the end of a jaxfit message: its first line, no final dot."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _batch_spec(tree: Any, batch_size: int) -> Any:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype), tree
    )


def _check_arrays(tree: Any, argname: str, trainable: bool) -> None:
    """Every leaf an array of numbers; trainable ones (params) floating point.

    Raises at construction, naming the leaf path, instead of an error from inside
    ``jax.grad`` at the first step.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = argname + jax.tree_util.keystr(path)
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            try:
                dtype = np.asarray(leaf).dtype
            except Exception:  # noqa: BLE001 - whatever numpy makes of it
                dtype = np.dtype(object)
        if dtype.kind in "OUSV" and not jnp.issubdtype(dtype, jnp.inexact) and not (
                jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)):
            raise TypeError(errors.expected(
                where, "an array of numbers", leaf,
                "Keep strings and other Python objects out of the params and state "
                "(close over them in apply_fn)."))
        if trainable and not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(errors.expected(
                where, "a floating-point array (params are what the optimizer "
                "trains)", leaf,
                "Make it a float array (e.g. jnp.float32), or pass non-trainable "
                "values (counters, integer tables) as Trainer(..., state=...) to an "
                "apply_fn that declares `state`."))


def _check_optimizer(optimizer: Any) -> None:
    if optimizer is not None and not (hasattr(optimizer, "init")
                                      and hasattr(optimizer, "update")):
        raise TypeError(errors.expected(
            "optimizer", "an optax.GradientTransformation, e.g. optax.adam(1e-3)",
            optimizer))


def _check_names(loss: Any, metrics: Any, weighted_metrics: Any) -> None:
    """Unknown loss or metric names fail at construction, before any data is seen."""
    def leaves(tree):
        return jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, str) or callable(v))

    for leaf in leaves(loss):
        losses.get(leaf, argname="loss")
    probe = jax.ShapeDtypeStruct((1, 2), jnp.float32)
    for argname, spec in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
        for leaf in leaves(spec):
            metrics_lib.resolve(leaf, probe, probe, argname=argname)

