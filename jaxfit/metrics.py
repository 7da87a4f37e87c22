"""Metrics: per-sample metric functions, on-device mean accumulators, ``resolve``."""

from jaxfit._src.core.metrics import MeanState as MeanState
from jaxfit._src.core.metrics import binary_accuracy as binary_accuracy
from jaxfit._src.core.metrics import categorical_accuracy as categorical_accuracy
from jaxfit._src.core.metrics import compute as compute
from jaxfit._src.core.metrics import empty as empty
from jaxfit._src.core.metrics import merge as merge
from jaxfit._src.core.metrics import name_of as name_of
from jaxfit._src.core.metrics import names as names
from jaxfit._src.core.metrics import resolve as resolve
from jaxfit._src.core.metrics import (
    sparse_categorical_accuracy as sparse_categorical_accuracy,
)
from jaxfit._src.core.metrics import (
    sparse_top_k_categorical_accuracy as sparse_top_k_categorical_accuracy,
)
from jaxfit._src.core.metrics import (
    top_k_categorical_accuracy as top_k_categorical_accuracy,
)
from jaxfit._src.core.metrics import update as update

__all__ = [
    "MeanState",
    "binary_accuracy",
    "categorical_accuracy",
    "compute",
    "empty",
    "merge",
    "name_of",
    "names",
    "resolve",
    "sparse_categorical_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
    "update",
]
