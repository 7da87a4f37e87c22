"""The feeder: a stream's batches read, checked and grouped into fused blocks on a
background thread, and the waits for a producer that cannot hang the caller.

A background thread (``Feeder``) reads raw batches, prepares them with the
stream's ``iterables.Batcher``, groups consecutive ones of a shape bucket into
blocks (up to the yield policy's current length; see ``Feeder`` for when a
block ends early) and hands them to the loop, which stacks each block and puts
it on the device while the one before it runs; its exceptions are re-raised in
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

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.data.iterables import Batch, Batcher

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
