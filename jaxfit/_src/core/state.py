"""TrainState: the whole training state as one immutable pytree."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a train step reads and writes, as a pytree.

    Attributes:
      step: int32 scalar, the number of optimizer updates applied so far.
      params: the model parameters (any pytree).
      opt_state: the optax optimizer state.
      model_state: mutable model state threaded through ``apply`` (batch-norm
        statistics and the like); ``None`` for stateless models.
      rng: the PRNG key from which each step's dropout key is split.
      loss_scale: the dynamic loss-scale state (``precision.LossScaleState``)
        under ``precision="mixed_float16"``; ``None`` otherwise, an empty pytree
        node, so other runs have no extra leaves. Defaults to `None`.
    """

    step: Any
    params: Any
    opt_state: Any
    model_state: Any
    rng: Any
    loss_scale: Any = None

    def replace(self, **changes: Any) -> TrainState:
        """Returns a copy with the given fields replaced."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class Position:
    """Where a training run stands, as of its state (what a checkpoint records).

    Attributes:
      epoch: the epoch the next step belongs to.
      batch: the batches of that epoch already run (0 at an epoch's start).
      totals: that epoch's running loss and metric sums (device ``MeanState``s),
        ``None`` when ``batch`` is 0.
      stopped: the run had decided to stop (``stop_training``) at this point.
    """

    epoch: int = 0
    batch: int = 0
    totals: Any = None
    stopped: bool = False


def copy_tree(tree: Any) -> Any:
    """Fresh device buffers for every leaf, so donation never consumes the original.

    A device-to-device copy (``device_put``): nothing is compiled, and each leaf
    keeps its placement.
    """
    return jax.tree.map(lambda a: jax.device_put(jnp.asarray(a), may_alias=False), tree)


def strong(tree: Any) -> Any:
    """Every leaf as an array of a strong dtype (the same dtype, not weakly typed).

    Weakly typed leaves (Python floats, ``jnp.array(0.0)``) would change the
    compiled step's signature as the first update washes their weak type out,
    compiling it again; canonicalising the initial state once prevents that.
    """

    def leaf(value: Any) -> Any:
        array = jnp.asarray(value)
        if getattr(array, "weak_type", False):
            return jax.lax.convert_element_type(array, array.dtype)
        return array

    return jax.tree.map(leaf, tree)
