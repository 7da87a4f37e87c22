"""The body of ``jaxfit.distributed`` (its docstring says what it is for):
``initialize`` wraps ``jax.distributed.initialize``; ``is_primary``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    **kwargs: Any,
) -> None:
    """``jax.distributed.initialize`` with jaxfit's defaults.

    Without arguments, JAX detects the cluster (Cloud TPU pods, SLURM, Open MPI,
    Kubernetes); otherwise pass the coordinator's ``host:port``, the number of
    processes and this process's id. On CPU, collectives across processes use
    gloo.

    Args:
      coordinator_address: ``"host:port"`` of process 0. Defaults to `None`
        (detected).
      num_processes: how many processes take part. Defaults to `None` (detected).
      process_id: this process's index. Defaults to `None` (detected).
      local_device_ids: the local devices this process uses. Defaults to `None`.
      **kwargs: passed on to ``jax.distributed.initialize``.

    Example:
      >>> import jaxfit
      >>> callable(jaxfit.distributed.initialize)
      True
    """
    try:  # CPU processes need a collectives backend to talk to each other
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
        pass
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        **kwargs,
    )


def is_primary() -> bool:
    """Whether this is process 0 (the one that prints and writes files)."""
    return jax.process_index() == 0


__all__ = ["initialize", "is_primary"]
