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
from jaxfit._src.data import arrays, checks, iterables

Put = Callable[[Any, int], Any]  # (host block, global batch size) -> device block
Rows = Callable[[int], slice]  # global batch size -> this process's rows
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

    def block_size(self, fuse: bool) -> int:
        """Steps per compiled call: by bytes (8 MiB of batches, at most 256)."""
        if not fuse:
            return 1
        batch_bytes = self.batches.padded_size * sum(
            leaf.dtype.itemsize * int(np.prod(leaf.shape[1:]))
            for leaf in jax.tree.leaves(self.data)
        )
        most = max(1, min(MAX_BLOCK, BLOCK_BYTES // max(batch_bytes, 1)))
        return arrays.block_size(self.batches.steps_per_epoch, most)

    def epoch_blocks(self, epoch: int, start: int, size: int) -> Iterable[Any]:
        self.batches.seed = self._seed()  # a restored checkpoint may bring its own
        index, mask = self.batches.epoch_indices(epoch)
        return self._blocks(index[start:], mask[start:], size)

    def eval_blocks(self, limit: int | None, size: int = 1) -> Iterable[Any]:
        index, mask = self.batches.epoch_indices(0)
        index, mask = index[:limit], mask[:limit]
        return self._blocks(index, mask, arrays.block_size(len(index), size))

    def eval_specs(self, limit: int | None, size: int = 1) -> list[tuple[Any, bool]]:
        """``(block shapes, partial)`` of the programs ``eval_blocks`` will run."""
        steps = len(range(self.batches.batches_per_pass)[:limit])
        slots = arrays.block_size(steps, size)
        return [(_specs(self.data, slots, self.batches.padded_size), False)]

    def _blocks(self, index: np.ndarray, mask: np.ndarray, size: int) -> Iterator[Any]:
        """This process's rows of each block, gathered on the host and put on the
        mesh ahead of use."""
        width = index.shape[1]
        rows = self._rows(width)
        host = arrays.blocks(self.data, index[:, rows], mask[:, rows], size)
        return arrays.prefetch(host, lambda block: self._put(block, width))

    def close(self) -> None:
        pass


class StreamSource:
    """Batches from a stream, checked, grouped into fused blocks of one padded
    shape, padded, masked and put on the device by a feeder thread (see
    ``iterables.Feeder``); the first batch is read ahead (to trace the model).

    ``fill_ms``: the yield interval; a block being filled is sent off after it or
    ``iterables.FILL_MS``, whichever is shorter. Several processes group by counts
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
        fill_ms: float | None = iterables.FILL_MS,
        producer_timeout: float | None = None,
        evaluation: bool = False,
    ):
        self.argname = argname
        self._timeout = producer_timeout
        self.stream = iterables.Stream(dataset, argname)
        self.batcher = iterables.Batcher(argname, class_weight, multiple)
        self._put, self._processes = put, processes
        self._steps, self._initial = steps_per_epoch, initial_epoch
        fill = iterables.FILL_MS if fill_ms is None else min(fill_ms, iterables.FILL_MS)
        self._fill_s = None if processes > 1 else fill / 1000.0
        first_epoch = self.stream.iterator(initial_epoch)
        first = iterables.read_first(
            first_epoch,
            producer_timeout,
            f"{argname} batch 0" if evaluation else self._train_where(initial_epoch)(0),
        )
        if first is iterables.END:
            raise ValueError(
                errors.expected(
                    argname, "at least one batch", errors.Description("no batches")
                )
            )
        example = self.batcher.block([self.batcher(first, 0)])
        self._block = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example
        )  # a one-batch block's shapes
        self._length = _length(dataset)
        self.example = (_unblock(example["x"]), _unblock(example["y"]))
        self.batch_size = int(example["mask"].sum())
        self.padded_size = int(example["mask"].shape[1])
        self._batch_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(example))
        self._pending = [itertools.chain([first], first_epoch)]  # the first iterator
        self._feeds: list[iterables.Feeder] = []
        # callbacks' params["steps"]: steps_per_epoch, else a sized dataset's length
        # (tfjs: dataset.size), so the progress bar shows a total
        self.steps = steps_per_epoch if steps_per_epoch is not None else self._length
        self.required_steps = steps_per_epoch  # tfjs' ran-out-of-data warning

    def check_labels(self, compiled: Any) -> None:
        """Checks every batch's labels (in the feeder thread) against the losses."""

        def check(y: Any, where: str) -> None:
            checks.check_labels(compiled.objective, y, compiled.y_pred, where)

        self.batcher.check = check

    def block_size(self, fuse: bool) -> int:
        """Steps per block: by bytes of the first batch (8 MiB, as arrays), at
        most ``STREAM_MAX_BLOCK``."""
        if not fuse:
            return 1
        return max(1, min(STREAM_MAX_BLOCK, BLOCK_BYTES // max(self._batch_bytes, 1)))

    def _feeder(
        self,
        source: Iterator[Any],
        start: int,
        size: int,
        where: Callable[[int], str],
        period: int | None = None,
    ) -> iterables.Feeder:
        return iterables.Feeder(
            source,
            self.batcher,
            self._put_streamed,
            size=size,
            fill_s=self._fill_s,
            period=period,
            skip=start,
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

    def _iterator(self, epoch: int) -> Iterator[Any]:
        return self._pending.pop() if self._pending else self.stream.iterator(epoch)

    def epoch_blocks(self, epoch: int, start: int, size: int) -> Iterable[Any]:
        steps = self._steps
        if steps is None:  # an epoch is one pass over a fresh iterator
            return self._feeder(
                self._iterator(epoch), start, size, self._train_where(epoch)
            )
        if not self._feeds:  # one iterator continues across epochs; after a
            skip = (epoch - self._initial) * steps + start  # resume, skip what ran
            self._feeds.append(
                self._feeder(
                    self._iterator(epoch),
                    skip,
                    size,
                    self._train_where(self._initial),
                    period=steps,
                )
            )
        return _counted(self._feeds[0], steps - start)

    def eval_blocks(self, limit: int | None, size: int = 1) -> Iterable[Any]:
        return iterables.Feeder(
            iterables.take(self._iterator(0), limit),
            self.batcher,
            self._put_streamed,
            size=size,
            fill_s=self._fill_s,
            timeout=self._timeout,
        )

    def train_specs(self, size: int) -> list[tuple[Any, bool]]:
        """``(block shapes, partial)`` of the train programs blocks of ``size``
        will run: full blocks and ones that ended early (of a sized stream, or
        with ``steps_per_epoch``, only those its length needs)."""
        return self._kinds(
            self._steps if self._steps is not None else self._length, size
        )

    def eval_specs(self, limit: int | None, size: int = 1) -> list[tuple[Any, bool]]:
        """The same for evaluation (at most ``limit`` batches)."""
        return self._kinds(self._length if limit is None else limit, size)

    def _kinds(self, length: int | None, size: int) -> list[tuple[Any, bool]]:
        if size == 1:
            return [(self._specs(1), False)]
        full, partial = True, True
        if length is not None:  # partial blocks may also come from the deadlines
            full = length >= size
            partial = length % size != 0 or self._fill_s is not None
        return [(self._specs(size), False)] * full + [
            (self._specs(size), True)
        ] * partial

    def _specs(self, slots: int) -> Any:
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct((slots, *a.shape[1:]), a.dtype), self._block
        )

    def close(self) -> None:
        """Stops a feeder that spans epochs."""
        for feed in self._feeds:
            feed.close()
        self._feeds.clear()


def _counted(feed: Iterator[Any], count: int) -> Iterator[Any]:
    """Blocks of ``feed`` until they hold ``count`` batches (the feeder cuts its
    blocks at epoch ends, so the count is met exactly)."""
    taken = 0
    while taken < count:
        item = next(feed, None)
        if item is None:
            return
        taken += item[1]
        yield item


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
