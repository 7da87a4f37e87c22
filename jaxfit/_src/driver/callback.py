"""The callback contract: the ``Callback`` base class, when each hook runs and what
its ``logs`` hold, the dispatcher (``CallbackList``), and the dict-of-hooks form
(TensorFlow.js' ``CustomCallbackArgs``) normalised into callbacks."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

from jaxfit._src import errors

Logs = dict[str, Any] | None  # a hook's logs: a fresh dict of floats

HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
    "on_yield",
)
_ALIASES = {
    "on_batch_begin": "on_train_batch_begin",
    "on_batch_end": "on_train_batch_end",
}


def _default(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn._jaxfit_default = True  # type: ignore[attr-defined]
    return fn


class Callback:
    """Base class for callbacks: override the hooks you need.

    A callback is passed to ``fit`` / ``fit_dataset`` (and ``evaluate``,
    ``predict``) in ``callbacks=[...]``; it sees the running trainer as
    ``self.trainer`` (set ``self.trainer.stop_training = True`` to end ``fit``).
    Hooks are no-ops by default, and the dispatcher skips hooks nobody
    overrides, so a callback that only defines ``on_epoch_end`` costs nothing
    per batch. ``on_batch_begin`` / ``on_batch_end`` are aliases of the
    train-batch hooks (Keras).

    **When the hooks run.** Between yield points (see ``yield_every``) the driver
    dispatches steps without waiting for the device, and may fuse several steps
    into one compiled call, so no Python code runs per batch there. At each
    yield point it fetches the logs of every batch run since the previous one
    (one transfer), calls ``on_train_batch_begin`` and ``on_train_batch_end``
    for each of those batches in order, each with that batch's own logs, then
    calls ``on_yield`` once. This is TensorFlow.js' semantics (each batch's own
    values), not Keras' running means over the epoch; with
    ``yield_every="batch"`` the batch hooks run right after each batch, as in
    Keras. A batch's begin hook therefore runs after that batch has run:
    changing the trainer there affects later batches only. The order within a
    ``fit``::

        on_train_begin
          on_epoch_begin(epoch)
            at each yield point, for each batch run since the last one:
              on_train_batch_begin(batch), on_train_batch_end(batch)
            on_yield(epoch, batch)       (also after the epoch's last batch)
            on_test_begin, on_test_batch_begin/end..., on_test_end  (validation)
          on_epoch_end(epoch)
        on_train_end                     (always, also after an error or Ctrl-C)

    ``epoch`` and ``batch`` are 0-based; ``batch`` counts within the epoch.
    ``stop_training`` is honoured at the next yield point or epoch end. In a
    multi-process run every process calls the hooks; process 0's
    ``stop_training`` decides for all.

    ``predict`` and ``predict_dataset`` call ``on_predict_begin``, then for each
    batch ``on_predict_batch_begin(batch)`` before it runs and
    ``on_predict_batch_end(batch, {"outputs": ...})`` after (as Keras), then
    ``on_predict_end``. Only when a callback overrides a predict batch hook does
    ``predict`` run its batches one at a time and wait for each; otherwise it
    never syncs per batch.

    **What ``logs`` holds.** A fresh ``dict`` of Python floats for each call
    (changing it affects nobody else); ``{}`` for the begin hooks and for
    ``on_predict_end``, ``{"outputs": ...}`` for ``on_predict_batch_end``. Batch and epoch logs have the keys ``"loss"``, then
    ``"<output>_loss"`` for each output of a multi-output model, then the
    metrics under the names given (``"accuracy"``, ``"mae"``...). Epoch logs
    (``on_epoch_end``) are means over the epoch's samples, not of batch means
    (the loss and ``weighted_metrics`` weighted by the sample and class weights,
    the other metrics plain, as Keras), plus ``"val_<key>"`` for each key when validation ran that epoch,
    ``"learning_rate"`` when the optimizer has an injected one
    (``optax.inject_hyperparams``), and ``"loss_scale"`` under
    ``precision="mixed_float16"``. ``on_test_end`` gets the evaluation's means
    without the ``val_`` prefix; ``on_train_end`` the last epoch's logs.

    **In a population** (``Trainer(..., population=N)``), a callback with a
    ``for_member(self, member)`` method (the built-ins that concern one model)
    is copied per member; each copy sees its member as a plain trainer, and
    ``callback.member_copies[i]`` is member ``i``'s after the fit. Any other
    callback sees the population: each value of ``logs`` is a numpy array of
    one value per member (member axis first), ``NaN`` for a member that has
    stopped, and ``self.trainer`` is the population (``.status`` per member).

    **Resuming.** A callback whose counters matter for resuming a run
    (EarlyStopping's wait and best, say) overrides ``get_state`` and
    ``set_state``: checkpoints written during ``fit`` (``ModelCheckpoint``,
    ``BackupAndRestore``, ``trainer.save``) store that state, and
    ``BackupAndRestore`` puts it back, so a resumed run continues as if it had
    never stopped.

    Attributes:
      trainer: the ``Trainer`` running the callback (set by ``fit``,
        ``evaluate`` and ``predict`` before the first hook).
      params: the run's parameters: ``{"verbose", "epochs", "steps",
        "batch_size", "do_validation"}`` in ``fit`` (``steps`` is ``None`` for a
        stream of unknown length), ``{"verbose", "epochs"}`` in ``evaluate``,
        plus ``"steps"`` in ``predict``.
      runs_last: a class attribute; callbacks with ``runs_last = True``
        (the checkpointing ones) run after all others at each hook, so what they
        save includes every other callback's update. Defaults to `False`.

    Example:
      >>> import jaxfit
      >>> class PrintLoss(jaxfit.callbacks.Callback):
      ...     def on_epoch_end(self, epoch, logs=None):
      ...         print(f"epoch {epoch}: loss {logs['loss']:.3f}")
      >>> PrintLoss().on_epoch_end(0, {"loss": 0.25})
      epoch 0: loss 0.250
    """

    # Checkpointing callbacks run after all others at each hook, so what they save
    # includes every other callback's update for that epoch or batch.
    runs_last: bool = False

    def __init__(self) -> None:
        self.trainer: Any = None
        self.params: dict[str, Any] = {}

    def get_state(self) -> dict[str, Any] | None:
        """What a checkpoint should keep of this callback, or ``None`` (nothing).

        Called when a checkpoint is written during ``fit``. A callback's state
        is stored under its class name (``Name#1`` for a second one of the same
        class), so a resumed run passes the same callbacks.

        Returns:
          A dict whose values are JSON-serialisable (numbers, strings, lists,
          dicts, ``None``) or pytrees of arrays (stored with orbax); or ``None``.
        """
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores what ``get_state`` returned.

        ``BackupAndRestore`` calls it after ``on_train_begin`` when it resumes a
        run, so the values set here win over those ``on_train_begin`` reset.

        Args:
          state: the dict ``get_state`` returned when the checkpoint was written.
        """
        del state

    def set_trainer(self, trainer: Any) -> None:
        """Gives the callback the running ``Trainer`` (as ``self.trainer``).

        Called by ``fit``, ``evaluate`` and ``predict`` before the first hook.
        Override it (calling ``super().set_trainer(trainer)``) to prepare
        something that needs the trainer.

        Args:
          trainer: the ``jaxfit.Trainer`` running the call.
        """
        self.trainer = trainer

    def set_params(self, params: dict[str, Any]) -> None:
        """Gives the callback the run's parameters (as ``self.params``).

        Called right after ``set_trainer``.

        Args:
          params: see the class attribute ``params``.
        """
        self.params = params

    @_default
    def on_train_begin(self, logs: Logs = None) -> None:
        """Called once when ``fit`` starts, before the first epoch.

        Args:
          logs: ``{}``.
        """

    @_default
    def on_train_end(self, logs: Logs = None) -> None:
        """Called once when ``fit`` ends, however it ends.

        It also runs when training stops early (``stop_training``), when the
        data runs out, and when an error or Ctrl-C ends ``fit`` (the error is
        raised after it).

        Args:
          logs: the last epoch's logs (see ``on_epoch_end``), or ``{}`` if no
            epoch completed.
        """

    @_default
    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        """Called at the start of each epoch, before its first batch is dispatched.

        Args:
          epoch: the epoch's index (from ``initial_epoch``).
          logs: ``{}``.
        """

    @_default
    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Called at the end of each epoch, after validation (a sync point).

        Args:
          epoch: the epoch's index.
          logs: the epoch's means over its samples of ``"loss"``, the per-output
            losses and the metrics; ``"val_<key>"`` for each when validation ran
            this epoch; ``"learning_rate"`` and ``"loss_scale"`` where they
            exist (see the class docstring).
        """

    @_default
    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called for each training batch, at the yield point after it ran.

        Under fused steps the batch has already run when this is called, just
        before ``on_train_batch_end`` for the same batch; with
        ``yield_every="batch"`` the calls follow each batch (see the class
        docstring). Alias: ``on_batch_begin``.

        Args:
          batch: the batch's index within the epoch.
          logs: ``{}``.
        """

    @_default
    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called for each training batch, at the yield point after it ran.

        All the batches run since the previous yield point are delivered in
        order, each with its own logs (TensorFlow.js semantics, not Keras'
        running means). Alias: ``on_batch_end``.

        Args:
          batch: the batch's index within the epoch.
          logs: that batch's own ``"loss"``, per-output losses and metrics (means
            over the batch's samples).
        """

    @_default
    def on_test_begin(self, logs: Logs = None) -> None:
        """Called when an evaluation starts: ``evaluate``, ``evaluate_dataset``,
        or validation inside ``fit`` (then before that epoch's ``on_epoch_end``).

        Args:
          logs: ``{}``.
        """

    @_default
    def on_test_end(self, logs: Logs = None) -> None:
        """Called when an evaluation ends.

        Args:
          logs: the evaluation's means over its samples of ``"loss"`` and the
            metrics, without the ``val_`` prefix (``fit`` adds it for the epoch
            logs).
        """

    @_default
    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called for each evaluation batch, after the whole evaluation ran.

        The evaluation never syncs per batch: the batch hooks are delivered in
        order, at the end, just before ``on_test_end``.

        Args:
          batch: the batch's index.
          logs: ``{}``.
        """

    @_default
    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called for each evaluation batch, after the whole evaluation ran.

        Args:
          batch: the batch's index.
          logs: that batch's own ``"loss"`` and metrics.
        """

    @_default
    def on_predict_begin(self, logs: Logs = None) -> None:
        """Called when ``predict`` or ``predict_dataset`` starts, after its
        arguments are checked.

        Args:
          logs: ``{}``.
        """

    @_default
    def on_predict_end(self, logs: Logs = None) -> None:
        """Called when ``predict`` has gathered every output.

        Args:
          logs: ``{}``.
        """

    @_default
    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before each ``predict`` / ``predict_dataset`` batch runs.

        Overriding it (or ``on_predict_batch_end``) makes ``predict`` run its
        batches one at a time, waiting for each (Keras' order of events);
        without either it never syncs per batch.

        Args:
          batch: the batch's index.
          logs: ``{}``.
        """

    @_default
    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after each ``predict`` / ``predict_dataset`` batch ran.

        Args:
          batch: the batch's index.
          logs: ``{"outputs": y_pred}``: the batch's outputs (a pytree like the
            model's, numpy arrays, only the batch's real rows), as Keras.
        """

    @_default
    def on_yield(self, epoch: int, batch: int, logs: Logs = None) -> None:
        """Called once at each yield point of ``fit``, after the batch hooks.

        Yield points come as ``yield_every`` says (``"auto"``: every 125 ms, as
        TensorFlow.js), and once after each epoch's last batch, before
        validation and ``on_epoch_end``. This is the place for periodic work
        that needs the state but not every batch (a progress display, a
        checkpoint every N batches): ``self.trainer.state`` is current here.
        In ``fit_async`` the event loop runs right after it.

        Args:
          epoch: the epoch's index.
          batch: the index (within the epoch) of the last batch run.
          logs: the last batch's own logs, as ``on_train_batch_end`` got them.
        """

    @_default
    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Alias of ``on_train_batch_begin`` (Keras); used when that is not
        overridden."""

    @_default
    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Alias of ``on_train_batch_end`` (Keras); used when that is not
        overridden."""


def _overrides(callback: Callback, hook: str) -> Callable[..., Any] | None:
    method = getattr(callback, hook, None)
    if method is None or getattr(method, "_jaxfit_default", False):
        return None
    return method


class _HookCallback(Callback):
    """A callback built from a mapping of hook names to functions."""

    def __init__(self, hooks: Mapping[str, Callable[..., Any]], argname: str):
        super().__init__()
        for name, fn in hooks.items():
            if name not in HOOKS and name not in _ALIASES:
                raise ValueError(
                    errors.expected(argname, f"hook names among {HOOKS}", name)
                )
            if not callable(fn):
                raise TypeError(
                    errors.expected(f"{argname}[{name!r}]", "a callable", fn)
                )
            setattr(self, name, _plain(fn))


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args: fn(*args)


def normalize(callbacks: Any) -> list[Callback]:
    """The ``callbacks`` argument as a list of ``Callback``.

    Args:
      callbacks: ``None``, a ``Callback``, a dict of hook functions
        (``{"on_epoch_end": fn}``), or a list of those.

    Returns:
      The callbacks, each dict made into one callback.

    Raises:
      TypeError: not one of those forms, or a hook that is not callable.
      ValueError: a dict key that is not a hook name.
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, (Callback, Mapping)):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            errors.expected(
                "callbacks",
                "a list of jaxfit.callbacks.Callback or dicts of hooks",
                callbacks,
            )
        )
    result = []
    for i, item in enumerate(callbacks):
        if isinstance(item, Callback):
            result.append(item)
        elif isinstance(item, Mapping):
            result.append(_HookCallback(item, f"callbacks[{i}]"))
        else:
            raise TypeError(
                errors.expected(
                    f"callbacks[{i}]",
                    "a jaxfit.callbacks.Callback or a dict of hooks",
                    item,
                )
            )
    return result


