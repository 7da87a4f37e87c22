"""The built-in callbacks (an edge over the driver's ``Callback`` contract), and
the registry of public callback names (``__all__``) that the YAML runner reads."""

from jaxfit._src.callbacks.backup_and_restore import (
    BackupAndRestore,
)
from jaxfit._src.callbacks.csv_logger import CSVLogger
from jaxfit._src.callbacks.early_stopping import EarlyStopping
from jaxfit._src.callbacks.lambda_callback import LambdaCallback
from jaxfit._src.callbacks.lr import LearningRateScheduler, ReduceLROnPlateau
from jaxfit._src.callbacks.mlflow_logger import MLflowLogger
from jaxfit._src.callbacks.model_checkpoint import ModelCheckpoint
from jaxfit._src.callbacks.monitor import MonitorCallback
from jaxfit._src.callbacks.tensorboard import TensorBoard
from jaxfit._src.callbacks.terminate_on_nan import TerminateOnNaN
from jaxfit._src.driver.callback import Callback
from jaxfit._src.driver.history import History
from jaxfit._src.driver.progress import ProgressBar

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "MLflowLogger",
    "ModelCheckpoint",
    "MonitorCallback",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
