"""Device memory: a train step too large for the device, refused before it runs,
and XLA's run-time ``RESOURCE_EXHAUSTED`` turned into one line that says what to do.

Before the first call of each train program of a fit (the first block; later, a
stream's block of a new padded size), where JAX reports the device's limit
(``device.memory_stats()["bytes_limit"]``: GPUs and TPUs; not XLA:CPU), the
program is lowered and compiled ahead (``jit(...).lower(...).compile()``: the
very executable the call then runs, so nothing compiles twice) and its
``memory_analysis()`` (arguments + outputs + temporaries, less the donated
buffers the outputs reuse) is compared with that limit.

At run time, a dispatch that fails with ``RESOURCE_EXHAUSTED`` becomes
``DeviceMemoryError``. XLA may free the buffers donated to a call that fails
(XLA:CPU does, measured with ``Array.is_deleted()``), so the loop holds an intact
state through each program's first call, when an allocation too large fails
(see ``loop._train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax

from jaxfit._src.core.state import Position

# A seam for tests: the device limit in bytes to use instead of what the devices
# report (None: ask them). A CPU test sets a tiny one to see the refusal.
LIMIT_OVERRIDE: int | None = None


class DeviceMemoryError(MemoryError):
    """The train step does not fit in device memory (before it runs, or
    ``RESOURCE_EXHAUSTED`` from XLA while it ran); the message names
    ``batch_size`` and the figures."""


def device_limit(devices: Any) -> int | None:
    """The smallest ``bytes_limit`` among ``devices``, or None where JAX reports
    none (XLA:CPU)."""
    if LIMIT_OVERRIDE is not None:
        return LIMIT_OVERRIDE
    limits = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - a backend without memory statistics
            return None
        if not stats or not stats.get("bytes_limit"):
            return None
        limits.append(int(stats["bytes_limit"]))
    return min(limits) if limits else None


def needed(executable: Any) -> int | None:
    """The bytes a compiled program holds on one device while it runs, or None
    when the backend does not say."""
    try:
        stats = executable.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if stats is None:
        return None
    total = (
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return max(int(total), 0)


def per_device_bytes(tree: Any) -> int:
    """The bytes of ``tree``'s arrays held on one device (the first shard's)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shards = getattr(leaf, "addressable_shards", None)
        total += int(shards[0].data.nbytes) if shards else int(leaf.nbytes)
    return total


def size(num_bytes: float) -> str:
    """``"512.0 MiB"``, ``"1.5 GiB"``: what messages quote."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{int(num_bytes)} bytes"


def _advice(call: str, batch_size: int) -> str:
    if call == "fit_dataset":
        smaller = f"Yield batches smaller than {batch_size} from the dataset"
    else:
        smaller = (
            "Pass a smaller batch_size (with accumulate_steps=k the effective batch "
            "stays k times larger)"
        )
    return f"{smaller}, or compute in less: Trainer(precision='mixed_bfloat16')."


def too_large(call: str, batch_size: int, need: int, limit: int) -> DeviceMemoryError:
    """The refusal before a train program's first call."""
    return DeviceMemoryError(
        f"{call}: the train step needs {size(need)} of device memory at "
        f"batch_size={batch_size}, more than the device's {size(limit)}; it did "
        f"not run (trainer.state is the state before it). {_advice(call, batch_size)}"
    )


RUNTIME_ERROR: type[Exception] = getattr(jax.errors, "JaxRuntimeError", RuntimeError)


def exhausted(error: BaseException) -> bool:
    """Whether ``error`` is XLA's out-of-memory (``RESOURCE_EXHAUSTED``)."""
    return isinstance(error, RUNTIME_ERROR) and "RESOURCE_EXHAUSTED" in str(error)


def ran_out(
    call: str, batch_size: int, error: BaseException, kept: str
) -> DeviceMemoryError:
    """XLA's ``RESOURCE_EXHAUSTED`` from a train call, in one line; ``kept`` says
    what ``trainer.state`` is now."""
    text = str(error).strip()
    cause = text.splitlines()[0].rstrip(".") if text else type(error).__name__
    return DeviceMemoryError(
        f"{call}: the device ran out of memory in the train step at "
        f"batch_size={batch_size} ({cause}); {kept}. {_advice(call, batch_size)}"
    )


@dataclasses.dataclass
class Spare:
    """An intact copy of the state, held from before a train program's first call
    until a sync confirms it ran (the next yield point or epoch end).

    Attributes:
      of: the state whose values ``intact`` holds, while no call has run on it.
      intact: that state in buffers no call donates.
      position: where training stood then (None until the first call).
    """

    of: Any
    intact: Any
    position: Position | None = None


