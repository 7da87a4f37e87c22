"""Finding, replacing and controlling an injected learning rate in an optax state.

``optax.inject_hyperparams(opt)(learning_rate=...)`` keeps the learning rate as an
array in the optimizer state. A constant rate is controlled by replacing that
array (same shape and dtype: no recompiling; saved and restored with the state).

A *scheduled* rate (``learning_rate=optax.exponential_decay(...)``) is recomputed
from the schedule at every update, so replacing the array does nothing. jaxfit
then runs the optimizer inside ``control``: its state, ``ControlState``, holds a
``scale`` of the schedule (``ReduceLROnPlateau``) and a ``rate`` that takes over
from it (``LearningRateScheduler``, ``trainer.learning_rate = v``), both float32
arrays of the TrainState: checkpointed, and changed without recompiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfit._src.core import placement

_STATES = tuple(
    cls
    for cls in (
        getattr(optax, "InjectHyperparamsState", None),
        getattr(optax, "InjectStatefulHyperparamsState", None),
    )
    if cls is not None
)
KEY = "learning_rate"


class ControlState(NamedTuple):
    """The state of ``control``: how the scheduled rate is changed.

    Attributes:
      scale: float32 scalar, the factor on the schedule (1.0 at first).
      rate: float32 scalar; NaN follows the (scaled) schedule, a number replaces it.
      inner_state: the user's optimizer state.
    """

    scale: Any
    rate: Any
    inner_state: Any


def _is_inject(node: Any) -> bool:
    return isinstance(node, _STATES)


def _is_node(node: Any) -> bool:
    return _is_inject(node) or isinstance(node, ControlState)


def is_injected(node: Any) -> bool:
    """Whether ``node`` is an ``inject_hyperparams`` state."""
    return _is_inject(node)


def injected(opt_state: Any) -> list[Any]:
    """Every ``inject_hyperparams`` state in ``opt_state``, in tree order."""
    return [n for n in jax.tree.leaves(opt_state, is_leaf=_is_inject) if _is_inject(n)]


def find(opt_state: Any) -> list[Any]:
    """The injected-hyperparameter states that hold a ``learning_rate``."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_inject)
    return [n for n in nodes if _is_inject(n) and KEY in n.hyperparams]


def get(opt_state: Any) -> Any | None:
    """The (first) injected learning rate array, or ``None``: under ``control``
    the rate the last update applied (or the one the next will, once changed)."""
    nodes = find(opt_state)
    return nodes[0].hyperparams[KEY] if nodes else None


def scheduled(opt_state: Any) -> bool:
    """Whether an injected learning rate is computed from a schedule."""
    return any(KEY in getattr(n, "hyperparams_states", {}) for n in find(opt_state))


def controls(opt_state: Any) -> list[ControlState]:
    """The ``ControlState`` nodes in ``opt_state`` (one, or none)."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_node)
    return [n for n in nodes if isinstance(n, ControlState)]


def replace(opt_state: Any, value: Any) -> Any:
    """A copy of ``opt_state`` with every injected learning rate set to ``value``."""

    def swap(node):
        if _is_inject(node) and KEY in node.hyperparams:
            hyperparams = dict(node.hyperparams)
            hyperparams[KEY] = value
            return node._replace(hyperparams=hyperparams)
        return node

    return jax.tree.map(swap, opt_state, is_leaf=_is_inject)


def wrap_state(opt_state: Any) -> Any:
    """``opt_state`` inside a fresh ``ControlState`` when its injected rate is
    scheduled and it has none yet; else ``opt_state`` itself."""
    if opt_state is None or controls(opt_state) or not scheduled(opt_state):
        return opt_state
    one = jnp.ones((), jnp.float32)
    return ControlState(one, jnp.full((), np.nan, jnp.float32), opt_state)


def matching(optimizer: Any, opt_state: Any) -> Any:
    """``optimizer`` inside ``control`` when ``opt_state`` is a ``ControlState``
    (the optimizer that updates that state); else ``optimizer``."""
    if optimizer is not None and isinstance(opt_state, ControlState):
        return control(optimizer)
    return optimizer


def control(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` with its scheduled learning rate scaled or replaced by state.

    Each update runs ``inner``'s, whose injected rate ``r`` the schedule gives,
    then multiplies the updates by ``target / r``, where ``target`` is ``r *
    scale`` (``rate`` NaN) or ``rate``; the target is written into the inner
    state's ``learning_rate`` so that the logged rate is the one applied. This
    assumes the updates are proportional to the rate, as for optax's optimizers
    (they end in ``scale_by_learning_rate``): the whole update is scaled,
    including any transformation chained after the injected one. Scaling is
    exact at any ``r``; a replacing ``rate`` at a step where the schedule is
    exactly 0 (a warmup's first step) applies no update (0 cannot be rescaled),
    and that step's rate is logged as 0.

    Args:
      inner: the user's optimizer, with a scheduled injected learning rate.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      ``ControlState``.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        one = jnp.ones((), jnp.float32)
        return ControlState(one, jnp.full((), np.nan, jnp.float32), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = inner.update(
            updates, state.inner_state, params, **extra_args
        )
        applied: Any = get(inner_state)  # the rate the schedule gave this update
        r = applied.astype(jnp.float32)
        follow = jnp.isnan(state.rate)
        zero = r == 0
        ratio = jnp.where(
            follow,
            state.scale,
            jnp.where(zero, 0.0, state.rate / jnp.where(zero, 1, r)),
        )
        target = jnp.where(follow, r * state.scale, jnp.where(zero, 0.0, state.rate))
        updates = jax.tree.map(lambda u: (u * ratio).astype(u.dtype), updates)
        inner_state = replace(inner_state, target.astype(applied.dtype))
        return updates, state._replace(inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


Put = Callable[[Any, Any], Any]  # (host value, current array) -> array placed like it


def set_rate(opt_state: Any, value: Any, put: Put) -> Any:
    """``opt_state`` with the learning rate ``value`` from now on: the injected
    constant replaced, or under ``control`` the schedule taken over."""
    rate = get(opt_state)
    opt_state = replace(opt_state, put(value, rate))
    return _controlled(opt_state, lambda c: c._replace(rate=put(value, c.rate)))


def reduce(opt_state: Any, value: float, current: float, put: Put) -> Any:
    """``opt_state`` with its rate lowered from ``current`` to ``value``: a
    scheduled rate that is followed has its scale multiplied by
    ``value / current`` (the schedule goes on, scaled); otherwise as
    ``set_rate``."""
    nodes = controls(opt_state)
    if not nodes or not np.isnan(placement.fetch(nodes[0].rate)):
        return set_rate(opt_state, value, put)
    factor = value / current if current else 0.0
    opt_state = replace(opt_state, put(value, get(opt_state)))
    scale = float(placement.fetch(nodes[0].scale))
    return _controlled(
        opt_state, lambda c: c._replace(scale=put(scale * factor, c.scale))
    )


def _controlled(opt_state: Any, change: Callable[[ControlState], Any]) -> Any:
    return jax.tree.map(
        lambda n: change(n) if isinstance(n, ControlState) else n,
        opt_state,
        is_leaf=_is_node,
    )
