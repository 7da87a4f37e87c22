"""A population's callbacks: per-member copies, and logs of one value per member.

A callback with a ``for_member(i)`` method (the built-in EarlyStopping,
ReduceLROnPlateau, LearningRateScheduler, TerminateOnNaN, ModelCheckpoint,
CSVLogger, TensorBoard) acts per member: ``Members`` holds a copy per member,
each in that member's own ``CallbackList`` with a ``History`` of its own, bound
to a ``MemberView``, and calls it with that member's logs (floats) for as long
as the member trains. Any other callback (yours, LambdaCallback,
BackupAndRestore, the progress bar) sees the population: logs whose values are
arrays of one value per member, member axis first, ``NaN`` for a member that
has stopped.

A member stops when one of its callbacks sets ``stop_training``: at an epoch's
end it is done; at a yield point inside an epoch it runs no more batches and
still ends that epoch (its logs and validation), as a plain trainer stopped
there would. A stopped member's batches are all padding from the next block
on (its state no longer changes). ``fit`` ends when every member has stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxfit._src.checkpoint import run_state
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver.callback import Callback, CallbackList
from jaxfit._src.driver.history import History
from jaxfit._src.driver.population.view import MemberView

RUNNING, FINISHING, DONE = "running", "finishing", "done"
_ALWAYS = {
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_yield",
}


def _skip(*args: Any, **kwargs: Any) -> None:
    """A hook left to the default (the dispatcher skips it)."""


_skip._jaxfit_default = True  # type: ignore[attr-defined]


def member_logs(logs: Mapping[str, Any] | None, i: int) -> dict[str, Any]:
    """Member ``i``'s floats of population logs."""
    out = {}
    for key, value in (logs or {}).items():
        out[key] = (
            float(value[i]) if isinstance(value, np.ndarray) and value.ndim else value
        )
    return out


class Members(Callback):
    """Dispatches every hook to the members' own callback lists (see the
    module docstring). Its ``get_state`` holds every member's callbacks' states
    and status, so a ``BackupAndRestore`` of the population resumes each."""

    def __init__(self, owner: Any, templates: list[Callback], params: dict[str, Any]):
        super().__init__()
        self.owner = owner
        self.histories: list[History] = []
        self.lists: list[CallbackList] = []
        self.last: list[dict[str, Any]] = []
        for template in templates:  # what the user reads after the fit
            template.member_copies = []  # type: ignore[attr-defined]
        for i in range(owner.population):
            history = History()
            copies = [template.for_member(i) for template in templates]  # type: ignore[attr-defined]
            for template, made in zip(templates, copies):
                template.member_copies.append(made)  # type: ignore[attr-defined]
            view = MemberView(owner, i)
            listed = CallbackList([history, *copies], view, dict(params))
            view.session.callbacks = listed.callbacks
            self.histories.append(history)
            self.lists.append(listed)
            self.last.append({})
        for hook in callback_lib.HOOKS:
            if hook not in _ALWAYS and not any(cl.wants(hook) for cl in self.lists):
                setattr(self, hook, _skip)

    # -- dispatch ------------------------------------------------------------------
    def _each(self, hook: str, *args: Any, logs: Any = None, states=(RUNNING,)) -> None:
        for i, listed in enumerate(self.lists):
            if self.owner.status[i] in states:
                listed.call(hook, *args, logs=member_logs(logs, i))

    def on_train_begin(self, logs=None):
        for listed in self.lists:
            listed.call("on_train_begin", logs={})

    def on_epoch_begin(self, epoch, logs=None):
        self._each("on_epoch_begin", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._each("on_train_batch_begin", batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._each("on_train_batch_end", batch, logs=logs)

    def on_yield(self, epoch, batch, logs=None):
        self._each("on_yield", epoch, batch, logs=logs)
        self.owner.apply_stops(at_epoch_end=False)

    def on_test_begin(self, logs=None):
        self._each("on_test_begin", logs=logs, states=(RUNNING, FINISHING))

    def on_test_batch_begin(self, batch, logs=None):
        self._each("on_test_batch_begin", batch, logs=logs, states=(RUNNING, FINISHING))

    def on_test_batch_end(self, batch, logs=None):
        self._each("on_test_batch_end", batch, logs=logs, states=(RUNNING, FINISHING))

    def on_test_end(self, logs=None):
        self._each("on_test_end", logs=logs, states=(RUNNING, FINISHING))

    def on_epoch_end(self, epoch, logs=None):
        for i, listed in enumerate(self.lists):
            if self.owner.status[i] in (RUNNING, FINISHING):
                self.last[i] = member_logs(logs, i)
                listed.call("on_epoch_end", epoch, logs=self.last[i])
        self.owner.apply_stops(at_epoch_end=True)

    def on_train_end(self, logs=None):
        for i, listed in enumerate(self.lists):
            listed.call("on_train_end", logs=self.last[i])

    # -- resuming ------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Each member's status, last logs and callbacks' states, flattened to
        ``"<member>/<callback key>/<field>"`` (arrays apart from JSON)."""
        state: dict[str, Any] = {
            "status": list(self.owner.status),
            "last": [dict(last) for last in self.last],
        }
        for i, listed in enumerate(self.lists):
            for key, callback in run_state.callback_keys(listed.callbacks):
                value = callback.get_state()
                for field, item in (value or {}).items():
                    state[f"{i}/{key}/{field}"] = item
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.owner.restore_status(list(state["status"]))
        self.last = [dict(last) for last in state["last"]]
        for i, listed in enumerate(self.lists):
            for key, callback in run_state.callback_keys(listed.callbacks):
                prefix = f"{i}/{key}/"
                fields = {
                    k[len(prefix) :]: v
                    for k, v in state.items()
                    if k.startswith(prefix)
                }
                if fields:
                    callback.set_state(fields)


class PopulationCallbackList(CallbackList):
    """``CallbackList`` whose logs of a stopped member read ``NaN``."""

    def __init__(self, callbacks: list[Callback], trainer: Any, params: dict[str, Any]):
        super().__init__(callbacks, trainer, params)
        self._owner = trainer

    def call(
        self, hook: str, *args: Any, logs: Mapping[str, Any] | None = None
    ) -> None:
        if logs:
            done = np.asarray([s == DONE for s in self._owner.status])
            if done.any():
                logs = {
                    k: np.where(done, np.nan, v)
                    if isinstance(v, np.ndarray) and v.ndim
                    else v
                    for k, v in logs.items()
                }
        super().call(hook, *args, logs=logs)


def check_templates(callbacks: list[Callback]) -> None:
    """Refuses, before anything runs, what cannot act in a population."""
    for callback in callbacks:
        refuse = getattr(callback, "population_refusal", None)
        if refuse is not None:
            raise ValueError(refuse())
