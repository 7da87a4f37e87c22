"""Callbacks: the base class, History, and the built-in callbacks."""

from jaxfit._src.callbacks.backup_and_restore import (
    BackupAndRestore as BackupAndRestore,
)
from jaxfit._src.callbacks.csv_logger import CSVLogger as CSVLogger
from jaxfit._src.callbacks.early_stopping import EarlyStopping as EarlyStopping
from jaxfit._src.callbacks.lambda_callback import LambdaCallback as LambdaCallback
from jaxfit._src.callbacks.lr import LearningRateScheduler as LearningRateScheduler
from jaxfit._src.callbacks.lr import ReduceLROnPlateau as ReduceLROnPlateau
from jaxfit._src.callbacks.model_checkpoint import ModelCheckpoint as ModelCheckpoint
from jaxfit._src.callbacks.monitor import MonitorCallback as MonitorCallback
from jaxfit._src.callbacks.tensorboard import TensorBoard as TensorBoard
from jaxfit._src.callbacks.terminate_on_nan import TerminateOnNaN as TerminateOnNaN
from jaxfit._src.driver.callback import Callback as Callback
from jaxfit._src.driver.history import History as History
from jaxfit._src.driver.progress import ProgressBar as ProgressBar

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "MonitorCallback",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
