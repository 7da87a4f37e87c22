"""The loop's generator protocol: what its fronts see, and the waits before it blocks.

The loop is a generator (``Steps``): it yields ``None`` at each yield point and
a ``Wait`` before anything that blocks (a program's first compile, the device,
a stream's producer). The sync front (``finish``) skips the ``Wait`` items and
the loop blocks where it would anyway; ``fit_async`` runs each on a worker
thread first, so the event loop never waits. ``yield_points`` is the public
iterator (``iterate_fit``): the yield points only. Here too: the blocks' batch
logs fetched and delivered to the batch hooks (``deliver``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src.core import metrics, placement
from jaxfit._src.driver import warmup as warmup_lib
from jaxfit._src.driver.callback import CallbackList

# (device block, number of real batches in it: they come first, the rest of its
# slots are padding the compiled block skips)
Blocks = Iterable[tuple[Any, int]]
Steps = Generator[Any, None, Any]  # yields None (yield points) and Wait


class Wait:
    """Something the loop is about to block on: ``fit_async`` calls it on another
    thread first. It never raises (the loop's own wait raises what it would)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn

    def __call__(self) -> None:
        try:
            self.fn()
        except Exception:  # noqa: BLE001 - raised again where the loop waits
            pass


def yield_points(steps: Steps) -> Iterator[None]:
    """``steps`` without its ``Wait`` items: each ``next`` runs to the next
    yield point; closing it closes ``steps``."""
    try:
        for item in steps:
            if item is None:
                yield
    finally:
        steps.close()


def finish(steps: Steps) -> Any:
    """Runs ``steps`` to its end, skipping its ``Wait`` items (the sync front),
    and returns its value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def host_values(
    names: list[str], sums: dict[str, Any], j: int | None = None, members: int = 0
) -> dict[str, Any]:
    """Each log's value, in ``names`` order: every fetched state through its
    metric's ``compute`` on the host (``total / count`` for a mean, 0 where the
    count is 0); a vector value gives ``<key>_0``, ``<key>_1``... ``j`` picks
    one batch of stacked batch logs. ``members`` > 0: a population's sums (a
    member axis after the batch axis); each value is then a float64 array of
    one value per member."""
    if j is not None:
        sums = jax.tree.map(lambda a: np.asarray(a)[j], sums)
    if members:
        per_member = [
            host_values(names, jax.tree.map(lambda a, m=m: np.asarray(a)[m], sums))
            for m in range(members)
        ]
        return {name: np.array([v[name] for v in per_member]) for name in names}
    values: dict[str, float] = {}
    for key, state in sums.items():
        values.update(metrics.host_values(key, state))
    return {name: values[name] for name in names}


def deliver(
    names, pending, first_batch, callbacks: CallbackList, begin, end, members=0
):
    """Fetches pending batch logs in one transfer and calls the batch hooks
    (``members``: as in ``host_values``)."""
    if not (callbacks.wants(begin) or callbacks.wants(end)):
        # Nobody reads per-batch logs: only the last batch's, for on_yield.
        batch = first_batch + sum(real for _, real in pending)
        last = {}
        if callbacks.wants("on_yield"):
            logs, real = pending[-1]
            last = host_values(names, placement.fetch(logs), real - 1, members)
        pending.clear()
        return batch, last
    fetched = placement.fetch([logs for logs, _ in pending])
    batch, last = first_batch, {}
    for logs, (_, real) in zip(fetched, pending):
        for j in range(real):
            callbacks.call(begin, batch, logs={})
            last = host_values(names, logs, j, members)
            callbacks.call(end, batch, logs=last)
            batch += 1
    pending.clear()
    return batch, last


@contextlib.contextmanager
def closing(blocks: Blocks) -> Iterator[Iterator[tuple[Any, int]]]:
    """Iterates ``blocks`` and closes it (if it can be closed) however we leave."""
    iterator = iter(blocks)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def next_block(blocks: Iterator[Any]) -> Generator[Any, None, Any]:
    """The next block (``None`` at the end); a stream's feeder is waited for
    first through a ``Wait``."""
    wait = getattr(blocks, "wait", None)
    if wait is not None and not getattr(blocks, "ready", lambda: False)():
        yield Wait(wait)
    return next(blocks, None)


def sync(tree: Any) -> Generator[Any, None, None]:
    """A ``Wait`` for ``tree``'s arrays unless they are ready; the caller then
    blocks on them (where a failed call's error is turned into jaxfit's)."""
    if not all(_ready(leaf) for leaf in jax.tree.leaves(tree)):
        yield Wait(lambda: jax.block_until_ready(tree))


def _ready(leaf: Any) -> bool:
    is_ready = getattr(leaf, "is_ready", None)
    return is_ready is None or bool(is_ready())


def compile_first(programs: set, jitted: Any, *args: Any) -> Generator[Any, None, bool]:
    """Before a program's first call (of this block shape): a ``Wait`` that
    compiles it (``fit_async`` compiles off the event loop; JAX keeps the
    executable for the call). True when this is that first call."""
    shape = args[-1]["mask"].shape
    if shape in programs:
        return False
    programs.add(shape)
    specs = tuple(warmup_lib.specs(arg) for arg in args)
    yield Wait(lambda: jitted.lower(*specs).compile())
    return True


async def off_loop(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a worker thread, awaited."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def drive(steps: Steps) -> None:
    """Runs the loop's generator on the event loop: at a yield point the other
    coroutines run, and a ``Wait`` runs on a worker thread (the loop's own wait
    after it is then short). However it ends (an error, a cancel), the
    generator is closed: the fit ends as an interrupt would."""
    try:
        for item in steps:
            if item is None:
                await asyncio.sleep(0)
            else:
                await off_loop(item)
    finally:
        steps.close()


def restored_totals(template: Any, restored: Any) -> Any:
    """An epoch's running totals read back from a backup, in ``template``'s types.

    A backup keeps the totals as nested dicts keyed by field name (a mean's
    ``total`` and ``count``, a metric object's ``sums``); ``template`` (the
    compiled empty totals) gives the types back, each leaf found by its path.

    Args:
      template: the empty totals of the fit's compiled step.
      restored: the totals as restored (nested dicts of arrays), or ``None``
        at an epoch's start.

    Returns:
      ``template``'s structure holding the restored arrays (``template`` itself
      when ``restored`` is ``None``).

    Raises:
      ValueError: the backup's totals are not those of this fit's logs.
    """
    if restored is None:
        return template
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, _ in paths:
        node = restored
        for key in path:
            name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
            if not isinstance(node, dict) or name not in node:
                raise ValueError(
                    "the backup's running totals do not match this fit's logs "
                    f"(no {jax.tree_util.keystr(path)} among {sorted(restored)}); "
                    "resume with the metrics the backup was written with."
                )
            node = node[name]
        leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)
