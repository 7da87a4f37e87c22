"""Streams of batches: generators, iterables, grain and tf.data, prefetched to device.

A source is normalised once into a ``Stream`` that hands out one iterator per epoch
(a generator function is called afresh, an iterable re-iterated, a ``tf.data``
dataset duck-typed through ``as_numpy_iterator()``). Each batch is
``{"xs", "ys"[, "sample_weight"]}`` or ``(x, y[, sample_weight])``; nested pytrees
are allowed inside.

Shapes: every batch is padded (and masked) to the **largest batch size seen so
far** in the stream, so a stream of equal batches with a short last one has one
shape (its *bucket*); a batch larger than all before it opens another. A batch
whose structure, feature shapes or dtypes differ from the first batch's is
rejected with its index before it reaches jit.

A background thread (``Feeder``) prepares batches, groups consecutive ones of a
bucket into fused blocks (see ``Feeder`` for when a block ends early) and moves
them to the device ``depth`` blocks ahead of use; its exceptions are re-raised in
the caller with the batch index.

A stream cannot hang the caller: whoever waits for the producer (the loop for a
block, ``read_first`` for the first batch) waits in ``WAIT_S`` slices, so Ctrl-C
is delivered at once and an optional producer timeout raises ``TimeoutError``
naming the batch waited for. The threads are daemons and are joined when they
finish, except one blocked inside the producer's ``__next__``: Python cannot stop
a thread, so it is told to stop and left to end by itself when the producer
returns (it touches nothing of jaxfit's after that).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import arrays, checks

# Whoever waits for the producer waits in slices of this long (only while there
# is nothing to take): Ctrl-C and the producer timeout act within one slice.
WAIT_S = 0.05
# ``Feeder.close`` waits this long for a thread inside the producer's __next__
# (a slow producer's next batch), then leaves it (never after an error or a
# Ctrl-C: then it leaves it at once).
CLOSE_GRACE_S = 0.5

MSG_TIMEOUT = (
    "The producer (the dataset's iterator) is blocked or slower than that. Raise "
    "producer_timeout, or pass None to wait as long as it takes (Ctrl-C still "
    "interrupts)."
)

MSG_ONE_SHOT = (
    "Pass the generator function itself (it is called afresh each epoch), an "
    "iterable such as a list or a grain dataset{more}."
)
# MSG_ONE_SHOT's ending for the training stream (validation starts afresh each time)
MORE_STEPS = ", or set steps_per_epoch so that one iterator continues across epochs"


def one_shot_message(argname: str, epoch: int) -> str:
    """Refuses a one-shot iterator as ``argname`` (``"dataset"``,
    ``"validation_data"``) when epoch ``epoch`` needs another pass over it."""
    more = MORE_STEPS if argname == "dataset" else ""
    return errors.expected(
        argname,
        f"an iterable of batches that can be iterated again for epoch {epoch}",
        errors.Description("a one-shot iterator (such as a generator object)"),
        MSG_ONE_SHOT.format(more=more),
    )


def parse_batch(batch: Any, index: int, argname: str) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight or None)`` from a batch dict or tuple."""
    if isinstance(batch, dict) and "xs" in batch and "ys" in batch:
        extra = set(batch) - {"xs", "ys", "sample_weight"}
        if extra:
            raise ValueError(
                errors.expected(
                    f"{argname} batch {index}",
                    "a dict with keys 'xs', 'ys' and optionally 'sample_weight'",
                    batch,
                )
            )
        return batch["xs"], batch["ys"], batch.get("sample_weight")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    fix = ""
    if hasattr(batch, "shape") and hasattr(batch, "dtype"):  # arrays, not batches
        fix = (
            "For in-memory validation arrays pass a tuple (x, y[, sample_weight])."
            if argname == "validation_data"
            else "A stream yields whole batches; for in-memory arrays use "
            "Trainer.fit(x, y) (or pass a list of (x, y) batches)."
        )
    raise ValueError(
        errors.expected(
            f"{argname} batch {index}",
            "{'xs': x, 'ys': y[, 'sample_weight': w]} or a tuple (x, y[, w])",
            batch,
            fix,
        )
    )


def _not_a_stream(source: Any, argname: str) -> TypeError:
    fix = {
        dict: "A dict is one batch: pass a list of batches ([batch]) or a "
        "generator function.",
        str: "",
        bytes: "",
    }
    kind = next(k for k in fix if isinstance(source, k))
    return TypeError(
        errors.expected(
            argname,
            "an iterable of batches, a generator function, a grain dataset or a "
            "tf.data.Dataset",
            source,
            fix[kind],
        )
    )


