"""LambdaCallback: a callback from plain functions (Keras' argument names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxfit._src import errors
from jaxfit._src.driver import callback as callback_lib


class LambdaCallback(callback_lib.Callback):
    """Builds a callback from functions, e.g. ``LambdaCallback(on_epoch_end=fn)``.

    Args:
      on_epoch_begin, on_epoch_end: ``fn(epoch, logs)``. Default to `None`.
      on_train_begin, on_train_end: ``fn(logs)``. Default to `None`.
      on_train_batch_begin, on_train_batch_end: ``fn(batch, logs)``. Default to
        `None`.
      **kwargs: any other hook in ``Callback`` (``on_yield``, ``on_test_end``, ...).

    Example:
      >>> import jaxfit
      >>> seen = []
      >>> cb = jaxfit.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))
    """

    @errors.filter_traceback
    def __init__(
        self,
        on_epoch_begin: Callable[..., Any] | None = None,
        on_epoch_end: Callable[..., Any] | None = None,
        on_train_begin: Callable[..., Any] | None = None,
        on_train_end: Callable[..., Any] | None = None,
        on_train_batch_begin: Callable[..., Any] | None = None,
        on_train_batch_end: Callable[..., Any] | None = None,
        **kwargs: Callable[..., Any],
    ):
        super().__init__()
        hooks = dict(
            on_epoch_begin=on_epoch_begin,
            on_epoch_end=on_epoch_end,
            on_train_begin=on_train_begin,
            on_train_end=on_train_end,
            on_train_batch_begin=on_train_batch_begin,
            on_train_batch_end=on_train_batch_end,
            **kwargs,
        )
        hooks = {name: fn for name, fn in hooks.items() if fn is not None}
        template = callback_lib.normalize([hooks])[0]
        for name in hooks:
            setattr(self, name, getattr(template, name))
