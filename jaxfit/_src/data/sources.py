"""The data seam: in-memory arrays and streams of batches as two *sources*.

The loop never sees where data comes from. A source hands it, for one epoch (from
a first batch on, when resuming mid-epoch), blocks of batches already on the
device, each with its mask (padding rows 0) and the number of real batches in it;
and the same for an evaluation pass. Both standardise x, y and sample_weight with
``arrays.standardize`` and apply class weights the same way, so fit and
fit_dataset cannot drift. Keras' ``EpochIterator`` over its data adapters plays
this role there; here the blocks stay fused and each batch's logs stay its own.

- ``ArraySource``: index plans over host (or device) arrays, shuffled per epoch
  from the seed, gathered a block at a time and prefetched.
- ``StreamSource``: an iterable, generator function, grain or tf.data-like source;
  one iterator per epoch (or one continued across epochs with ``steps_per_epoch``),
  batches read, checked and grouped into fused blocks by a feeder thread, each
  block stacked, padded and put on the device by the loop while the one before
  runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import arrays, checks, feeder, iterables

Put = Callable[[Any, int], Any]  # (host block, global batch size) -> device block
Rows = Callable[[int], slice]  # global batch size -> this process's rows
Steps = Callable[[], int]  # the yield policy's length for the next block
MAX_BLOCK = 256  # the most train steps fused into one compiled call
# ...and the most bytes of batches per call: small batches fuse many steps (the
# per-call cost of the host gather and device_put is what limits small models),
# large ones few (they are compute-bound, and yields stay frequent).
BLOCK_BYTES = 8 << 20
# Streams fuse fewer steps: their batches are prepared by a feeder thread while
# the device runs, and the device waits for a block's last batch before it starts
# it, so smaller blocks keep both busy (tiny workload on 2 CPU cores: a steady
# epoch of 6.6 ms with blocks of 64, 7.5 ms with 128, 7.8 ms with 256).
STREAM_MAX_BLOCK = 64


class ArraySource:
    """In-memory arrays (already standardised) in padded, masked batches."""

    def __init__(
        self,
        data: dict[str, Any],
        n: int,
        batch_size: int,
        *,
        put: Put,
        rows: Rows,
        pad_to: Callable[[int], int],
        shuffle: bool = False,
        seed: Callable[[], int] = lambda: 0,
        steps_per_epoch: int | None = None,
        argname: str = "",
    ):
        self.data, self.argname = data, argname
        self._put, self._rows, self._seed = put, rows, seed
        self.batches = arrays.Batches(
            n,
            batch_size,
            shuffle=shuffle,
            seed=seed(),
            steps_per_epoch=steps_per_epoch,
            pad_to=pad_to,
        )
        self.batch_size = self.batches.batch_size
        self.steps: int | None = self.batches.steps_per_epoch
        self.required_steps: int | None = None
        self.example = (data["x"], data["y"])

    def capacity(self, fuse: bool, limit: int | None = None) -> int:
        """A block's slots: by bytes (8 MiB of batches, at most 256), at most an
        epoch's batches (``limit``: an evaluation's)."""
        if not fuse:
            return 1
        batch_bytes = self.batches.padded_size * sum(
            leaf.dtype.itemsize * int(np.prod(leaf.shape[1:]))
            for leaf in jax.tree.leaves(self.data)
        )
        most = max(1, min(MAX_BLOCK, BLOCK_BYTES // max(batch_bytes, 1)))
        return min(most, limit or self.batches.steps_per_epoch)

    def epoch_blocks(
        self, epoch: int, start: int, capacity: int, steps: Steps
    ) -> Iterable[Any]:
        self.batches.seed = self._seed()  # a restored checkpoint may bring its own
        index, mask = self.batches.epoch_indices(epoch)
        return self._blocks(index[start:], mask[start:], capacity, steps)

    def eval_blocks(self, limit: int | None, capacity: int, steps: Steps) -> Any:
        index, mask = self.batches.epoch_indices(0)
        return self._blocks(index[:limit], mask[:limit], capacity, steps)

    def eval_specs(self, capacity: int) -> Any:
        """The shapes of the blocks ``eval_blocks`` puts on the device."""
        return _specs(self.data, capacity, self.batches.padded_size)

    def _blocks(
        self, index: np.ndarray, mask: np.ndarray, capacity: int, steps: Steps
    ) -> Iterator[Any]:
        """This process's rows of each block, gathered on the host and put on the
        mesh ahead of use."""
        width = index.shape[1]
        rows = self._rows(width)
        host = arrays.blocks(self.data, index[:, rows], mask[:, rows], capacity, steps)
        return arrays.prefetch(host, lambda block: self._put(block, width))

    def close(self) -> None:
        pass


class StreamSource:
    """Batches from a stream, checked, grouped into fused blocks of one padded
    shape, padded, masked and put on the device by a feeder thread (see
    ``feeder.Feeder``); the first batch is read ahead (to trace the model).

    ``fill_ms``: the yield interval; a block being filled is sent off after it or
    ``feeder.FILL_MS``, whichever is shorter. Several processes group by counts
    only, so that they run the same compiled blocks. ``producer_timeout``
    (seconds, or ``None``): the longest wait for any one batch of the producer,
    the first included, before a ``TimeoutError`` naming the batch; every wait
    is in short slices, so Ctrl-C interrupts it at once. ``evaluation``: the
    stream is evaluated (validation, ``evaluate_dataset``), so its batches are
    named without an epoch.
    """

    def __init__(
        self,
        dataset: Any,
        argname: str,
        *,
        put: Put,
        multiple: int,
        processes: int = 1,
        class_weight: dict[int, float] | None = None,
        steps_per_epoch: int | None = None,
        initial_epoch: int = 0,
        fill_ms: float | None = feeder.FILL_MS,
        producer_timeout: float | None = None,
        evaluation: bool = False,
    ):
        self.argname = argname
        self._timeout = producer_timeout
        self.stream = iterables.Stream(dataset, argname)
        self.batcher = iterables.Batcher(argname, class_weight, multiple)
        self._put, self._processes = put, processes
        self._steps, self._initial = steps_per_epoch, initial_epoch
        fill = feeder.FILL_MS if fill_ms is None else min(fill_ms, feeder.FILL_MS)
        self._fill_s = None if processes > 1 else fill / 1000.0
        first_epoch = self.stream.iterator(initial_epoch)
        where = self._train_where(initial_epoch)
        first, skipped = self._read_first(first_epoch, evaluation, where)
        example = self.batcher.block([self.batcher(first, skipped)])
        self._block = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example
        )  # a one-batch block's shapes
        self._length = _length(dataset)
        self.example = (_unblock(example["x"]), _unblock(example["y"]))
        self.batch_size = int(example["mask"].sum())
        self.padded_size = int(example["mask"].shape[1])
        self._batch_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(example))
        # the first iterator, and the index of its first batch (after any of no rows)
        self._pending = [(itertools.chain([first], first_epoch), skipped)]
        self._feeds: list[feeder.Feeder] = []
        # callbacks' params["steps"]: steps_per_epoch, else a sized dataset's length
        # (tfjs: dataset.size), so the progress bar shows a total
        self.steps = steps_per_epoch if steps_per_epoch is not None else self._length
        self.required_steps = steps_per_epoch  # tfjs' ran-out-of-data warning

    def _read_first(
        self, iterator: Iterator[Any], evaluation: bool, where: Callable[[int], str]
    ) -> tuple[Any, int]:
        """The first batch with rows (batches of none are skipped, as everywhere)
        and its index; a stream with none is refused."""
        index = 0
        while True:
            name = f"{self.argname} batch {index}" if evaluation else where(index)
            first = feeder.read_first(iterator, self._timeout, name)
            if first is feeder.END:
                got = f"{index} batches, none with rows" if index else "no batches"
                expected = "at least one batch" + (" with rows" if index else "")
                raise ValueError(
                    errors.expected(self.argname, expected, errors.Description(got))
                )
            if self.batcher(first, index).n > 0:
                return first, index
            index += 1

    def check_labels(self, compiled: Any) -> None:
        """Checks every batch's labels (in the feeder thread) against the losses."""

        def check(y: Any, where: str) -> None:
            checks.check_labels(compiled.objective, y, compiled.y_pred, where)

        self.batcher.check = check

    def capacity(self, fuse: bool, limit: int | None = None) -> int:
        """A block's slots: by bytes of the first batch (8 MiB, as arrays), at
        most ``STREAM_MAX_BLOCK`` (and ``limit``: an evaluation's batches)."""
        if not fuse:
            return 1
        most = max(1, min(STREAM_MAX_BLOCK, BLOCK_BYTES // max(self._batch_bytes, 1)))
        return min(most, limit or most)

    def _feeder(
        self,
        source: tuple[Iterator[Any], int],
        skip: int,
        capacity: int,
        steps: Steps,
        where: Callable[[int], str] | None = None,
        period: int | None = None,
        limit: int | None = None,
    ) -> feeder.Feeder:
        """A feeder; several processes group by counts only (full blocks), so
        that they run the same compiled calls."""
        return feeder.Feeder(
            source[0],
            self.batcher,
            self._put_streamed,
            size=capacity,
            steps=steps if self._processes == 1 else None,
            fill_s=self._fill_s,
            period=period,
            skip=skip,
            limit=limit,
            first=source[1],
            timeout=self._timeout,
            where=where,
        )

    def _train_where(self, epoch: int) -> Callable[[int], str]:
        """Names a training batch by its index in the feeder: from ``epoch``'s
        start, or with ``steps_per_epoch`` from the continued stream's start."""
        steps, argname = self._steps, self.argname
        if steps is None:
            return lambda index: f"{argname} batch {index} of epoch {epoch}"
        return lambda index: (
            f"{argname} batch {index % steps} of epoch {epoch + index // steps}"
        )

    def _put_streamed(self, block: Any) -> Any:
        """A streamed block (this process's batches) onto the mesh."""
        return self._put(block, int(block["mask"].shape[1]) * self._processes)

    def _iterator(self, epoch: int) -> tuple[Iterator[Any], int]:
        if self._pending:
            return self._pending.pop()
        return self.stream.iterator(epoch), 0

    def epoch_blocks(
        self, epoch: int, start: int, capacity: int, steps: Steps
    ) -> Iterable[Any]:
        per_epoch = self._steps
        if per_epoch is None:  # an epoch is one pass over a fresh iterator
            return self._feeder(
                self._iterator(epoch), start, capacity, steps, self._train_where(epoch)
            )
        if not self._feeds:  # one iterator continues across epochs; after a
            skip = (epoch - self._initial) * per_epoch + start  # resume, skip what ran
            self._feeds.append(
                self._feeder(
                    self._iterator(epoch),
                    skip,
                    capacity,
                    steps,
                    self._train_where(self._initial),
                    period=per_epoch,
                )
            )
        return _Counted(self._feeds[0], per_epoch - start)

    def eval_blocks(self, limit: int | None, capacity: int, steps: Steps) -> Any:
        return self._feeder(self._iterator(0), 0, capacity, steps, limit=limit)

    def eval_specs(self, capacity: int) -> Any:
        """The shapes of a block of ``capacity`` slots of the first batch's bucket."""
        return self._specs(capacity)

    def _specs(self, slots: int) -> Any:
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((slots, *a.shape[1:]), a.dtype), self._block
        )

    def close(self) -> None:
        """Stops a feeder that spans epochs."""
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()


class _Counted:
    """Blocks of ``feed`` until they hold ``count`` batches (the feeder cuts its
    blocks at epoch ends, so the count is met exactly); waits as the feeder does."""

    def __init__(self, feed: feeder.Feeder, count: int):
        self._feed, self._left = feed, count
        self.wait = feed.wait

    def ready(self) -> bool:
        """Whether ``__next__`` returns at once (at the epoch's end, it does)."""
        return self._left <= 0 or self._feed.ready()

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> tuple[Any, int]:
        if self._left <= 0:
            raise StopIteration
        item = next(self._feed)
        self._left -= item[1]
        return item


def _specs(data: dict[str, Any], slots: int, rows: int) -> Any:
    """Shapes of a block of ``slots`` batches of ``rows`` rows of ``data``."""

    def spec(leaf: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((slots, rows, *leaf.shape[1:]), leaf.dtype)

    return {
        "x": jax.tree.map(spec, data["x"]),
        "y": jax.tree.map(spec, data["y"]),
        "sample_weight": tuple(spec(w) for w in data["sample_weight"]),
        "mask": jax.ShapeDtypeStruct((slots, rows), np.float32),
    }


def _unblock(tree: Any) -> Any:
    """A one-batch block's tree without the block axis."""
    return jax.tree.map(lambda a: a[0], tree)


def _length(dataset: Any) -> int | None:
    """``len(dataset)`` when the dataset knows it (a list, a grain dataset), else
    ``None`` (a generator, an infinite or unsized stream)."""
    try:
        length = len(dataset)
    except Exception:  # noqa: BLE001 - unsized, or tf.data's infinite cardinality
        return None
    return length if isinstance(length, int) and length > 0 else None
