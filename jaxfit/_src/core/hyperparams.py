"""Finding and replacing an injected learning rate inside an optax state.

``optax.inject_hyperparams(opt)(learning_rate=...)`` keeps the learning rate as an
array in the optimizer state; replacing that array (same shape and dtype) changes
the rate without recompiling, and it is saved and restored with the state.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

_STATES = tuple(
    cls
    for cls in (
        getattr(optax, "InjectHyperparamsState", None),
        getattr(optax, "InjectStatefulHyperparamsState", None),
    )
    if cls is not None
)
KEY = "learning_rate"


def _is_inject(node: Any) -> bool:
    return isinstance(node, _STATES)


def find(opt_state: Any) -> list[Any]:
    """The injected-hyperparameter states that hold a ``learning_rate``."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_inject)
    return [n for n in nodes if _is_inject(n) and KEY in n.hyperparams]


def get(opt_state: Any) -> Any | None:
    """The (first) injected learning rate array, or ``None``."""
    nodes = find(opt_state)
    return nodes[0].hyperparams[KEY] if nodes else None


def replace(opt_state: Any, value: Any) -> Any:
    """A copy of ``opt_state`` with every injected learning rate set to ``value``."""

    def swap(node):
        if _is_inject(node) and KEY in node.hyperparams:
            hyperparams = dict(node.hyperparams)
            hyperparams[KEY] = value
            return node._replace(hyperparams=hyperparams)
        return node

    return jax.tree.map(swap, opt_state, is_leaf=_is_inject)
