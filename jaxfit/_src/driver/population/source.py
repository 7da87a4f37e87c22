"""Per-member shuffled blocks: each member's own order over the same arrays.

Member ``i`` shuffles with its data-order seed (``seed + i``, or its own
``hyperparams["seed"]``), as the plain
trainer of that seed would (``arrays.Batches``), so its batches are the ones
that trainer sees. A block stacks the members' gathered batches:
``[members, slots, batch, ...]``. The padding pattern (which rows of which
batch are padding) depends only on the data's size and the batch size, so it
is the same for every member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src.data import arrays, sources


class MemberArraySource(sources.ArraySource):
    """``ArraySource`` whose epochs give per-member blocks (see the module
    docstring); evaluation blocks stay shared."""

    def __init__(
        self,
        data: dict[str, Any],
        n: int,
        batch_size: int,
        *,
        members: int,
        put_members: Callable[[Any], Any],
        offsets: tuple[int, ...] | None = None,
        **kwargs: Any,
    ):
        super().__init__(data, n, batch_size, **kwargs)
        self.members = members
        self.offsets = offsets if offsets is not None else tuple(range(members))
        self._put_members = put_members

    def capacity(self, fuse: bool, limit: int | None = None) -> int:
        """As ``ArraySource``'s, counting every member's batches in the bytes."""
        if not fuse:
            return 1
        batch_bytes = (
            self.members
            * self.batches.padded_size
            * sum(
                leaf.dtype.itemsize * int(np.prod(leaf.shape[1:]))
                for leaf in jax.tree.leaves(self.data)
            )
        )
        most = max(
            1, min(sources.MAX_BLOCK, sources.BLOCK_BYTES // max(batch_bytes, 1))
        )
        return min(most, limit or self.batches.steps_per_epoch)

    def epoch_blocks(
        self, epoch: int, start: int, capacity: int, steps: sources.Steps
    ) -> Iterable[Any]:
        seed = self._seed()
        plans = []
        for i in range(self.members):
            self.batches.seed = seed + self.offsets[i]
            plans.append(self.batches.epoch_indices(epoch))
        self.batches.seed = seed
        index = np.stack([p[0][start:] for p in plans])
        mask = np.stack([p[1][start:] for p in plans])
        host = _member_blocks(self.data, index, mask, capacity, steps)
        return arrays.prefetch(host, self._put_members)


def _member_blocks(
    data: dict[str, Any],
    index: np.ndarray,
    mask: np.ndarray,
    capacity: int,
    steps: Callable[[], int],
) -> Iterator[tuple[dict[str, Any], int]]:
    """``(host block, real batches)`` of ``capacity`` slots, as
    ``arrays.blocks`` but ``[members, slots, batch, ...]``."""
    num_steps, start = index.shape[1], 0
    while start < num_steps:
        real = max(1, min(steps(), capacity, num_steps - start))
        idx, msk = index[:, start : start + real], mask[:, start : start + real]
        start += real
        pad = capacity - real

        def gather(leaf: Any, idx: np.ndarray = idx, pad: int = pad) -> np.ndarray:
            out = np.zeros(
                (idx.shape[0], idx.shape[1] + pad, *idx.shape[2:], *leaf.shape[1:]),
                leaf.dtype,
            )
            out[:, : idx.shape[1]] = np.asarray(leaf)[idx]
            return out

        block = {
            "x": jax.tree.map(gather, data["x"]),
            "y": jax.tree.map(gather, data["y"]),
            "sample_weight": tuple(gather(w) for w in data["sample_weight"]),
            "mask": np.concatenate(
                [msk, np.zeros((msk.shape[0], pad, msk.shape[2]), msk.dtype)], axis=1
            ),
        }
        yield block, real