def before_first_call(
    session: Any, run: Any, totals: Any, block: Any, call: str, batch_size: int
) -> None:
    """Before a train program's first call in a fit.

    Where the device reports its memory limit, the program is lowered and
    compiled ahead (the executable the call then runs) and refused if it cannot
    fit, before anything is donated. Then an intact state is held through the
    call until a sync confirms it: the state the fit copied at its start for the
    first call (no copy made), else a one-off device copy; none when holding it
    would itself exceed the limit.
    """
    sharding = getattr(block["mask"], "sharding", None)
    limit = device_limit(
        sharding.addressable_devices if sharding is not None else jax.local_devices()
    )
    need = None
    if limit is not None:
        need = needed(run.lower(session.state, totals, block).compile())
        if need is not None and need > limit:
            spare, session.spare = session.spare, None
            if spare is not None and spare.of is session.state:
                session.state = spare.intact  # the very state the fit started from
            raise too_large(call, batch_size, need, limit)
    spare = session.spare
    if spare is not None and spare.position is None:  # the fit's start state:
        spare = spare if spare.of is session.state else None  # unless replaced
    if spare is None and not (
        need is not None
        and limit is not None
        and need + per_device_bytes(session.state) > limit
    ):
        copy = lambda a: jax.device_put(a, a.sharding, may_alias=False)  # noqa: E731
        spare = Spare(session.state, jax.tree.map(copy, session.state))
    if spare is not None and spare.position is None:
        spare.position = session.position
    session.spare = spare


@contextlib.contextmanager
def failures(session: Any, call: str, batch_size: int) -> Iterator[None]:
    """Around a sync, where XLA reports a train call that failed after its
    dispatch: the state before it is put back (``failed``). When the sync
    succeeds, every call before it ran, and the spare is let go."""
    try:
        yield
        if session.spare is not None:
            # the calls since the spare ran (a yield point may fetch nothing):
            # one wait per new program and fit
            jax.block_until_ready(session.state)
    except RUNTIME_ERROR as error:
        failed(session, call, batch_size, error)
        raise
    session.spare = None


def failed(
    session: Any, call: str, batch_size: int, error: BaseException, state: Any = None
) -> None:
    """After XLA failed a train call (``state``: its input, when the dispatch
    itself raised): puts the state before it back (``restore``) and raises
    ``DeviceMemoryError`` for out of memory; returns for the caller to re-raise
    any other error."""
    kept = restore(session, state)
    if exhausted(error):
        raise ran_out(call, batch_size, error, kept) from error


@contextlib.contextmanager
def evaluating(rows: list[int]) -> Iterator[None]:
    """Around an evaluation (``evaluate``, validation): XLA's out of memory as
    ``DeviceMemoryError``; the state is not donated to the eval step, so it is
    intact. ``rows[0]``: the batch size of the block last dispatched."""
    try:
        yield
    except RUNTIME_ERROR as error:
        if not exhausted(error):
            raise
        text = str(error).strip()
        cause = text.splitlines()[0].rstrip(".") if text else type(error).__name__
        raise DeviceMemoryError(
            f"evaluation: the device ran out of memory in the eval step at "
            f"batch_size={rows[0]} ({cause}); trainer.state is unchanged (the eval "
            "step does not consume it). Evaluate in smaller batches (batch_size, "
            "or validation_batch_size in fit), or compute in less: "
            "Trainer(precision='mixed_bfloat16')."
        ) from error


def restore(session: Any, state: Any = None) -> str:
    """After a failed call: the state before it back in ``session``, the
    dispatch's own input when XLA kept its donated buffers, else the spare.
    Returns what ``trainer.state`` now is, for the message."""
    spare, session.spare = session.spare, None
    if state is not None and not any(
        leaf.is_deleted() for leaf in jax.tree.leaves(state)
    ):
        session.state = state
        return "trainer.state is the state before that call"
    if spare is not None and spare.position is not None:
        session.state = spare.intact
        where = spare.position
        session.position = Position(where.epoch, where.batch)
        return (
            "trainer.state is the state before that step first ran "
            f"(epoch {where.epoch}, after {where.batch} of its batches)"
        )
    return (
        "the state that call consumed is lost (this backend frees the buffers "
        "donated to a failed call): restore a checkpoint or assign trainer.state "
        "before training on"
    )
