"""Streams of batches: generators, iterables, grain and tf.data, prefetched to device.

A source is normalised once into a ``Stream`` that hands out one iterator per epoch
(a generator function is called afresh, an iterable re-iterated, a ``tf.data``
dataset duck-typed through ``as_numpy_iterator()``). Each batch is
``{"xs", "ys"[, "sample_weight"]}`` or ``(x, y[, sample_weight])``; nested pytrees
are allowed inside.

Shapes: every batch is padded (and masked) to the **largest batch size seen so
far** in the stream, so a stream of equal batches with a short last one compiles
one shape; a batch larger than all before it compiles one more. A batch whose
structure, feature shapes or dtypes differ from the first batch's is rejected with
its index before it reaches jit.

A background thread (``Feeder``) prepares batches and moves them to the device
``depth`` ahead of use; its exceptions are re-raised in the caller with the batch
index, and it is always joined.
"""

from __future__ import annotations

import collections.abc
import itertools
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import arrays

MSG_ONE_SHOT = (
    "{argname}: a one-shot iterator (such as a generator object) cannot be iterated "
    "again for epoch {epoch}. Pass the generator function itself (it is called afresh "
    "each epoch), an iterable such as a list or a grain dataset, or set "
    "steps_per_epoch so that one iterator continues across epochs."
)


def parse_batch(batch: Any, index: int, argname: str) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight or None)`` from a batch dict or tuple."""
    if isinstance(batch, dict) and "xs" in batch and "ys" in batch:
        extra = set(batch) - {"xs", "ys", "sample_weight"}
        if extra:
            raise ValueError(errors.expected(
                f"{argname} batch {index}",
                "a dict with keys 'xs', 'ys' and optionally 'sample_weight'", batch))
        return batch["xs"], batch["ys"], batch.get("sample_weight")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    raise ValueError(errors.expected(
        f"{argname} batch {index}",
        "{'xs': x, 'ys': y[, 'sample_weight': w]} or a tuple (x, y[, w])", batch))


class Stream:
    """One iterator per epoch over a source of batches."""

    def __init__(self, source: Any, argname: str = "dataset"):
        self.argname = argname
        self.one_shot = False
        if hasattr(source, "as_numpy_iterator"):  # tf.data, never imported
            self._factory: Callable[[], Iterable[Any]] = source.as_numpy_iterator
        elif hasattr(source, "__iter__"):
            # An iterator (a generator object, iter(list)) can be walked only once.
            self.one_shot = isinstance(source, collections.abc.Iterator)
            self._factory = lambda: source
        elif callable(source):  # a generator function, called afresh each epoch
            self._factory = source
        else:
            raise TypeError(errors.expected(
                argname,
                "an iterable of batches, a generator function, a grain dataset or a "
                "tf.data.Dataset", source))
        self._iterations = 0

    def iterator(self, epoch: int) -> Iterator[Any]:
        if self.one_shot and self._iterations > 0:
            raise ValueError(MSG_ONE_SHOT.format(argname=self.argname, epoch=epoch))
        self._iterations += 1
        return iter(self._factory())


class Batcher:
    """Turns raw batches into padded, masked host blocks of one batch each.

    Checks each batch against the first one's structure, feature shapes and dtypes,
    applies ``class_weight``, and pads to the largest batch size seen so far.
    """

    def __init__(self, argname: str, class_weight: dict[int, float] | None,
                 multiple: int = 1):
        self.argname = argname
        self.class_weight = class_weight
        self.multiple = multiple  # pad to a multiple of the devices feeding on it
        self.signature: Any = None
        self.size = 0
        # (y, batch index) -> None, raising for labels the losses cannot take;
        # set once the model's output shapes are known
        self.check: Callable[[Any, int], None] | None = None

    def __call__(self, raw: Any, index: int) -> tuple[dict[str, Any], int]:
        x, y, sample_weight = parse_batch(raw, index, self.argname)
        prefix = f"{self.argname} batch {index}: "
        data, n = arrays.standardize(x, y, sample_weight, prefix)
        x, y = data["x"], data["y"]
        signature = jax.tree.map(lambda a: (a.shape[1:], a.dtype.name), (x, y))
        structure = jax.tree.structure((x, y))
        if self.signature is None:
            self.signature = (structure, signature)
        elif (structure, signature) != self.signature:
            raise ValueError(
                f"{self.argname}: batch {index} has structure/shapes "
                f"{_describe(structure, signature)}, but batch 0 had "
                f"{_describe(*self.signature)} (feature shapes and dtypes, without the "
                "batch axis). Every batch must have the same structure, feature shapes "
                "and dtypes; only the batch size may vary.")
        if self.check is not None:
            self.check(y, index)
        weights = arrays.with_class_weight(data, self.class_weight,
                                           prefix + "y")["sample_weight"]
        self.size = max(self.size, -(-n // self.multiple) * self.multiple)
        pad = self.size - n

        def padded(a):
            if not pad:
                return a[None]
            return np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])[None]

        mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        block = {
            "x": jax.tree.map(padded, x),
            "y": jax.tree.map(padded, y),
            "sample_weight": tuple(padded(w) for w in weights),
            "mask": mask[None],
        }
        return block, 1


def _describe(structure: Any, signature: Any) -> str:
    """A batch's ``(x, y)`` by ``errors.describe``: each leaf's feature shape and
    dtype (without the batch axis), in the batch's structure."""
    leaves = jax.tree.leaves(signature, is_leaf=lambda v: isinstance(v, tuple)
                             and len(v) == 2 and isinstance(v[1], str))
    return errors.describe(jax.tree.unflatten(structure, [
        errors.Description(errors.array_spec(shape, dtype)) for shape, dtype in leaves]))


class _Failure:
    def __init__(self, error: BaseException, index: int):
        self.error, self.index = error, index


_END = object()


class Feeder:
    """Prepares items on a background thread and puts them on the device ahead.

    Iterating yields ``prepare(item, index)`` results, ``put`` applied,
    keeping ``depth`` of them in flight. ``close()`` stops and joins the thread; it is
    called when iteration ends, fails, or the consumer stops early.
    """

    def __init__(self, items: Iterator[Any], prepare: Callable[[Any, int], Any],
                 put: Callable[[Any], Any] = jax.device_put, depth: int = 2,
                 start_index: int = 0):
        self._items = items
        self._prepare = prepare
        self._put_device = put
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._index = start_index
        self._thread = threading.Thread(target=self._run, name="jaxfit-feeder",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        index = self._index
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                block, real = self._prepare(item, index)
                if not self._put((self._put_device(block), real)):
                    return
                index += 1
            self._put(_END)
        except BaseException as error:  # re-raised in the consumer
            self._put(_Failure(error, index))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    error = item.error
                    note = f"jaxfit: raised while preparing batch {item.index} of the data"
                    if hasattr(error, "add_note"):
                        error.add_note(note)
                    raise error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)


def take(iterator: Iterator[Any], count: int | None) -> Iterator[Any]:
    """At most ``count`` items (all when ``None``)."""
    return iterator if count is None else itertools.islice(iterator, count)


def skip(iterator: Iterator[Any], count: int, batcher: Batcher) -> Iterator[Any]:
    """``iterator`` without its first ``count`` items (resuming mid-stream).

    The skipped batches still pass through ``batcher`` (host only, nothing moves to
    the device), so its checks and padding size are as if they had been run.
    """
    iterator = iter(iterator)
    for index, raw in enumerate(itertools.islice(iterator, count)):
        batcher(raw, index)
    return iterator
