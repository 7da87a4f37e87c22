"""``MemberView``: one member of a running population, as a plain trainer.

The callbacks that act per member (EarlyStopping, ReduceLROnPlateau,
ModelCheckpoint...) are copied per member and each sees its member through a
view: ``state``, ``params`` and ``learning_rate`` read and write that member's
slice of the population's state, ``stop_training`` stops that member only,
``seed`` is its own (``seed + i``), and ``session`` has what checkpoints read
(the fit's position, that member's callbacks). What the callback does is then
exactly what it would do to a plain trainer of that member.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxfit._src.core import hyperparams
from jaxfit._src.driver.population.members import member


@jax.jit
def _set_lane(full: Any, part: Any, i: Any) -> Any:
    return jax.tree.map(lambda a, b: a.at[i].set(b.astype(a.dtype)), full, part)


def set_member(full: Any, part: Any, i: int) -> Any:
    """``full`` (stacked) with member ``i``'s slice replaced by ``part``, each
    leaf placed as it was."""
    shardings = jax.tree.map(lambda a: a.sharding, full)
    new = _set_lane(full, part, jnp.asarray(i, jnp.int32))
    return jax.tree.map(lambda a, s: jax.device_put(a, s), new, shardings)


def _put(value: float, current: Any) -> Any:
    return jnp.asarray(value, dtype=current.dtype)


class MemberSession:
    """What checkpoints and callbacks read of a fit's session, for one member."""

    def __init__(self, view: MemberView):
        self._view = view
        self.callbacks: list[Any] = []  # the member's callbacks (set by Members)

    @property
    def _session(self) -> Any:
        return self._view.owner.session

    @property
    def state(self) -> Any:
        return self._view.state

    @property
    def position(self) -> Any:
        return self._session.position

    @property
    def finished(self) -> bool:
        return self._session.finished

    @property
    def running(self) -> bool:
        return self._session.running

    @property
    def stopping(self) -> bool:
        return self.running and self._view.stop_training

    @property
    def placement(self) -> Any:
        return self._session.placement

    @property
    def seed(self) -> int:
        return self._view.seed


class MemberView:
    """Member ``i`` of ``population`` (a ``PopulationTrainer``), as a trainer."""

    def __init__(self, population: Any, i: int):
        self.owner, self.member = population, i
        self.session = MemberSession(self)

    @property
    def state(self) -> Any:
        return member(self.owner.session.state, self.member)

    @state.setter
    def state(self, value: Any) -> None:
        session = self.owner.session
        session.state = set_member(session.state, value, self.member)

    @property
    def params(self) -> Any:
        return self.state.params

    @params.setter
    def params(self, value: Any) -> None:
        self.state = self.state.replace(params=value)

    @property
    def seed(self) -> int:
        return self.owner.member_seed(self.member)

    @property
    def stop_training(self) -> bool:
        return self.owner.member_stopping(self.member)

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        if value:
            self.owner.stop_member(self.member)

    @property
    def learning_rate(self) -> float | None:
        value = hyperparams.get(self.state.opt_state)
        return None if value is None else float(value)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.owner.require_rate("learning_rate")
        state = self.state
        self.state = state.replace(
            opt_state=hyperparams.set_rate(state.opt_state, float(value), _put)
        )

    def _reduce_learning_rate(self, value: float) -> None:
        current = self.owner.require_rate("learning_rate")
        del current  # the population's check; the member's own rate is read below
        state = self.state
        mine = hyperparams.get(state.opt_state)
        assert mine is not None  # require_rate checked it
        self.state = state.replace(
            opt_state=hyperparams.reduce(
                state.opt_state, float(value), float(mine), _put
            )
        )

    def __getattr__(self, name: str) -> Any:
        if name in _SHARED:  # the population's: the same for every member
            return getattr(self.owner, name)
        raise AttributeError(
            f"a population member's callback has no trainer.{name} (it sees one "
            f"member, {self.member}, through state, params, learning_rate, "
            f"stop_training, seed and {', '.join(sorted(_SHARED))}); use "
            "trainer.member(i) after fit for a whole trainer."
        )


_SHARED = frozenset(
    {
        "optimizer",
        "loss",
        "metrics",
        "weighted_metrics",
        "policy",
        "compile_spec",
        "population",
    }
)