def member_path(path: str, member: int, inside: bool = False) -> str:
    """``path`` for member ``member`` of a population: its ``{member}`` field
    filled in; else a ``member-<i>`` directory inside it (``inside``, a log
    directory) or ``-member-<i>`` before the file's extension."""
    if "{member}" in path:
        return path.replace("{member}", str(member))
    if inside:
        return os.path.join(path, f"member-{member}")
    root, ext = os.path.splitext(path)
    if "{" in ext or not ext:  # a format field, or a directory's name
        return f"{path}-member-{member}"
    return f"{root}-member-{member}{ext}"


def member_copy(callback: Callback) -> Any:
    """A copy of ``callback`` for one member of a population (its counters and
    files its own); the trainer of an earlier fit is not copied (it is set
    again when the copy is installed)."""
    memo: dict[int, Any] = {id(callback.trainer): None}
    earlier = getattr(callback, "member_copies", None)  # of an earlier fit
    if earlier is not None:
        memo[id(earlier)] = None
    return copy.deepcopy(callback, memo)


class CallbackList:
    """Dispatches each hook to the callbacks that override it, in order.

    Each callback receives its own copy of the logs, never a shared dict.
    """

    def __init__(self, callbacks: list[Callback], trainer: Any, params: dict[str, Any]):
        callbacks = sorted(callbacks, key=lambda c: c.runs_last)  # stable
        self.callbacks = callbacks
        self._table: dict[str, list[Callable[..., Any]]] = {h: [] for h in HOOKS}
        for callback in callbacks:
            callback.set_trainer(trainer)
            callback.set_params(params)
            for hook in HOOKS:
                method = _overrides(callback, hook)
                if method is not None:
                    self._table[hook].append(method)
            for alias, hook in _ALIASES.items():
                method = _overrides(callback, alias)
                if method is not None and _overrides(callback, hook) is None:
                    self._table[hook].append(method)

    def wants(self, hook: str) -> bool:
        """Whether any callback overrides ``hook`` (the loop skips work otherwise)."""
        return bool(self._table[hook])

    def call(
        self, hook: str, *args: Any, logs: Mapping[str, Any] | None = None
    ) -> None:
        """Calls ``hook(*args, logs)`` on each callback overriding it, in order,
        each with its own copy of ``logs``."""
        for method in self._table[hook]:
            method(*args, dict(logs or {}))
