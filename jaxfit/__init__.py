"""jaxfit: Keras / TensorFlow.js ``fit()`` for pure JAX functions, compiled once.

``jaxfit.Trainer(apply, params, optimizer=..., loss=...)`` trains a pure JAX
function with ``fit`` / ``fit_dataset`` / ``evaluate`` / ``predict`` (Keras 3
semantics, TensorFlow.js' batch callbacks and yield points); ``jaxfit.run`` runs
a YAML experiment, ``jaxfit.load_run`` rebuilds a finished run's trainer (its
model, preprocessing and weights) and ``jaxfit.evaluate_run`` evaluates it. The
public modules are ``jaxfit.callbacks``, ``jaxfit.losses``, ``jaxfit.metrics``,
``jaxfit.data`` and ``jaxfit.distributed``.

Errors: a bad argument raises before anything runs, with a message naming the
argument, what was expected and what was received. The traceback of an error that
is the user's (a bad argument, or an exception raised by your callback, apply
function or data) shows your frames only: jaxfit's own frames are removed, as
Keras and JAX do. Set the environment variable ``JAXFIT_TRACEBACK_FILTERING=off``
to see them. SIGTERM (preemption) while ``fit`` trains stops it at the next step
boundary and raises ``Preempted`` (exit status 143); a train step larger than
the device raises ``MemoryError`` before it runs.
"""

# isort: off
from jaxfit._src import startup as _startup  # first: holds Ctrl-C during imports

# isort: on
from jaxfit import callbacks as callbacks
from jaxfit import data as data
from jaxfit import distributed as distributed
from jaxfit import losses as losses
from jaxfit import metrics as metrics
from jaxfit._src import errors as _errors
from jaxfit._src.adapters.equinox import from_equinox as _from_equinox
from jaxfit._src.adapters.flax_linen import from_flax as _from_flax
from jaxfit._src.adapters.nnx import from_nnx as _from_nnx
from jaxfit._src.core.model import Model as Model
from jaxfit._src.core.state import TrainState as TrainState
from jaxfit._src.driver.arguments import FitArgs as FitArgs
from jaxfit._src.driver.arguments import StreamFitArgs as StreamFitArgs
from jaxfit._src.driver.history import History as History
from jaxfit._src.driver.population.history import (
    PopulationHistory as PopulationHistory,
)
from jaxfit._src.driver.population.trainer import (
    PopulationTrainer as PopulationTrainer,
)
from jaxfit._src.driver.preemption import Preempted as Preempted
from jaxfit._src.driver.trainer import Trainer as Trainer
from jaxfit._src.runner.load import evaluate_run as _evaluate_run
from jaxfit._src.runner.load import load_run as _load_run
from jaxfit._src.runner.run import run as _run
from jaxfit._src.sweep import spec as _sweep_spec  # noqa: F401 - registers sweep:'s check
from jaxfit._src.sweep.driver import sweep as _sweep

# Public calls whose user errors come back without jaxfit's frames (the Trainer's
# methods and the callbacks' constructors are decorated where they are defined).
from_equinox = _errors.filter_traceback(_from_equinox)
from_flax = _errors.filter_traceback(_from_flax)
from_nnx = _errors.filter_traceback(_from_nnx)
run = _errors.filter_traceback(_run)
load_run = _errors.filter_traceback(_load_run)
evaluate_run = _errors.filter_traceback(_evaluate_run)
sweep = _errors.filter_traceback(_sweep)

__version__ = "0.1.0"

_startup.done()  # a Ctrl-C during the imports above is raised here

__all__ = [
    "FitArgs",
    "History",
    "Model",
    "PopulationHistory",
    "PopulationTrainer",
    "Preempted",
    "StreamFitArgs",
    "TrainState",
    "Trainer",
    "callbacks",
    "data",
    "distributed",
    "evaluate_run",
    "from_equinox",
    "from_flax",
    "from_nnx",
    "load_run",
    "losses",
    "metrics",
    "run",
    "sweep",
]
