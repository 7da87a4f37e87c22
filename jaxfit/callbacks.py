"""Callbacks: the base class, History, and the built-in callbacks."""

from jaxfit._src import callbacks as _registry
from jaxfit._src.callbacks import (
    BackupAndRestore as BackupAndRestore,
    CSVLogger as CSVLogger,
    Callback as Callback,
    EarlyStopping as EarlyStopping,
    History as History,
    LambdaCallback as LambdaCallback,
    LearningRateScheduler as LearningRateScheduler,
    ModelCheckpoint as ModelCheckpoint,
    MonitorCallback as MonitorCallback,
    ProgressBar as ProgressBar,
    ReduceLROnPlateau as ReduceLROnPlateau,
    TensorBoard as TensorBoard,
    TerminateOnNaN as TerminateOnNaN,
)

__all__ = _registry.__all__  # one list: the runner reads the same one
