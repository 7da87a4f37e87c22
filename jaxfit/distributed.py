"""Multi-process training on JAX's own runtime (TPU pods, multi-node GPU, SLURM).

Call ``jaxfit.distributed.initialize()`` once per process, before any other JAX
call; then build the ``Trainer`` as usual: ``mesh="auto"`` spans every device of
every process. Each process calls ``fit`` with the same arrays and feeds only its
own rows of each global batch; only process 0 prints progress and writes logs;
``stop_training`` is decided on process 0 and broadcast, so every process stops
at the same point.
"""

from jaxfit._src.app.distributed import initialize as initialize
from jaxfit._src.app.distributed import is_primary as is_primary

__all__ = ["initialize", "is_primary"]
