"""jaxfit: Keras / TensorFlow.js ``fit()`` for pure JAX functions, compiled once."""

from jaxfit import callbacks as callbacks
from jaxfit import data as data
from jaxfit import distributed as distributed
from jaxfit import losses as losses
from jaxfit import metrics as metrics
from jaxfit._src.adapters.equinox import from_equinox as from_equinox
from jaxfit._src.adapters.flax_linen import from_flax as from_flax
from jaxfit._src.adapters.nnx import from_nnx as from_nnx
from jaxfit._src.core.model import Model as Model
from jaxfit._src.core.state import TrainState as TrainState
from jaxfit._src.driver.history import History as History
from jaxfit._src.driver.trainer import Trainer as Trainer
from jaxfit._src.runner.run import run as run

__version__ = "0.1.0"

__all__ = [
    "History",
    "Model",
    "TrainState",
    "Trainer",
    "callbacks",
    "data",
    "distributed",
    "from_equinox",
    "from_flax",
    "from_nnx",
    "losses",
    "metrics",
    "run",
]
