"""A population's members: their initial states, stacked, and their
hyperparameters.

Member ``i``'s state is built exactly as ``Trainer(..., seed=seed + i)``
builds its own (``driver.trainer.initial_model`` and ``initial_state``): an
init function is called with the init key of ``seed + i``, a ``jaxfit.Model``
with an ``init`` re-initialises from it, and a plain params pytree is the start
of every member. Then its injected optimizer hyperparameters are set to its
values, and the members' states are stacked along a new leading axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src import errors
from jaxfit._src.core import hyperparams as hyperparams_lib
from jaxfit._src.core import model as model_lib
from jaxfit._src.core.state import TrainState

LOSS_WEIGHTS = "loss_weights"
SEED = "seed"  # hyperparams["seed"]: each member's own seed (default seed + i)


def check_population(population: Any) -> int:
    """``population`` as a positive int, else a one-line error."""
    if isinstance(population, bool) or not isinstance(population, (int, np.integer)):
        raise TypeError(
            errors.expected("population", "a number of members (int)", population)
        )
    if population < 1:
        raise ValueError(errors.expected("population", "at least 1 member", population))
    return int(population)


def check_hyperparams(hyperparams: Any, members: int) -> dict[str, list[Any]]:
    """``{name: one value per member}``, each a sequence of ``members`` values."""
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, dict) or not all(
        isinstance(k, str) for k in hyperparams
    ):
        raise TypeError(
            errors.expected(
                "hyperparams", "a dict {name: one value per member}", hyperparams
            )
        )
    checked = {}
    for name, values in hyperparams.items():
        seq = list(values) if isinstance(values, (list, tuple)) else None
        if (
            seq is None
            and isinstance(values, (np.ndarray, jax.Array))
            and np.ndim(values)
        ):
            seq = list(np.asarray(values))
        if seq is None or len(seq) != members:
            raise ValueError(
                errors.expected(
                    f"hyperparams[{name!r}]",
                    f"one value per member: a sequence of {members}",
                    values,
                )
            )
        checked[name] = seq
    if SEED in checked:
        for i, value in enumerate(checked[SEED]):
            errors.seed(f"hyperparams['seed'][{i}]", value)
        checked[SEED] = [int(v) for v in checked[SEED]]
    return checked


def member_seeds(seed: int, members: int, values: dict[str, list[Any]]) -> list[int]:
    """Each member's seed: ``hyperparams["seed"]`` when given, else ``seed + i``."""
    return list(values.get(SEED, [seed + i for i in range(members)]))


def member_model(
    apply_fn: Any, params: Any, state: Any, seed: int
) -> tuple[Any, Any, Any]:
    """``(apply_fn, params, state)`` of the member of ``seed``: a ``jaxfit.Model``
    with an ``init`` is ``model.reinit(seed)``; anything else is as given."""
    if isinstance(apply_fn, model_lib.Model) and apply_fn.init is not None:
        return apply_fn.reinit(seed), params, state
    return apply_fn, params, state


def injected_names(opt_state: Any) -> set[str]:
    """The hyperparameter names the optimizer injects (any ``inject_hyperparams``)."""
    return {
        name
        for node in hyperparams_lib.injected(opt_state)
        for name in node.hyperparams
    }


def check_names(names: list[str], opt_state: Any, optimizer: Any) -> None:
    """Every name is ``"loss_weights"`` or an injected, unscheduled hyperparameter."""
    injected = injected_names(opt_state)
    scheduled = {
        name
        for node in hyperparams_lib.injected(opt_state)
        for name in getattr(node, "hyperparams_states", {})
    }
    for name in names:
        if name in (LOSS_WEIGHTS, SEED):
            continue
        if name not in injected:
            hint = (
                f"The optimizer injects {sorted(injected)}."
                if injected
                else "Build the optimizer with optax.inject_hyperparams, e.g. "
                "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)."
            )
            raise ValueError(
                errors.expected(
                    "hyperparams",
                    "'loss_weights' or a hyperparameter the optimizer injects",
                    name,
                    hint,
                )
            )
        if name in scheduled:
            raise ValueError(
                errors.expected(
                    f"hyperparams[{name!r}]",
                    "a hyperparameter injected as a number, not a schedule",
                    errors.describe(optimizer),
                )
            )


def with_values(opt_state: Any, values: dict[str, Any], where: str) -> Any:
    """``opt_state`` with each injected hyperparameter in ``values`` replaced
    (same shape and dtype)."""

    def swap(node: Any) -> Any:
        if not hyperparams_lib.is_injected(node):
            return node
        changed = dict(node.hyperparams)
        for name, value in values.items():
            if name in changed:
                current = changed[name]
                array = np.asarray(value, dtype=np.asarray(current).dtype)
                if array.shape != np.shape(current):
                    raise ValueError(
                        errors.expected(
                            f"hyperparams[{name!r}]{where}",
                            f"a value of shape {np.shape(current)}",
                            value,
                        )
                    )
                changed[name] = jnp.asarray(array)
        return node._replace(hyperparams=changed)

    return jax.tree.map(swap, opt_state, is_leaf=hyperparams_lib.is_injected)


class Stack:
    """The members' pytrees stacked along a new leading axis, filled member by
    member into host buffers: a member's own state is freed once copied, so
    building ``N`` members holds about one stacked state, not two."""

    def __init__(self, members: int):
        self.members = members
        self.treedef: Any = None
        self.buffers: list[np.ndarray] = []

    def add(self, i: int, tree: Any) -> None:
        leaves, treedef = jax.tree.flatten(tree)
        if self.treedef is None:
            self.treedef = treedef
            self.buffers = [
                np.empty((self.members, *np.shape(a)), np.asarray(a).dtype)
                for a in leaves
            ]
        layout = [(np.shape(a), np.asarray(a).dtype) for a in leaves]
        wanted = [(b.shape[1:], b.dtype) for b in self.buffers]
        if treedef != self.treedef or layout != wanted:
            raise ValueError(
                errors.expected(
                    "params",
                    "members of one structure, shapes and dtypes (an init "
                    "function whose shapes do not depend on the key)",
                    errors.Description(f"member {i}'s state unlike member 0's"),
                )
            )
        for buffer, leaf in zip(self.buffers, leaves):
            buffer[i] = np.asarray(leaf)

    def tree(self) -> Any:
        return jax.tree.unflatten(self.treedef, self.buffers)


def member(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of a stacked pytree."""
    return jax.tree.map(lambda a: a[i], tree)


def build_states(
    make: Callable[[int], tuple[Any, TrainState]],
    seed: int,
    members: int,
    values: dict[str, list[Any]],
    check: Callable[[TrainState], None],
) -> tuple[Any, TrainState]:
    """``(apply, stacked state)``: ``make(member i's seed)`` for each member
    (``member_seeds``), with its hyperparameter values set; ``check`` sees the
    first member's state before any other is made."""
    optimizer_values = {
        k: v for k, v in values.items() if k not in (LOSS_WEIGHTS, SEED)
    }
    seeds = member_seeds(seed, members, values)
    apply, stacked = None, Stack(members)
    for i in range(members):
        apply_i, state = make(seeds[i])
        if apply is None:
            apply = apply_i
            check(state)
        if optimizer_values and state.opt_state is not None:
            mine = {name: v[i] for name, v in optimizer_values.items()}
            state = state.replace(
                opt_state=with_values(state.opt_state, mine, f"[{i}]")
            )
        stacked.add(i, state)
    return apply, stacked.tree()
