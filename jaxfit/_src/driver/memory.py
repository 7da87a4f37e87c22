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

from typing import Any

import jax

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
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if num_bytes >= scale or unit == "MiB":
            return f"{num_bytes / scale:.1f} {unit}"
    raise AssertionError("unreachable")


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
