"""Losses: loss objects with Keras' arguments (``CategoricalCrossentropy(label_smoothing=0.1)``),
per-sample loss functions ``(y_true, y_pred) -> (batch,)`` and ``get``."""

from jaxfit._src.core.loss_objects import BinaryCrossentropy as BinaryCrossentropy
from jaxfit._src.core.loss_objects import (
    CategoricalCrossentropy as CategoricalCrossentropy,
)
from jaxfit._src.core.loss_objects import Hinge as Hinge
from jaxfit._src.core.loss_objects import Huber as Huber
from jaxfit._src.core.loss_objects import KLDivergence as KLDivergence
from jaxfit._src.core.loss_objects import LogCosh as LogCosh
from jaxfit._src.core.loss_objects import Loss as Loss
from jaxfit._src.core.loss_objects import LossFunctionWrapper as LossFunctionWrapper
from jaxfit._src.core.loss_objects import MeanAbsoluteError as MeanAbsoluteError
from jaxfit._src.core.loss_objects import MeanSquaredError as MeanSquaredError
from jaxfit._src.core.loss_objects import (
    SparseCategoricalCrossentropy as SparseCategoricalCrossentropy,
)
from jaxfit._src.core.loss_objects import SquaredHinge as SquaredHinge
from jaxfit._src.core.losses import binary_crossentropy as binary_crossentropy
from jaxfit._src.core.losses import (
    binary_crossentropy_from_logits as binary_crossentropy_from_logits,
)
from jaxfit._src.core.losses import categorical_crossentropy as categorical_crossentropy
from jaxfit._src.core.losses import (
    categorical_crossentropy_from_logits as categorical_crossentropy_from_logits,
)
from jaxfit._src.core.losses import get as get
from jaxfit._src.core.losses import hinge as hinge
from jaxfit._src.core.losses import huber as huber
from jaxfit._src.core.losses import kl_divergence as kl_divergence
from jaxfit._src.core.losses import log_cosh as log_cosh
from jaxfit._src.core.losses import mean_absolute_error as mean_absolute_error
from jaxfit._src.core.losses import mean_squared_error as mean_squared_error
from jaxfit._src.core.losses import name_of as name_of
from jaxfit._src.core.losses import names as names
from jaxfit._src.core.losses import (
    sparse_categorical_crossentropy as sparse_categorical_crossentropy,
)
from jaxfit._src.core.losses import (
    sparse_categorical_crossentropy_from_logits as sparse_categorical_crossentropy_from_logits,
)
from jaxfit._src.core.losses import squared_hinge as squared_hinge

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "Loss",
    "LossFunctionWrapper",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "binary_crossentropy",
    "binary_crossentropy_from_logits",
    "categorical_crossentropy",
    "categorical_crossentropy_from_logits",
    "get",
    "hinge",
    "huber",
    "kl_divergence",
    "log_cosh",
    "mean_absolute_error",
    "mean_squared_error",
    "name_of",
    "names",
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy_from_logits",
    "squared_hinge",
]
