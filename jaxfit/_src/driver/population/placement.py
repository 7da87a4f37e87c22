"""Where a population lives: whole members per device, or data-parallel within.

With several devices along the data axis and a number of members divisible by
theirs, the member axis is split across them: each device trains whole members,
with no cross-device traffic per step, and batches are not padded to the
devices. Otherwise the state is replicated and each member's batches are split
along the data axis, as a single model's are.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from jaxfit._src.core.placement import Placement


class PopulationPlacement(Placement):
    """``Placement`` for a state with a leading member axis.

    Blocks come in two layouts: *shared* ``[slots, batch, ...]`` (the same
    batches for every member: validation, streams, unshuffled arrays) and *per
    member* ``[members, slots, batch, ...]`` (each member's own order).
    """

    def __init__(
        self,
        members: int,
        mesh: Any = "auto",
        data_axis: str = "data",
        offsets: tuple[int, ...] | None = None,
    ):
        super().__init__(mesh, data_axis, None)
        self.members = members
        # member i's seed is the trainer's seed + offsets[i] (its shuffling)
        self.offsets = offsets if offsets is not None else tuple(range(members))
        self.split = self.num_shards > 1 and members % self.num_shards == 0
        self._members = NamedSharding(self.mesh, PartitionSpec(data_axis))

    @property
    def member_sharding(self) -> NamedSharding:
        """Arrays with a leading member axis: split across devices, or
        replicated."""
        return self._members if self.split else self.replicated

    def state_shardings(self, state: Any, optimizer: Any) -> Any:
        del optimizer
        return jax.tree.map(lambda _: self.member_sharding, state)

    def padded(self, batch_size: int) -> int:
        return batch_size if self.split else super().padded(batch_size)

    def batch_sharding(self, ndim_prefix: int = 1) -> NamedSharding:
        if self.split:  # every device holds whole batches (of its own members)
            return self.replicated
        return super().batch_sharding(ndim_prefix)

    def member_block_sharding(self) -> NamedSharding:
        """A per-member block ``[members, slots, batch, ...]``."""
        if self.split:
            return self._members
        return NamedSharding(self.mesh, PartitionSpec(None, None, self.data_axis))

    def put_member_block(self, block: Any) -> Any:
        """A host per-member block onto the mesh."""
        return jax.device_put(block, self.member_block_sharding())
