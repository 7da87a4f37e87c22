"""jaxfit: Keras / TensorFlow.js ``fit()`` for pure JAX functions, compiled once."""

from jaxfit import callbacks as callbacks
from jaxfit import data as data
from jaxfit import losses as losses
from jaxfit import metrics as metrics
from jaxfit._src.core.model import Model as Model
from jaxfit._src.core.state import TrainState as TrainState
from jaxfit._src.driver.history import History as History
from jaxfit._src.driver.trainer import Trainer as Trainer

__version__ = "0.1.0"

__all__ = [
    "History",
    "Model",
    "TrainState",
    "Trainer",
    "callbacks",
    "data",
    "losses",
    "metrics",
]
