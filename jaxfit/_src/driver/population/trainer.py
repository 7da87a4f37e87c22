"""``PopulationTrainer``: what ``Trainer(..., population=N)`` builds.

It is a ``Trainer`` whose state has a leading member axis, whose compiler builds
member-vmapped blocks (``blocks``), whose placement splits members across
devices when it can (``placement``) and whose fits install per-member callbacks
(``callbacks``). The loop, the data sources for validation and streams, the
yield policy, checkpoints and ``BackupAndRestore`` are a single model's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import hyperparams as hyperparams_lib
from jaxfit._src.core import inference_steps, placement
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import compiler, progress, validate
from jaxfit._src.driver import trainer as trainer_lib
from jaxfit._src.driver.population import blocks, members
from jaxfit._src.driver.population.callbacks import (
    DONE,
    FINISHING,
    RUNNING,
    Members,
    PopulationCallbackList,
    check_templates,
)
from jaxfit._src.driver.population.history import PopulationHistory
from jaxfit._src.driver.population.placement import PopulationPlacement
from jaxfit._src.driver.session import FitSession
from jaxfit._src.driver.trainer_base import _UNCHANGED


def _refuse(argname: str, value: Any, what: str) -> None:
    raise ValueError(
        errors.expected(argname, what, value, "It is not supported for a population.")
    )


def _check_args(
    param_sharding: Any, population: Any, values: dict, loss_weights: Any, seed: Any
) -> None:
    if param_sharding is not None:
        _refuse("param_sharding", param_sharding, "None with population")
    if jax.process_count() > 1:
        _refuse("population", population, "a single-process run")
    if members.LOSS_WEIGHTS in values and loss_weights is not None:
        _refuse("loss_weights", loss_weights, "None when hyperparams has them")
    errors.seed("seed", seed)


def _build_states(
    apply_fn: Any,
    params: Any,
    state: Any,
    optimizer: Any,
    policy: Any,
    seed: int,
    n: int,
    values: dict,
) -> tuple[Any, Any]:
    """``(apply, stacked state)``: each member's as its plain trainer's."""

    def make(member_seed: int) -> tuple[Any, Any]:
        fn, p, s = members.member_model(apply_fn, params, state, member_seed)
        apply, p, s = trainer_lib.initial_model(fn, p, s, member_seed)
        return apply, trainer_lib.initial_state(p, s, optimizer, policy, member_seed)

    def check(first: Any) -> None:
        names = list(values)
        shared = (members.LOSS_WEIGHTS, members.SEED)
        if optimizer is None and any(k not in shared for k in names):
            _refuse("hyperparams", values, "an optimizer to set them on")
        members.check_names(names, first.opt_state, optimizer)

    return members.build_states(make, seed, n, values, check)


class PopulationTrainer(trainer_lib.Trainer):
    """``Trainer(..., population=N, hyperparams=...)``: N members in one program.

    Member ``i`` trains exactly as ``Trainer(..., seed=seed + i)`` with its
    ``hyperparams`` values would (``seed=hyperparams["seed"][i]`` when given:
    ``member_seed(i)``). ``trainer.state`` (and ``params``) hold a
    leading member axis; ``evaluate`` returns one value per member per key and
    ``predict`` outputs with a leading member axis; ``fit`` returns a
    ``PopulationHistory`` (``history.members[i]``). See the Populations guide.

    Attributes:
      population: the number of members.
      status: each member's ``"running"``, ``"finishing"`` (stopped inside an
        epoch: it ends that epoch) or ``"done"`` during and after a fit.
    """

    population: int

    def __init__(
        self,
        apply_fn: Any,
        params: Any = None,
        *,
        population: Any = None,
        hyperparams: Any = None,
        optimizer: Any = None,
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
        n = members.check_population(population)
        values = members.check_hyperparams(hyperparams, n)
        _check_args(param_sharding, population, values, loss_weights, seed)
        validate.optimizer(optimizer)
        validate.names(loss, metrics, weighted_metrics)
        self.policy = precision_lib.policy(precision)
        self.population = n
        self.status = [RUNNING] * n
        self._requested: set[int] = set()
        self._active: Any = None
        self._values = values
        self._member_args = {
            "apply_fn": apply_fn,
            "params": params,
            "state": state,
            "optimizer": optimizer,
            "loss": loss,
            "metrics": metrics,
            "loss_weights": loss_weights,
            "weighted_metrics": weighted_metrics,
            "mesh": mesh,
            "data_axis": data_axis,
            "precision": precision,
        }

        apply, stacked = _build_states(
            apply_fn, params, state, optimizer, self.policy, int(seed), n, values
        )
        seeds = members.member_seeds(int(seed), n, values)
        self._member_offsets = tuple(s - int(seed) for s in seeds)
        where = PopulationPlacement(n, mesh, data_axis, self._member_offsets)
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
        pop = blocks.Population(
            n, values.get(members.LOSS_WEIGHTS), lambda: self._active
        )
        self._compiler = compiler.Compiler(blocks.builder(pop))
        self.history = None
        self.session = FitSession(stacked, where, seed=int(seed))
        self._place_state(self.session.state)
        self._update_active()

    # -- state ---------------------------------------------------------------------
    @property
    def hyperparams(self) -> dict[str, Any]:
        """``{name: one value per member}`` as given (``loss_weights`` as a list)."""
        return {
            k: (list(v) if k == members.LOSS_WEIGHTS else np.asarray(v))
            for k, v in self._values.items()
        }

    def _place_state(self, state: Any) -> None:
        where = self._spec.placement
        opt_state = state.opt_state
        if (
            opt_state is not None
            and hyperparams_lib.scheduled(opt_state)
            and not hyperparams_lib.controls(opt_state)
        ):
            state = state.replace(
                opt_state=jax.vmap(hyperparams_lib.wrap_state)(opt_state)
            )
        self._shardings = where.state_shardings(state, None)
        self.session.state = where.place(state, self._shardings)
        step = jax.vmap(
            inference_steps.make_keyed_predict_step(
                self._spec.apply, self._spec.policy
            ),
            in_axes=(0, None, None),
        )

        def predict(state: Any, x: Any, mask: Any) -> Any:
            y_pred, rng = step(state, x, mask)  # samples first, as predict gathers
            return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), y_pred), rng

        self._predict = jax.jit(
            predict,
            in_shardings=(
                self._shardings,
                where.batch_sharding(1),
                where.batch_sharding(1),
            ),
        )

    @property
    def learning_rate(self) -> Any:
        """Each member's injected learning rate (member axis first), or ``None``;
        assign one value for all or one per member."""
        value = hyperparams_lib.get(self.state.opt_state)
        return None if value is None else np.asarray(placement.fetch(value), np.float64)

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self._require_learning_rate("learning_rate")
        rates = np.broadcast_to(np.asarray(value, np.float64), (self.population,))
        self._set_opt_state(
            hyperparams_lib.set_rate(self.state.opt_state, rates, self._put_like)
        )

    def _put_like(self, value: Any, current: Any) -> Any:
        host = np.broadcast_to(np.asarray(value, dtype=current.dtype), current.shape)
        return self._spec.placement.place(np.array(host), current.sharding)

    def _reduce_learning_rate(self, value: float) -> None:
        _refuse("ReduceLROnPlateau", value, "per member (its copies act on each)")

    def require_rate(self, name: str) -> Any:
        """A member's check that the rate can be controlled (see the view)."""
        return self._require_learning_rate(name)

    def compile(
        self,
        optimizer: Any = _UNCHANGED,
        loss: Any = _UNCHANGED,
        metrics: Any = _UNCHANGED,
        loss_weights: Any = _UNCHANGED,
        weighted_metrics: Any = _UNCHANGED,
    ) -> None:
        """As ``Trainer.compile``; the optimizer of a population cannot change
        (each member's state and hyperparameters are built for it)."""
        if optimizer is not _UNCHANGED and optimizer is not self.optimizer:
            _refuse("optimizer", optimizer, "the population's optimizer")
        super().compile(
            loss=loss,
            metrics=metrics,
            loss_weights=loss_weights,
            weighted_metrics=weighted_metrics,
        )

    # -- members -------------------------------------------------------------------
    def member_stopping(self, i: int) -> bool:
        """Whether member ``i`` has stopped or been asked to stop."""
        return i in self._requested or self.status[i] != RUNNING

    def stop_member(self, i: int) -> None:
        """Asks member ``i`` to stop, as its ``stop_training = True`` would: at an
        epoch's end it is done; within an epoch its updates stop at the next
        yield point and its epoch ends with the others (a population-level
        callback's way to stop one member)."""
        self._requested.add(i)

    def apply_stops(self, at_epoch_end: bool) -> None:
        """Turns the stop requests into statuses (see ``callbacks``); every
        member stopped stops the fit."""
        for i in sorted(self._requested):
            if self.status[i] == RUNNING:
                self.status[i] = DONE if at_epoch_end else FINISHING
        self._requested.clear()
        if at_epoch_end:
            self.status = [DONE if s == FINISHING else s for s in self.status]
        self._update_active()
        if RUNNING not in self.status:
            self.session.stop_training = True

    def restore_status(self, status: list[str]) -> None:
        """Sets every member's status (``"running"``, ``"finishing"``,
        ``"done"``), as a resume does from a backup."""
        self.status = [str(s) for s in status]
        self._requested.clear()
        self._update_active()

    def _update_active(self) -> None:
        flags = np.asarray([s == RUNNING for s in self.status], np.float32)
        where: Any = self._spec.placement
        self._active = jax.device_put(flags, where.member_sharding)

    def install_callbacks(
        self, callbacks: Any, verbose: int, params: dict[str, Any]
    ) -> Any:
        """A population fit's History, per-member callbacks and the rest."""
        templates = callback_lib.normalize(callbacks)
        check_templates(templates)
        params = {**params, "population": self.population}
        self.restore_status([RUNNING] * self.population)
        per_member = [c for c in templates if hasattr(c, "for_member")]
        shared = [c for c in templates if not hasattr(c, "for_member")]
        dispatcher = Members(self, per_member, params)
        history = PopulationHistory(dispatcher.histories)
        installed = [history, dispatcher, *shared]
        if verbose:
            installed.append(progress.ProgressBar(verbose))
        return history, PopulationCallbackList(installed, self, params)

    def member_seed(self, i: int) -> int:
        """Member ``i``'s seed: ``seed + i``, or ``hyperparams["seed"][i]``
        (kept at the same offset from ``seed`` when a restore changes it)."""
        return self.seed + self._member_offsets[i]

    def member(self, i: int) -> trainer_lib.Trainer:
        """A plain ``Trainer`` holding member ``i``.

        It has that member's state (params, optimizer state with its
        hyperparameters, model state, rng, step), seed (``seed + i``), loss
        weights and, after a fit, History: predict, save or fit on with it.

        Args:
          i: the member's index, ``0 .. population - 1``.

        Returns:
          A new ``jaxfit.Trainer`` (changing it leaves the population as it is).

        Raises:
          ValueError: ``i`` is not a member's index.
        """
        if (
            isinstance(i, bool)
            or not isinstance(i, (int, np.integer))
            or not 0 <= i < self.population
        ):
            raise ValueError(
                errors.expected("i", f"a member index in 0..{self.population - 1}", i)
            )
        i, args = int(i), dict(self._member_args)
        seed = self.member_seed(i)
        fn, params, state = members.member_model(
            args.pop("apply_fn"), args.pop("params"), args.pop("state"), seed
        )
        if members.LOSS_WEIGHTS in self._values:
            args["loss_weights"] = self._values[members.LOSS_WEIGHTS][i]
        single = trainer_lib.Trainer(fn, params, state=state, seed=seed, **args)
        single.state = members.member(compiler.accumulated(self.state), i)
        history: Any = self.history
        single.history = None if history is None else history.members[i]
        return single

    def best_member(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """The member with the best ``monitor`` over its epochs.

        Each member's best is its ``History.best(monitor, mode)``; ties go to
        the lower index.

        Args:
          monitor: a log key of the last fit. Defaults to `"val_loss"`.
          mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys,
            else min). Defaults to `"auto"`.

        Returns:
          The member's index.

        Raises:
          ValueError: no fit has run, or ``monitor`` was not logged.
        """
        if self.history is None:
            raise ValueError(
                "best_member: no fit has run on this population yet (the best is "
                "read from each member's History)."
            )
        history: Any = self.history
        values = [h.best(monitor, mode)[1] for h in history.members]
        if mode == "auto":
            accuracy = monitor.removeprefix("val_").endswith(("acc", "accuracy"))
            mode = "max" if accuracy else "min"
        return int(np.argmax(values) if mode == "max" else np.argmin(values))

    # -- inference -----------------------------------------------------------------
    def predict(
        self, x: Any, *, batch_size: int | None = None, callbacks: Any = None
    ) -> Any:
        """Each member's outputs for ``x`` (``train=False``).

        As ``Trainer.predict`` on arrays, each member on its own key (that of
        its plain trainer's call).

        Args:
          x: an array or pytree of arrays with a leading sample axis.
          batch_size: samples per batch. Defaults to `None` (32).
          callbacks: must be `None` (predict hooks are not run per member).
            Defaults to `None`.

        Returns:
          A pytree like the model's output, of numpy arrays with a leading
          member axis: ``(members, samples, ...)``.

        Raises:
          ValueError, TypeError: as ``Trainer.predict``; callbacks given.
        """
        if callbacks is not None:
            _refuse("callbacks", callbacks, "None for a population's predict")
        out = super().predict(x, batch_size=batch_size)
        return jax.tree.map(lambda a: np.moveaxis(a, 1, 0), out)

    def predict_dataset(self, dataset: Any, **kwargs: Any) -> Any:
        _refuse("dataset", dataset, "arrays (population predict takes arrays)")

    def _population_refusal(self, call: str) -> None:
        raise ValueError(
            f"{call}: not supported for a population (population="
            f"{self.population}); use fit / evaluate / predict, or "
            f"trainer.member(i).{call}(...) for one member."
        )

    def train_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._population_refusal("train_on_batch")

    def test_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._population_refusal("test_on_batch")

    def predict_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._population_refusal("predict_on_batch")


trainer_lib._POPULATION.append(PopulationTrainer)
PopulationTrainer.__signature__ = trainer_lib._init_signature(PopulationTrainer)  # type: ignore[attr-defined]