class Stream:
    """One iterator per epoch over a source of batches."""

    def __init__(self, source: Any, argname: str = "dataset"):
        self.argname = argname
        self.one_shot = False
        self._source = source
        self._called = False  # whether ``_factory`` is the user's own function
        if isinstance(source, (str, bytes, dict)):  # iterable, but not of batches
            raise _not_a_stream(source, argname)
        if hasattr(source, "as_numpy_iterator"):  # tf.data, never imported
            self._factory: Callable[[], Iterable[Any]] = source.as_numpy_iterator
        elif hasattr(source, "__iter__"):
            # An iterator (a generator object, iter(list)) can be walked only once.
            self.one_shot = isinstance(source, collections.abc.Iterator)
            self._factory = lambda: source
        elif callable(source):  # a generator function, called afresh each epoch
            _check_no_arguments(source, argname)
            self._factory, self._called = source, True
        else:
            raise TypeError(
                errors.expected(
                    argname,
                    "an iterable of batches, a generator function, a grain dataset or a "
                    "tf.data.Dataset",
                    source,
                )
            )
        self._iterations = 0

    def iterator(self, epoch: int) -> Iterator[Any]:
        if self.one_shot and self._iterations > 0:
            raise ValueError(one_shot_message(self.argname, epoch))
        self._iterations += 1
        items = self._factory()
        if self._called and not hasattr(items, "__iter__"):
            raise TypeError(
                errors.expected(
                    self.argname,
                    "a generator function, or a function returning an iterable of "
                    "batches",
                    errors.Description(
                        f"{errors.describe(self._source)}, which returned "
                        f"{errors.describe(items)}"
                    ),
                )
            )
        return iter(items)


