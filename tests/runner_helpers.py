"""User code for the runner tests, imported by configs as ``runner_helpers:...``."""

import os
import pathlib
import signal
import signal as signal_lib

import jax.numpy as jnp
import numpy as np

import jaxfit

TINY = """\
name: tiny
model:
  name: runner_helpers:linear_model
data:
  name: runner_helpers:tiny_data
optimizer:
  name: sgd
  learning_rate: 0.1
"""


def tiny_config(fit: str, rest: str = "") -> str:
    """The tiny linear experiment's YAML (the runner tests' base config): its ``fit``
    section's lines, then any further sections."""
    return TINY + "fit:\n" + fit + rest


def write_config(tmp_path, text, name="config.yaml"):
    """Writes a YAML config into ``tmp_path``; returns its path as a string."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_cli(capsys, *argv):
    """``jaxfit ARGV...`` in this process: ``(exit code, stdout, stderr)``."""
    from jaxfit import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# The runner's compilation cache directory, in the workdir by default.
CACHE = ".jax_cache"


def run_dirs(workdir):
    """The run directories in ``workdir`` (not the compilation cache), sorted."""
    return sorted(p for p in pathlib.Path(workdir).iterdir() if p.name != CACHE)


def tiny_data(num_samples=64, seed=0):
    """A user dataset callable: returns the mapping the runner accepts."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 3)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    return {"x_train": x, "y_train": y, "task": "regression"}


def linear_model(sample_x, num_outputs, scale=0.0):
    """A user model callable: returns a jaxfit.Model."""
    params = {"w": jnp.full((sample_x.shape[1], num_outputs), scale, jnp.float32)}
    return jaxfit.Model(lambda params, x: x @ params["w"], params)


class InterruptOnce(jaxfit.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of ``epoch``, the first time only."""

    def __init__(self, epoch, marker):
        super().__init__()
        self.epoch, self.marker = epoch, marker

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise KeyboardInterrupt


def tiny_classes(num_samples=64, seed=0):
    """Two classes (integer labels) for class_weight."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 3)).astype(np.float32)
    return {"x_train": x, "y_train": (x[:, 0] > 0).astype(np.int32)}


# How many batches each stream of ``tiny_streams`` has handed out, by split.
READ = {"train": 0, "validation": 0, "test": 0}


def _batches(split, seed, batch_size, count=None):
    """Batches ``(x, y)`` of the tiny regression task; endless without ``count``."""
    rng = np.random.default_rng(seed)
    i = 0
    while count is None or i < count:
        if i == 1000:  # "endless", but fail rather than fill memory
            raise RuntimeError(f"the endless {split} stream was read 1000 times")
        x = rng.normal(size=(batch_size, 3)).astype(np.float32)
        READ[split] += 1
        yield x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
        i += 1


def tiny_streams(
    form="function",
    num_batches=4,
    batch_size=8,
    validation=True,
    num_validation=3,
    test=True,
    task="regression",
    num_outputs=None,
    extra=None,
):
    """A user dataset callable returning streams of batches.

    ``form``: ``"function"`` (generator functions, called afresh each epoch; the
    validation stream is endless, so only ``fit.validation_batches`` ends it) or
    ``"list"`` (lists of batches; ``num_validation`` validation batches).
    """
    if form == "function":
        streams = {
            "train": lambda: _batches("train", 0, batch_size, num_batches),
            "validation": lambda: _batches("validation", 1, batch_size),
            "test": lambda: _batches("test", 2, batch_size, 2),
        }
    else:
        streams = {
            "train": list(_batches("train", 0, batch_size, num_batches)),
            "validation": list(_batches("validation", 1, batch_size, num_validation)),
            "test": list(_batches("test", 2, batch_size, 2)),
        }
    for split in READ:
        READ[split] = 0
    value = {"train": streams["train"], "task": task}
    if validation:
        value["validation"] = streams["validation"]
    if test:
        value["test"] = streams["test"]
    if num_outputs is not None:
        value["num_outputs"] = num_outputs
    value.update(extra or {})
    return value


def wide_model(sample_x, num_outputs):
    """A user model built for 5 features, whatever the data has."""
    del sample_x
    params = {"w": jnp.zeros((5, num_outputs), jnp.float32)}
    return jaxfit.Model(lambda params, x: x @ params["w"], params)


def scaled_data(scale=1.0, num_samples=64, seed=0):
    """``tiny_data`` times ``scale`` (a float argument without an annotation)."""
    data = tiny_data(num_samples, seed)
    data["x_train"] = data["x_train"] * np.float32(scale)
    return data


class Picky(jaxfit.callbacks.Callback):
    """A user callback whose constructor checks its argument."""

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(
                f"threshold: expected a number in (0, 1), got {threshold!r}."
            )
        self.threshold = threshold


class SigintAt(jaxfit.callbacks.Callback):
    """Sends SIGINT (Ctrl-C) to this process once: after batch ``batch`` of epoch
    ``epoch`` (0-based, as the hooks count; ``batch=None``: at that epoch's
    start), unless ``marker`` exists (it is created then), so a resumed run
    goes on."""

    def __init__(self, epoch, marker, batch=None):
        super().__init__()
        self.epoch, self.batch, self.marker = epoch, batch, marker
        self.current = None

    def _fire(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGINT)

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if epoch == self.epoch and self.batch is None:
            self._fire()

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            self._fire()


def sigint_data(**kwargs):
    """A dataset callable interrupted (Ctrl-C) while it loads."""
    os.kill(os.getpid(), signal.SIGINT)
    return tiny_data(**kwargs)


def tiny_split(num_samples=64, num_test=16, seed=0):
    """``tiny_data`` with a test split (the run's ending evaluates it)."""
    data = tiny_data(num_samples + num_test, seed)
    x, y = data["x_train"], data["y_train"]
    return {
        "x_train": x[:num_samples],
        "y_train": y[:num_samples],
        "x_test": x[num_samples:],
        "y_test": y[num_samples:],
        "task": "regression",
    }


class Slow(jaxfit.callbacks.Callback):
    """Sleeps ``seconds`` at each epoch's end (a run that lasts a while)."""

    def __init__(self, seconds=0.2):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        import time

        time.sleep(self.seconds)


class SignalAt(jaxfit.callbacks.Callback):
    """Sends ``signal`` (a name: ``SIGTERM``, ``SIGINT``) to this process once, at
    ``hook`` (``on_epoch_end`` of ``epoch``, or ``on_train_end``), unless
    ``marker`` exists (it is created then), so a resumed run goes on."""

    def __init__(self, signal, hook, marker, epoch=0):
        super().__init__()
        self.signum = getattr(signal_lib, signal)
        self.hook, self.marker, self.epoch = hook, marker, epoch

    def _fire(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), self.signum)

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "on_epoch_end" and epoch == self.epoch:
            self._fire()

    def on_train_end(self, logs=None):
        if self.hook == "on_train_end":
            self._fire()
