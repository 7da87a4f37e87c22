"""The callback base class, the dispatcher, and dict-of-hooks normalisation."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from jaxfit._src import errors

HOOKS = (
    "on_train_begin", "on_train_end",
    "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end",
    "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end",
    "on_predict_begin", "on_predict_end",
    "on_yield",
)
_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


def _default(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn._jaxfit_default = True  # type: ignore[attr-defined]
    return fn


class Callback:
    """Base class for callbacks; override the hooks you need.

    Hooks are no-ops by default, and the dispatcher skips hooks nobody overrides,
    so a callback that only defines ``on_epoch_end`` costs nothing per batch.
    ``on_batch_begin`` / ``on_batch_end`` are aliases of the train-batch hooks.
    Batch hooks are called at yield points, for each batch run since the last
    one, in order, with that batch's own logs (TensorFlow.js semantics).

    A callback whose counters matter for resuming a run (EarlyStopping's wait and
    best, say) overrides ``get_state`` and ``set_state``: checkpoints written
    during ``fit`` (``ModelCheckpoint``, ``BackupAndRestore``, ``trainer.save``)
    store that state, and ``BackupAndRestore`` puts it back, so a resumed run
    continues as if it had never stopped.

    Attributes:
      trainer: the ``Trainer`` running the callback (set by ``fit``).
      params: ``{"epochs", "steps", "verbose"}`` for the current run.
    """

    # Checkpointing callbacks run after all others at each hook, so what they save
    # includes every other callback's update for that epoch or batch.
    runs_last: bool = False

    def __init__(self) -> None:
        self.trainer: Any = None
        self.params: dict[str, Any] = {}

    def get_state(self) -> dict[str, Any] | None:
        """What a checkpoint should keep of this callback, or ``None`` (nothing).

        Values are JSON-serialisable (numbers, strings, lists, dicts, ``None``) or
        pytrees of arrays (stored with orbax).
        """
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores what ``get_state`` returned (called after ``on_train_begin``)."""
        del state

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    @_default
    def on_train_begin(self, logs=None): ...
    @_default
    def on_train_end(self, logs=None): ...
    @_default
    def on_epoch_begin(self, epoch, logs=None): ...
    @_default
    def on_epoch_end(self, epoch, logs=None): ...
    @_default
    def on_train_batch_begin(self, batch, logs=None): ...
    @_default
    def on_train_batch_end(self, batch, logs=None): ...
    @_default
    def on_test_begin(self, logs=None): ...
    @_default
    def on_test_end(self, logs=None): ...
    @_default
    def on_test_batch_begin(self, batch, logs=None): ...
    @_default
    def on_test_batch_end(self, batch, logs=None): ...
    @_default
    def on_predict_begin(self, logs=None): ...
    @_default
    def on_predict_end(self, logs=None): ...
    @_default
    def on_yield(self, epoch, batch, logs=None): ...
    @_default
    def on_batch_begin(self, batch, logs=None): ...
    @_default
    def on_batch_end(self, batch, logs=None): ...


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
                raise TypeError(errors.expected(f"{argname}[{name!r}]", "a callable", fn))
            setattr(self, name, _plain(fn))


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args: fn(*args)


def normalize(callbacks: Any) -> list[Callback]:
    """Accepts ``None``, a Callback, a dict of hooks, or a list of those."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (Callback, Mapping)):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            errors.expected(
                "callbacks", "a list of jaxfit.callbacks.Callback or dicts of hooks",
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
                    f"callbacks[{i}]", "a jaxfit.callbacks.Callback or a dict of hooks",
                    item,
                )
            )
    return result


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
        return bool(self._table[hook])

    def call(self, hook: str, *args: Any, logs: Mapping[str, Any] | None = None) -> None:
        for method in self._table[hook]:
            method(*args, dict(logs or {}))
