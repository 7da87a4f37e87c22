"""ProgressBar: what ``verbose`` installs (a tqdm bar, or one line per epoch)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from jaxfit._src import errors
from jaxfit._src.driver.callback import Callback


def resolve_verbose(verbose: Any, stream: TextIO | None = None) -> int:
    """``fit``'s ``verbose`` as 0, 1 or 2: ``"auto"`` is 1 in a terminal or a
    notebook, 2 when the output is not a TTY (a log file, CI), as Keras."""
    if verbose != "auto":
        return int(verbose)
    stream = stream or sys.stdout
    return 1 if _in_notebook() or getattr(stream, "isatty", lambda: False)() else 2


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (the usual ZMQInteractiveShell check)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _maximised(key: str) -> bool:
    """Whether a larger ``key`` is better (accuracy-like keys, as ``History.best``)."""
    return key.removeprefix("val_").endswith(("acc", "accuracy"))


_SETTINGS = ("learning_rate", "lr", "loss_scale")  # not scored: shown as a range


def _is_population(value: Any) -> bool:
    """A population's log value: one number per member (an array, member axis first)."""
    return np.ndim(value) > 0


def _summary(key: str, value: Any, spec: str, plus_minus: str) -> str:
    """A population value as ``"<best> (best #<member>) <mean>±<std>"`` (a
    setting as ``"<low>..<high>"``).

    The best is the max for accuracy-like keys, else the min; members whose value
    is ``NaN`` (stopped) are left out of all three; all ``NaN`` reads ``"nan"``.
    """
    values = np.asarray(value, np.float64).reshape(-1)
    kept = np.flatnonzero(~np.isnan(values))
    if not kept.size:
        return "nan"
    finite = values[kept]
    if key in _SETTINGS:
        low, high = float(np.min(finite)), float(np.max(finite))
        return f"{low:{spec}}" if low == high else f"{low:{spec}}..{high:{spec}}"
    best = int(kept[np.argmax(finite) if _maximised(key) else np.argmin(finite)])
    with np.errstate(all="ignore"):  # an infinite member makes the spread nan
        mean, std = float(np.mean(finite)), float(np.std(finite))
    return f"{values[best]:{spec}} (best #{best}) {mean:{spec}}{plus_minus}{std:{spec}}"


def _value(key: str, value: Any, spec: str, plus_minus: str) -> str:
    """A log value as text: a scalar as ``spec`` formats it, a population's as
    its best and spread (``_summary``)."""
    if _is_population(value):
        return _summary(key, value, spec, plus_minus)
    return f"{value:{spec}}"


def _plus_minus(stream: Any) -> str:
    """``"±"``, or ``"+-"`` for a stream whose encoding cannot write it."""
    try:
        "±".encode(getattr(stream, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return "+-"
    return "±"


def _format(logs: dict[str, Any], plus_minus: str = "±") -> str:
    return " - ".join(
        f"{key}: {_value(key, value, '.4f', plus_minus)}" for key, value in logs.items()
    )


class ProgressBar(Callback):
    """Shows training progress; refreshed only at yield points, never forcing a sync.

    ``verbose=1``: a live ``tqdm.auto`` bar per epoch (a widget in notebooks) with
    steps done / total, elapsed time, ETA, steps/s, samples/s, the latest batch's
    loss and metrics, and the validation values at the epoch's end; streams of
    unknown length show a counter. ``verbose=2``: one line per epoch.

    In a population fit (``Trainer(..., population=N)``) each log value holds one
    number per member; the bar and the lines show it as the best member's value,
    that member's index and the mean ± standard deviation over the members, e.g.
    ``val_accuracy: 0.9712 (best #3) 0.9500±0.0150``. The best is the max for
    accuracy-like keys (the key without ``val_`` ends in ``acc`` or
    ``accuracy``, as ``History.best``), else the min. A member that has stopped
    (``NaN``) is left out of the best and the spread; when every member has
    stopped the value reads ``nan``. Settings that are not scores
    (``learning_rate``, ``lr``, ``loss_scale``) show their range over the
    members, ``low..high`` (one value when all agree). A stream that cannot encode ``±`` gets
    ``+-``. Scalar values are written as in a single run (``.4f`` in lines,
    ``.4g`` in the bar).

    Args:
      verbose: 1 or 2. Defaults to `1`.
      stream: where to write. Defaults to `None` (``sys.stdout``).
      now: the clock, for tests. Defaults to `time.perf_counter`.

    ``fit(verbose=1 or 2)`` installs one; pass your own in ``callbacks`` (with
    ``verbose=0``) to choose the stream or the clock.

    Raises:
      ValueError: ``verbose`` is not 1 or 2.

    Example:
      >>> import io, jaxfit
      >>> out = io.StringIO()
      >>> bar = jaxfit.callbacks.ProgressBar(verbose=2, stream=out, now=lambda: 0.0)
      >>> bar.set_params({"epochs": 3, "steps": 4})
      >>> bar.on_epoch_begin(0); bar.on_epoch_end(0, {"loss": 0.5})
      >>> print(out.getvalue(), end="")
      Epoch 1/3 - 0.00s 0ms/step - loss: 0.5000
    """

    @errors.filter_traceback
    def __init__(
        self,
        verbose: int = 1,
        stream: TextIO | None = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        super().__init__()
        if verbose not in (1, 2):
            raise ValueError(errors.expected("verbose", "1 or 2", verbose))
        self.verbose = verbose
        self.stream = stream
        self.now = now
        self._bar: Any = None
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.now()
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}",
                unit="step",
                file=self.stream or sys.stdout,
                leave=True,
                dynamic_ncols=True,
            )

    def on_yield(self, epoch, batch, logs=None):
        if self._bar is None:
            return
        self._bar.update(batch + 1 - self._bar.n)
        postfix = dict(logs or {})
        elapsed = self.now() - self._start
        batch_size = self.params.get("batch_size")
        if batch_size and elapsed > 0:
            postfix["samples/s"] = (batch + 1) * batch_size / elapsed
        self._bar.set_postfix(self._postfix(postfix), refresh=True)

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self.now() - self._start
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(logs or {}), refresh=False)
            self._bar.close()
            self._bar = None
            return
        steps = self.params.get("steps")
        per_step = f" {1000 * elapsed / steps:.0f}ms/step" if steps else ""
        print(
            f"Epoch {epoch + 1}/{self.params.get('epochs')} - {elapsed:.2f}s"
            f"{per_step} - {_format(logs or {}, self._plus_minus())}",
            file=self.stream or sys.stdout,
        )

    def _plus_minus(self) -> str:
        return _plus_minus(self.stream or sys.stdout)

    def _postfix(self, logs: dict[str, Any]) -> dict[str, str]:
        sign = self._plus_minus()
        return {k: _value(k, v, ".4g", sign) for k, v in logs.items()}

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