def _check_no_arguments(fn: Callable[..., Any], argname: str) -> None:
    """A generator function is called without arguments: refuse one that needs
    some before it is called (Python's own error would not name ``argname``)."""
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise TypeError(
            errors.expected(
                argname,
                "a generator function that takes no arguments (it is called afresh "
                "each epoch)",
                fn,
                "Bind its arguments first, e.g. functools.partial(gen, n) or "
                "lambda: gen(n).",
            )
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass


END = object()  # ``read_first``: the iterator had no item


def read_first(iterator: Iterator[Any], timeout: float | None, where: str) -> Any:
    """``next(iterator)`` (``END`` when it has no item), read on a helper thread
    while the caller waits in ``WAIT_S`` slices.

    Ctrl-C in the caller is delivered at once, however the producer blocks; with
    ``timeout`` (seconds) a producer that gives nothing in that time raises
    ``TimeoutError`` naming ``where`` (``"dataset batch 0 of epoch 0"``). A
    producer still blocked then cannot be stopped (Python cannot stop a thread):
    its daemon thread ends when it returns. The producer's own exception is
    re-raised here.
    """
    box: queue.Queue = queue.Queue(maxsize=1)

    def read() -> None:
        try:
            box.put((next(iterator, END), None))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            box.put((None, error))

    asked = time.perf_counter()
    reader = threading.Thread(target=read, name="jaxfit-first-batch", daemon=True)
    reader.start()
    while True:
        try:
            item, error = box.get(timeout=WAIT_S)
            break
        except queue.Empty:
            _check_timeout(timeout, asked, lambda: where)
    reader.join(timeout=WAIT_S)  # it has put its item: it is ending
    if error is not None:
        raise error
    return item


def _check_timeout(
    timeout: float | None, asked: float, where: Callable[[], str]
) -> None:
    """Raises ``TimeoutError`` when the producer was asked for the batch
    ``where()`` names more than ``timeout`` seconds ago."""
    if timeout is None:
        return
    waited = time.perf_counter() - asked
    if waited >= timeout:
        raise TimeoutError(
            errors.expected(
                "producer_timeout",
                f"{where()} (0-based) within {timeout:g} s",
                errors.Description(f"no batch after {waited:.2f} s"),
                MSG_TIMEOUT,
            )
        )


# A block being filled is sent off after this long even if not full, so a slow
# producer never keeps the device waiting for batches it already has...
FILL_MS = 20.0
# ...and at once when its last batch took this long to come: the producer is the
# bottleneck, and a block of one costs nothing a batch's wait does not cover
# (benchmarks/prefetch.py, a producer of 10 ms a batch: 1.11x max(host, device)
# with the 20 ms deadline alone, 1.0x with this).
SLOW_MS = 5.0


class Batch:
    """One prepared (checked, converted, unpadded) batch of a stream."""

    __slots__ = ("index", "leaves", "n", "size", "weights")

    def __init__(
        self,
        leaves: list[Any],
        weights: tuple[np.ndarray, ...],
        n: int,
        index: int,
        size: int,
    ):
        self.leaves, self.weights, self.n, self.index = leaves, weights, n, index
        self.size = size  # the padded batch size (its shape bucket)


class Batcher:
    """Turns raw batches into prepared ``Batch``es, and groups of them into padded,
    masked host blocks.

    The first batch fixes the structure, feature shapes and dtypes; a later batch
    that matches them (numpy leaves, ``(x, y[, w])`` or ``{"xs", "ys"}``) takes a
    fast path of a few attribute checks; any other goes through
    ``arrays.standardize`` and the signature check, which converts it or raises
    naming its index. Every batch is padded to the largest batch size seen so far
    (a multiple of ``multiple``): that size is its shape bucket.
    """

    def __init__(
        self, argname: str, class_weight: dict[int, float] | None, multiple: int = 1
    ):
        self.argname = argname
        self.class_weight = class_weight
        self.multiple = multiple  # pad to a multiple of the devices feeding on it
        self.signature: Any = None
        self.size = 0
        self._treedef: Any = None  # of (x, y), from the first batch
        self._pair = False  # whether x and y are one array each
        self._specs: list[tuple[tuple[int, ...], np.dtype]] = []
        self._outputs = 0
        self._ones: dict[int, tuple[np.ndarray, ...]] = {}
        # (y, where) -> None, raising for labels the losses cannot take; set once
        # the model's output shapes are known
        self.check: Callable[[Any, str], None] | None = None

    def __call__(self, raw: Any, index: int) -> Batch:
        prepared = self._quick(raw)
        if prepared is None:
            prepared = self._standard(raw, index)
        leaves, weights, n = prepared
        self.size = max(self.size, -(-n // self.multiple) * self.multiple)
        return Batch(leaves, weights, n, index, self.size)

    def _quick(self, raw: Any) -> tuple[list[Any], tuple[np.ndarray, ...], int] | None:
        """A batch shaped like the first one, without the general conversion."""
        if self._treedef is None:
            return None
        weight = None
        if type(raw) is tuple and len(raw) in (2, 3):
            x, y = raw[0], raw[1]
            weight = raw[2] if len(raw) == 3 else None
        elif type(raw) is dict and len(raw) == 2 and "xs" in raw and "ys" in raw:
            x, y = raw["xs"], raw["ys"]
        else:
            return None
        if self._pair and type(x) is np.ndarray and type(y) is np.ndarray:
            leaves = [x, y]  # the common case, without flattening
        else:
            leaves, treedef = jax.tree_util.tree_flatten((x, y))
            if treedef != self._treedef:
                return None
        n = -1
        for i, (leaf, (shape, dtype)) in enumerate(zip(leaves, self._specs)):
            if type(leaf) is not np.ndarray or leaf.shape[1:] != shape:
                return None
            if leaf.dtype != dtype:
                if not (
                    (leaf.dtype == np.float64 and dtype == np.float32)
                    or (leaf.dtype == np.int64 and dtype == np.int32)
                ):
                    return None
                leaves[i] = leaf.astype(dtype)
            if n < 0:
                n = leaf.shape[0]
            elif leaf.shape[0] != n:
                return None
        if n <= 0:
            return None
        if weight is None:
            weights = self._ones.get(n)
            if weights is None:
                weights = self._ones[n] = (np.ones(n, np.float32),) * self._outputs
        elif (
            type(weight) is np.ndarray
            and weight.shape == (n,)
            and weight.dtype.kind in arrays.REAL_KINDS
        ):
            weights = (weight.astype(np.float32, copy=False),) * self._outputs
        else:
            return None
        return leaves, weights, n

    def _standard(
        self, raw: Any, index: int
    ) -> tuple[list[Any], tuple[np.ndarray, ...], int]:
        x, y, sample_weight = parse_batch(raw, index, self.argname)
        prefix = f"{self.argname} batch {index}: "
        data, n = arrays.standardize(x, y, sample_weight, prefix)
        x, y = data["x"], data["y"]
        signature = jax.tree.map(lambda a: (a.shape[1:], a.dtype.name), (x, y))
        structure = jax.tree.structure((x, y))
        if self.signature is None:
            self.signature = (structure, signature)
            leaves, self._treedef = jax.tree_util.tree_flatten((x, y))
            self._pair = self._treedef == jax.tree.structure((0, 0))
            self._specs = [(a.shape[1:], a.dtype) for a in leaves]
            self._outputs = len(jax.tree.leaves(y))
        elif (structure, signature) != self.signature:
            raise ValueError(
                f"{self.argname}: batch {index} has structure/shapes "
                f"{_describe(structure, signature)}, but batch 0 had "
                f"{_describe(*self.signature)} (feature shapes and dtypes, without the "
                "batch axis). Every batch must have the same structure, feature shapes "
                "and dtypes; only the batch size may vary."
            )
        leaves = [np.asarray(a) for a in jax.tree.leaves((x, y))]
        return leaves, tuple(data["sample_weight"]), n

    def check_group(self, group: list[Batch]) -> None:
        """Labels and class weights of a group of batches, checked at once; an
        error names the first batch that has the problem."""
        if self.check is None and self.class_weight is None:
            return
        try:
            self._check(group, "")
        except ValueError:
            for batch in group:  # find the batch to name (and its own message)
                self._check([batch], f"{self.argname} batch {batch.index}: ")
            raise

    def _check(self, group: list[Batch], prefix: str) -> None:
        y = self._y(group)
        if self.check is not None:
            self.check(y, prefix + "y")
        if self.class_weight is not None:
            checks.check_class_weight(self.class_weight, y, prefix + "y")

    def _y(self, group: list[Batch]) -> Any:
        """The labels of the group's batches, concatenated (no padding rows)."""
        leaves = [
            np.concatenate([b.leaves[i] for b in group])
            if len(group) > 1
            else group[0].leaves[i]
            for i in range(len(self._specs))
        ]
        return jax.tree.unflatten(self._treedef, leaves)[1]

    def block(self, group: list[Batch], slots: int = 0) -> dict[str, Any]:
        """The group's batches stacked into one padded, masked host block of
        ``slots`` batches (at least the group's; the extra ones all padding)."""
        size, slots = group[0].size, max(slots, len(group))
        leaves = [
            _stack([b.leaves[i] for b in group], slots, size)
            for i in range(len(self._specs))
        ]
        x, y = jax.tree.unflatten(self._treedef, leaves)
        full = slots == len(group) and all(batch.n == size for batch in group)
        if full and all(b.weights is self._ones.get(size) for b in group):
            ones = np.ones((slots, size), np.float32)  # no sample weights given
            weights: tuple[np.ndarray, ...] = (ones,) * self._outputs
        else:
            weights = tuple(
                _stack([b.weights[o] for b in group], slots, size)
                for o in range(self._outputs)
            )
        if self.class_weight is not None:
            per_class = _stack(
                [
                    arrays.class_weights(
                        jax.tree.unflatten(self._treedef, b.leaves)[1],
                        self.class_weight,
                    )
                    for b in group
                ],
                slots,
                size,
            )
            weights = tuple(w * per_class for w in weights)
        if full:
            mask = np.ones((slots, size), np.float32)
        else:
            mask = np.zeros((slots, size), np.float32)
            for i, batch in enumerate(group):
                mask[i, : batch.n] = 1.0
        return {"x": x, "y": y, "sample_weight": weights, "mask": mask}


def _stack(arrays_: list[np.ndarray], slots: int, size: int) -> np.ndarray:
    """``[n_i, ...]`` arrays as one ``[slots, size, ...]`` array, zero-padded."""
    if len(arrays_) == slots and all(a.shape[0] == size for a in arrays_):
        return np.stack(arrays_)
    first = arrays_[0]
    out = np.zeros((slots, size, *first.shape[1:]), first.dtype)
    for i, a in enumerate(arrays_):
        out[i, : a.shape[0]] = a
    return out


def _describe(structure: Any, signature: Any) -> str:
    """A batch's ``(x, y)`` by ``errors.describe``: each leaf's feature shape and
    dtype (without the batch axis), in the batch's structure."""
    leaves = jax.tree.leaves(
        signature,
        is_leaf=lambda v: (
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str)
        ),
    )
    return errors.describe(
        jax.tree.unflatten(
            structure,
            [
                errors.Description(errors.array_spec(shape, dtype))
                for shape, dtype in leaves
            ],
        )
    )


class _Failure:
    def __init__(self, error: BaseException, index: int):
        self.error, self.index = error, index


class _AtBatch(Exception):
    """An error of batch ``index``, found after the batches before it were sent."""

    def __init__(self, error: BaseException, index: int):
        super().__init__(str(error))
        self.error, self.index = error, index


_END = object()


class Feeder:
    """Reads raw batches on a background thread and groups them; iterating stacks
    each group into a fused block and puts it on the device.

    A block has ``size`` slots and holds up to ``steps()`` (the yield policy's
    current block length, read as each group fills; ``size`` without it)
    consecutive batches of one shape bucket; the empty slots are skipped by the
    compiled step. It is sent off early when a batch opens a new bucket, the
    stream ends, an epoch ends (every ``period`` batches, counted from the
    stream's start), an error comes (the batches before it are sent first), it
    has been filling for ``fill_s`` seconds, or (with ``fill_s``) its last batch
    took ``SLOW_MS`` to come. A batch of no rows is skipped: it is not a step
    (nor counted in ``period`` or ``skip``), whatever the block length. Iterating
    yields ``(device block, number of batches)``; the thread reads ``depth``
    groups ahead, and each block is put on the device while the one before it
    runs (dispatch is asynchronous). The first ``skip`` batches are read and
    prepared but not sent (resuming mid-stream: the batcher's checks and padding
    size are as if they had run), and at most ``limit`` are read; indices count
    from the stream's start (the first one is ``first``: batches of no rows read
    before it). Producer errors are re-raised in the consumer naming the batch.

    The consumer waits for a block in ``WAIT_S`` slices (only when none is
    ready), so Ctrl-C is delivered at once; with ``timeout`` (seconds), a
    producer that has given no batch for that long raises ``TimeoutError``
    naming the batch (``where(index)``, e.g. ``"dataset batch 3 of epoch 0"``).
    ``close()`` stops the thread and joins it; it runs when iteration ends, fails,
    or the consumer stops early. A thread blocked inside the producer's
    ``__next__`` cannot be stopped (Python cannot stop a thread): ``close`` waits
    ``CLOSE_GRACE_S`` for it (not at all after an error or a Ctrl-C), then leaves
    the daemon thread to end by itself when the producer returns.
    """

    def __init__(
        self,
        items: Iterator[Any],
        batcher: Batcher,
        put: Callable[[Any], Any] = jax.device_put,
        *,
        size: int = 1,
        steps: Callable[[], int] | None = None,
        fill_s: float | None = None,
        period: int | None = None,
        depth: int = 2,
        skip: int = 0,
        limit: int | None = None,
        first: int = 0,
        timeout: float | None = None,
        where: Callable[[int], str] | None = None,
    ):
        self._items, self._batcher, self._put_device = items, batcher, put
        self._most, self._first, self._limit = size, first, limit
        self._steps = steps or (lambda: size)
        self._fill_s, self._period = fill_s, period
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._skip = skip
        self._timeout = timeout
        self._where = where or (lambda index: f"{batcher.argname} batch {index}")
        # (index, when) while the thread waits for the producer's batch ``index``
        self._asked: tuple[int, float] | None = None
        self._closed = self._left = False
        self._held: Any = None  # an item ``wait`` took from the queue
        self._thread = threading.Thread(
            target=self._run, name="jaxfit-feeder", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _send(self, group: list[Batch]) -> bool:
        """Checks the group and sends it as blocks; False when stopped. A check
        error sends the batches before the failing one, then raises ``_AtBatch``."""
        try:
            self._batcher.check_group(group)
        except ValueError as error:
            bad = next(i for i, b in enumerate(group) if _fails(self._batcher, b))
            if bad and not self._send(group[:bad]):
                return False
            raise _AtBatch(error, group[bad].index) from None
        sent = self._put(group)
        time.sleep(0)  # hands the GIL to the loop now, not after the switch interval
        return sent

    def _due(
        self, group: list[Batch], opened: float, index: int, waited: float
    ) -> bool:
        if len(group) >= min(self._most, self._steps()):
            return True
        if self._period is not None and (index + 1) % self._period == 0:
            return True  # an epoch of a stream continued across epochs ends here
        if self._fill_s is None:
            return False
        return (
            waited >= SLOW_MS / 1000.0 or time.perf_counter() - opened >= self._fill_s
        )

    def _run(self) -> None:
        # index: the producer's batches (what messages name); steps: those with rows
        index, steps, opened = self._first, 0, 0.0
        group: list[Any] = []
        try:
            items = iter(self._items)
            while self._limit is None or steps < self._limit:
                asked = time.perf_counter()
                self._asked = (index, asked)  # the producer's batch index awaited
                raw = next(items, END)
                self._asked = None
                if raw is END:
                    break
                waited = time.perf_counter() - asked  # the producer's time
                if self._stop.is_set():
                    return
                batch = self._batcher(raw, index)
                index += 1
                if batch.n == 0:  # no rows: not a step
                    continue
                steps += 1
                if steps <= self._skip:  # ran before the resumed position
                    continue
                if group and batch.size != group[0].size:  # a new shape bucket
                    if not self._send(group):
                        return
                    group = []
                if not group:
                    opened = time.perf_counter()
                group.append(batch)
                if self._due(group, opened, steps - 1, waited):
                    if not self._send(group):
                        return
                    group = []
            if group and not self._send(group):
                return
            self._put(_END)
        except _AtBatch as failure:
            self._put(_Failure(failure.error, failure.index))
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            self._asked = None
            try:  # the batches read before the failure still train
                if group and not self._send(group):
                    return
            except _AtBatch as failure:
                self._put(_Failure(failure.error, failure.index))
                return
            self._put(_Failure(error, index))

    def __iter__(self) -> Feeder:
        return self

    def __next__(self) -> tuple[Any, int]:
        if self._closed:
            raise StopIteration
        try:
            item = self._take()
            if isinstance(item, _Failure):
                error = item.error
                note = f"jaxfit: raised while preparing batch {item.index} of the data"
                if hasattr(error, "add_note"):
                    error.add_note(note)
                raise error
            if item is not _END:
                # stacked and put here, by the loop, while the device runs the
                # block before: the thread is left to the producer
                block = self._put_device(self._batcher.block(item, self._most))
                return block, len(item)
        except BaseException:
            self.close(grace=0.0)  # a Ctrl-C, a timeout or an error: leave now
            raise
        self.close()
        raise StopIteration

    def ready(self) -> bool:
        """Whether ``__next__`` has an item to take without waiting."""
        return self._held is not None or not self._queue.empty()

    def wait(self) -> None:
        """Waits until the next item is ready (a block, the end or an error)
        without taking it, or until the producer timeout is due (``__next__``
        then raises it): what ``fit_dataset_async`` waits for off the event loop,
        on another thread. Never raises."""
        while not self._closed and self._held is None:
            try:
                self._held = self._queue.get(timeout=WAIT_S)
            except queue.Empty:
                asked = self._asked
                if not self._thread.is_alive() or (
                    asked is not None
                    and self._timeout is not None
                    and time.perf_counter() - asked[1] >= self._timeout
                ):
                    return

    def _take(self) -> Any:
        """The next item of the queue; waits in ``WAIT_S`` slices while it is empty
        (Ctrl-C lands between them), checking the producer timeout."""
        held, self._held = self._held, None
        if held is not None:
            return held
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        while True:
            try:
                return self._queue.get(timeout=WAIT_S)
            except queue.Empty:
                asked = self._asked
                if asked is not None:
                    where = functools.partial(self._where, asked[0])
                    _check_timeout(self._timeout, asked[1], where)
                elif not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(
                        f"jaxfit: the feeder thread of {self._batcher.argname} ended "
                        "without a batch, an end or an error (a jaxfit bug)."
                    ) from None

    def close(self, grace: float = CLOSE_GRACE_S) -> None:
        """Stops the thread and joins it; one blocked inside the producer is
        waited for ``grace`` seconds, then left (see the class docstring)."""
        self._closed = True
        self._stop.set()
        deadline = None
        while not self._left and self._thread.is_alive():
            try:
                self._queue.get_nowait()  # unblocks a put
            except queue.Empty:
                pass
            if self._asked is not None:  # inside the producer's __next__
                now = time.perf_counter()
                deadline = now + grace if deadline is None else deadline
                if now >= deadline:
                    self._left = True  # ends by itself when the producer returns
                    return
            self._thread.join(timeout=0.01)


def _fails(batcher: Batcher, batch: Batch) -> bool:
    try:
        batcher.check_group([batch])
    except ValueError:
        return True
    return False
