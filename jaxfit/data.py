"""Data helpers for ``Trainer.fit_dataset``."""

from jaxfit._src.data.grain_source import ArrayDataset as ArrayDataset
from jaxfit._src.data.grain_source import from_arrays as from_arrays

__all__ = ["ArrayDataset", "from_arrays"]
