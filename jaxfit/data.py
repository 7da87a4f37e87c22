"""Data helpers for ``Trainer.fit_dataset``: in-memory arrays as a grain pipeline.

``jaxfit.data.from_arrays(x, y, batch_size=32)`` returns an ``ArrayDataset``, an
iterable of ``{"xs", "ys"[, "sample_weight"]}`` batches reshuffled at each epoch,
for ``trainer.fit_dataset`` (needs the ``data`` extra: grain).
"""

from jaxfit._src import errors as _errors
from jaxfit._src.data.grain_source import ArrayDataset as ArrayDataset
from jaxfit._src.data.grain_source import from_arrays as _from_arrays

from_arrays = _errors.filter_traceback(_from_arrays)

__all__ = ["ArrayDataset", "from_arrays"]
