"""The base of ``Trainer``: its state (held by the session) and its compiled face
(the spec: optimizer, loss, metrics; the state's shardings; ``compile``).

It owns these attributes (``session``, ``_spec``, ``_compiler``, ``_shardings``,
``_predict``); ``Trainer`` adds the training and evaluation calls.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import hyperparams, inference_steps, placement
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.core.state import TrainState, strong
from jaxfit._src.driver import compiler, validate
from jaxfit._src.driver.session import FitSession

_UNCHANGED: Any = object()  # compile(): an argument left out keeps its value


def _compiled(name: str, what: str) -> property:
    """A ``compile`` argument as a property: read from the spec; assigning it
    calls ``compile(<name>=value)``."""

    def set_value(self: Any, value: Any) -> None:
        self.compile(**{name: value})

    return property(
        lambda self: getattr(self._spec, name),
        errors.filter_traceback(set_value),
        doc=f"{what}; assigning calls ``compile({name}=...)``.",
    )


class TrainerBase:
    """The state, ``compile`` and what the compiled steps are built from."""

    session: FitSession
    policy: precision_lib.Policy
    _spec: compiler.Spec
    _compiler: compiler.Compiler

    @property
    def compile_spec(self) -> compiler.Spec:
        """What the compiled steps are built from (apply, policy, placement,
        optimizer, loss, metrics): a new value at each ``compile``."""
        return self._spec

    @property
    def state(self) -> TrainState:
        """The current ``TrainState``; readable and replaceable between calls."""
        return self.session.state

    @state.setter
    @errors.filter_traceback
    def state(self, value: TrainState) -> None:
        if not isinstance(value, TrainState):
            raise TypeError(errors.expected("state", "a jaxfit.TrainState", value))
        if value.loss_scale is None and self.policy.loss_scaling:
            value = value.replace(
                loss_scale=precision_lib.initial_loss_scale(self.policy)
            )
        value = strong(value)
        new_def: Any = jax.tree.structure(value)  # PyTreeDef: no stubs
        if new_def != jax.tree.structure(self.state):
            self._place_state(value)
        else:
            self.session.state = self._spec.placement.place(value, self._shardings)

    @property
    def params(self) -> Any:
        """Shortcut for ``trainer.state.params``; assignable."""
        return self.state.params

    @params.setter
    def params(self, value: Any) -> None:
        self.state = self.state.replace(  # placed, and checked, as a state is
            params=precision_lib.cast_for_storage(self.policy, strong(value))
        )

    @property
    def seed(self) -> int:
        """The seed of dropout keys and the shuffling order (a restored checkpoint
        brings its own)."""
        return self.session.seed

    @seed.setter
    @errors.filter_traceback
    def seed(self, value: int) -> None:
        self.session.seed = int(value)

    @property
    def stop_training(self) -> bool:
        """Set it from a callback to end ``fit`` at the next yield point."""
        return self.session.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.session.stop_training = bool(value)

    @property
    def learning_rate(self) -> float | None:
        """The optimizer's injected learning rate, or ``None`` when it has none.

        Settable between calls and from callbacks, without recompiling, when the
        optimizer was built with ``optax.inject_hyperparams``, e.g.
        ``optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)``. With a
        scheduled rate (``learning_rate=optax.exponential_decay(...)``) it reads
        the rate the last update applied, and assigning ``v`` takes over from the
        schedule: the rate is ``v`` from then on (the schedule no longer acts;
        see ``jaxfit.callbacks.ReduceLROnPlateau`` for scaling it instead).
        """
        value = hyperparams.get(self.state.opt_state)
        return None if value is None else float(placement.fetch(value))

    @learning_rate.setter
    @errors.filter_traceback
    def learning_rate(self, value: float) -> None:
        self._require_learning_rate("learning_rate")
        self._set_opt_state(
            hyperparams.set_rate(self.state.opt_state, float(value), self._put_like)
        )

    def _require_learning_rate(self, name: str) -> float:
        """The current rate; a clear error when it cannot be controlled."""
        current = self.learning_rate
        if current is None:
            raise ValueError(
                errors.expected(
                    name,
                    "an optimizer built with optax.inject_hyperparams, e.g. "
                    "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3) "
                    "or (learning_rate=optax.exponential_decay(1e-3, 100, 0.9))",
                    self.optimizer,
                    "Its learning rate cannot be changed otherwise.",
                )
            )
        return current

    def _reduce_learning_rate(self, value: float) -> None:
        """Lowers the rate to ``value`` (``ReduceLROnPlateau``): a followed
        schedule is scaled by ``value / current``; otherwise as the setter."""
        current = self._require_learning_rate("learning_rate")
        self._set_opt_state(
            hyperparams.reduce(
                self.state.opt_state, float(value), current, self._put_like
            )
        )

    def _put_like(self, value: float, current: Any) -> Any:
        # placed like the current array, so a running fit's compiled step still fits
        return self._spec.placement.place(
            np.asarray(value, dtype=current.dtype), current.sharding
        )

    def _set_opt_state(self, opt_state: Any) -> None:
        self.session.state = self.state.replace(opt_state=opt_state)

    def _place_state(self, state: TrainState) -> None:
        """Places a state of a (possibly) new structure: shardings, then the
        predict step built for them (the train and eval steps are per fit)."""
        where = self._spec.placement
        # a scheduled rate runs under hyperparams.control (scale, rate: state)
        state = state.replace(opt_state=hyperparams.wrap_state(state.opt_state))
        optimizer = hyperparams.matching(self._spec.optimizer, state.opt_state)
        self._shardings = where.state_shardings(state, optimizer)
        self.session.state = where.place(state, self._shardings)
        self._predict = jax.jit(  # (state, x, mask) -> (y_pred, advanced rng)
            inference_steps.make_keyed_predict_step(
                self._spec.apply, self._spec.policy
            ),
            in_shardings=(
                self._shardings,
                where.batch_sharding(1),
                where.batch_sharding(1),
            ),
            out_shardings=(where.batch_sharding(1), where.replicated),
        )

    # -- compile: the optimizer, loss and metrics ---------------------------------
    @errors.filter_traceback
    def compile(
        self,
        optimizer: Any = _UNCHANGED,
        loss: Any = _UNCHANGED,
        metrics: Any = _UNCHANGED,
        loss_weights: Any = _UNCHANGED,
        weighted_metrics: Any = _UNCHANGED,
    ) -> None:
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
        if self.session.running:
            raise RuntimeError(
                "compile: the trainer is running a fit; change the "
                "optimizer, loss or metrics between calls."
            )
        old = self._spec
        pick = lambda new, current: current if new is _UNCHANGED else new  # noqa: E731
        spec = compiler.Spec(
            old.apply,
            old.policy,
            old.placement,
            pick(optimizer, old.optimizer),
            pick(loss, old.loss),
            pick(metrics, old.metrics),
            pick(weighted_metrics, old.weighted_metrics),
            pick(loss_weights, old.loss_weights),
        )
        validate.optimizer(spec.optimizer)
        validate.names(spec.loss, spec.metrics, spec.weighted_metrics)
        self._spec = spec
        self._compiler.clear()  # rebuilt, with the new objective, when next used
        if spec.optimizer is not old.optimizer:
            self._place_state(
                self.state.replace(
                    opt_state=None
                    if spec.optimizer is None
                    else strong(spec.optimizer.init(self.state.params))
                )
            )

    optimizer = _compiled("optimizer", "The optax optimizer")
    loss = _compiled("loss", "The loss")
    metrics = _compiled("metrics", "The metrics")
    loss_weights = _compiled("loss_weights", "The per-output loss weights")
    weighted_metrics = _compiled("weighted_metrics", "The weighted metrics")

    def _require(self, call: str, optimizer: bool) -> None:
        """Fails before anything runs when ``call`` needs what was not given."""
        missing = [
            name
            for name, value in (
                ("optimizer", self.optimizer if optimizer else True),
                ("loss", self.loss),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"{call}: this trainer has no {' and no '.join(missing)} (it was built "
                "for inference, e.g. by Trainer.load without them). Pass them with "
                "trainer.compile(" + ", ".join(f"{m}=..." for m in missing) + ") or "
                "to Trainer(...)."
            )

    def _prepare(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        accumulate_steps: int = 1,
        argname: str = "",
    ) -> compiler.Compiled:
        return self._compiler.prepare(
            self._spec,
            self.state,
            self._shardings,
            x,
            y,
            batch_size,
            accumulate_steps,
            argname,
        )
