"""Metrics: metric objects (``AUC``, ``Precision``, ``Recall``, ``F1Score``...),
per-sample metric functions, on-device mean accumulators, ``resolve``."""

from jaxfit._src.core.confusion_metrics import AUC as AUC
from jaxfit._src.core.confusion_metrics import F1Score as F1Score
from jaxfit._src.core.confusion_metrics import FBetaScore as FBetaScore
from jaxfit._src.core.confusion_metrics import Precision as Precision
from jaxfit._src.core.confusion_metrics import Recall as Recall
from jaxfit._src.core.metric_base import Metric as Metric
from jaxfit._src.core.metric_base import MetricState as MetricState
from jaxfit._src.core.metric_objects import BinaryAccuracy as BinaryAccuracy
from jaxfit._src.core.metric_objects import CategoricalAccuracy as CategoricalAccuracy
from jaxfit._src.core.metric_objects import MeanMetricWrapper as MeanMetricWrapper
from jaxfit._src.core.metric_objects import (
    SparseCategoricalAccuracy as SparseCategoricalAccuracy,
)
from jaxfit._src.core.metric_objects import (
    SparseTopKCategoricalAccuracy as SparseTopKCategoricalAccuracy,
)
from jaxfit._src.core.metric_objects import (
    TopKCategoricalAccuracy as TopKCategoricalAccuracy,
)
from jaxfit._src.core.metric_objects import resolve as resolve
from jaxfit._src.core.metrics import MeanState as MeanState
from jaxfit._src.core.metrics import binary_accuracy as binary_accuracy
from jaxfit._src.core.metrics import categorical_accuracy as categorical_accuracy
from jaxfit._src.core.metrics import compute as compute
from jaxfit._src.core.metrics import empty as empty
from jaxfit._src.core.metrics import merge as merge
from jaxfit._src.core.metrics import name_of as name_of
from jaxfit._src.core.metrics import names as names
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
    "AUC",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "F1Score",
    "FBetaScore",
    "MeanMetricWrapper",
    "MeanState",
    "Metric",
    "MetricState",
    "Precision",
    "Recall",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
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
