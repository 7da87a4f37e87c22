"""TensorBoard: scalars, learning rate and weight histograms, via tensorboardX."""

from __future__ import annotations

import os
from typing import Any, Literal

import jax
import numpy as np

from jaxfit._src import errors, paths
from jaxfit._src.core import placement
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver.callback import Callback

MSG_NO_WRITER = (
    "TensorBoard needs tensorboardX: pip install tensorboardX "
    "(in jaxfit-trainer's tensorboard extra)."
)
_RUNS = ("train", "validation")  # the subdirectories this callback writes
_EVENTS = "events.out.tfevents."  # how an event file's name starts


def _is_log_dir(path: str) -> bool:
    """Whether the directory ``path`` holds only what this callback writes:
    ``train/`` and ``validation/`` with event files, event files, the marker."""

    def only_events(directory: str, subdirectories: tuple[str, ...]) -> bool:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return False
        for entry in entries:
            if entry.is_symlink():
                return False
            if entry.is_dir() and entry.name in subdirectories:
                if not only_events(entry.path, ()):
                    return False
            elif not (
                entry.is_file()
                and (entry.name.startswith(_EVENTS) or entry.name == paths.MARKER)
            ):
                return False
        return True

    return only_events(path, _RUNS)


class TensorBoard(Callback):
    """Writes TensorBoard event files (Keras' layout: ``train/`` and ``validation/``).

    Epoch scalars are written as ``epoch_<key>`` (validation keys without their
    ``val_`` prefix, under ``validation/``), including ``epoch_learning_rate``
    when the optimizer exposes one. With ``update_freq="batch"`` or an integer
    ``N``, each (or every N-th) batch's own logs are written as ``batch_<key>``,
    at the yield point where they arrive, so no extra sync is forced. Files are
    flushed at every epoch end.

    ``log_dir`` follows jaxfit's path policy (see the Architecture page): it may be
    missing (made at ``on_train_begin``, with jaxfit's ``.jaxfit`` marker),
    empty, made by jaxfit, or a TensorBoard log directory (only ``train/`` and
    ``validation/`` with event files, and event files); ``""``, ``"."``, the
    working directory, the home directory, their parents, the filesystem root,
    a file and a directory with other files in it are refused, when the
    callback is made and again when training begins. (Keras writes into any
    directory.)

    Args:
      log_dir: the directory for the event files. Defaults to `"logs"`.
      histogram_freq: every this many epochs, a histogram of each parameter
        (0: never). Defaults to `0`.
      update_freq: ``"epoch"``, ``"batch"`` or a number of batches. Defaults to
        `"epoch"`.

    Raises:
      ValueError: ``log_dir`` is refused (one line, naming ``log_dir``), or
        ``histogram_freq`` / ``update_freq`` is out of range.
      TypeError: ``log_dir`` is not a path.

    Example:
      >>> import jaxfit, tempfile
      >>> tb = jaxfit.callbacks.TensorBoard(tempfile.mkdtemp(), update_freq="batch")
    """

    @errors.filter_traceback
    def __init__(
        self,
        log_dir: str | os.PathLike[str] = "logs",
        histogram_freq: int = 0,
        update_freq: Literal["epoch", "batch"] | int = "epoch",
    ):
        super().__init__()
        if update_freq == "batch":
            update_freq = 1
        if not (
            update_freq == "epoch"
            or (
                isinstance(update_freq, int)
                and not isinstance(update_freq, bool)
                and update_freq >= 1
            )
        ):
            raise ValueError(
                errors.expected(
                    "update_freq", "'epoch', 'batch' or a positive integer", update_freq
                )
            )
        if (
            isinstance(histogram_freq, bool)
            or not isinstance(histogram_freq, int)
            or histogram_freq < 0
        ):
            raise ValueError(
                errors.expected("histogram_freq", "an integer >= 0", histogram_freq)
            )
        _checked(log_dir)
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq = update_freq
        self._writers: dict[str, Any] = {}
        self._global_batch = 0

    def for_member(self, member: int) -> TensorBoard:
        """A copy for member ``member`` of a population, writing under
        ``log_dir/member-<i>`` (or ``log_dir``'s ``{member}`` field filled in):
        TensorBoard shows each member as a run."""
        copy = callback_lib.member_copy(self)
        copy.log_dir = callback_lib.member_path(self.log_dir, member, inside=True)
        _checked(copy.log_dir)
        return copy

    def _writer(self, name: str) -> Any:
        if jax.process_index() != 0:  # only process 0 writes files
            return _NULL_WRITER
        if name not in self._writers:
            self._writers[name] = _summary_writer()(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_train_begin(self, logs=None):
        if jax.process_index() == 0:  # only process 0 writes files
            _summary_writer()  # fail early when tensorboardX is missing
            _checked(self.log_dir)  # nothing has moved in since __init__
            paths.make_dir(self.log_dir, kind="tensorboard")
        self._writer("train")
        self._global_batch = int(placement.fetch(self.trainer.state.step))

    def on_train_batch_end(self, batch, logs=None):
        self._global_batch += 1
        if self.update_freq == "epoch" or self._global_batch % self.update_freq:
            return
        writer = self._writer("train")
        for key, value in (logs or {}).items():
            writer.add_scalar(f"batch_{key}", value, self._global_batch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key.startswith("val_"):
                self._writer("validation").add_scalar(f"epoch_{key[4:]}", value, epoch)
            else:
                self._writer("train").add_scalar(f"epoch_{key}", value, epoch)
        if (
            self.histogram_freq
            and epoch % self.histogram_freq == 0
            and jax.process_index() == 0
        ):
            params = placement.fetch(self.trainer.params)
            writer = self._writer("train")
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
                name = jax.tree_util.keystr(path).strip("[]'\"").replace("']['", "/")
                writer.add_histogram(name, np.asarray(leaf), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError(MSG_NO_WRITER) from error
    return SummaryWriter


def _checked(log_dir: Any) -> str:
    return paths.checked_dir(
        log_dir, "log_dir", what="a log directory", owned=_is_log_dir
    )


class _NullWriter:
    """What processes other than 0 write to: nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


_NULL_WRITER = _NullWriter()
