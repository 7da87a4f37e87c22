"""Callbacks: the base class, History, and the built-in callbacks."""

from jaxfit._src import callbacks as _registry
from jaxfit._src.callbacks import (
    BackupAndRestore as BackupAndRestore,
)
from jaxfit._src.callbacks import (
    Callback as Callback,
)
from jaxfit._src.callbacks import (
    CSVLogger as CSVLogger,
)
from jaxfit._src.callbacks import (
    EarlyStopping as EarlyStopping,
)
from jaxfit._src.callbacks import (
    History as History,
)
from jaxfit._src.callbacks import (
    LambdaCallback as LambdaCallback,
)
from jaxfit._src.callbacks import (
    LearningRateScheduler as LearningRateScheduler,
)
from jaxfit._src.callbacks import (
    MLflowLogger as MLflowLogger,
)
from jaxfit._src.callbacks import (
    ModelCheckpoint as ModelCheckpoint,
)
from jaxfit._src.callbacks import (
    MonitorCallback as MonitorCallback,
)
from jaxfit._src.callbacks import (
    ProgressBar as ProgressBar,
)
from jaxfit._src.callbacks import (
    ReduceLROnPlateau as ReduceLROnPlateau,
)
from jaxfit._src.callbacks import (
    TensorBoard as TensorBoard,
)
from jaxfit._src.callbacks import (
    TerminateOnNaN as TerminateOnNaN,
)

__all__ = _registry.__all__  # one list: the runner reads the same one
