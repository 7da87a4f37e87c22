"""``jaxfit sweep``: a config's ``sweep:`` section run on Optuna, trials packed.

A sweep directory is ``WORKDIR/<config name>``: its marker, ``sweep.yaml`` (the
config as given, ``--set`` applied), ``sweep-info.json`` (the storage URL and the
study's name), ``groups/`` (the runs that trained, ``trials``), ``trials/NNN/``
(one run directory per trial) and what ``report`` writes (``sweep.json``,
``best.yaml``, ``sweep.png``). A second ``jaxfit sweep`` of the same config and
workdir (on this machine, or on another with the same ``--storage``) joins the
study and claims its remaining trials (``store``); ``--resume SWEEP_DIR`` also
takes up the trials a killed worker left RUNNING: a group whose run is complete
is reported, one that was interrupted is resumed from its backups (the runner's
``--resume``), one whose run never began is run. A group's run that another
live process holds (its lock: held while it trains, and while its trials'
directories are written and told) is left to it.

The loop: claim up to ``lanes`` trials, draw their values (the sampler), train
each group (``trials``), then give every trial its directory and tell Optuna its
objective (the best of ``objective.monitor`` over its epochs), PRUNED, or FAIL
with a one-line error (the sweep goes on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from jaxfit._src import errors, paths
from jaxfit._src.driver import preemption
from jaxfit._src.runner import checks
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import run as runner_run
from jaxfit._src.runner.ending import _sigint_deferred
from jaxfit._src.runner.rundir import (
    COMPLETE,
    _checked_workdir,
    _is_locked,
    _locked,
    _write_json,
)
from jaxfit._src.runner.types import ConfigError
from jaxfit._src.sweep import report, space, store, trials
from jaxfit._src.sweep import spec as spec_lib
from jaxfit._src.sweep import tracking as sweep_tracking
from jaxfit._src.sweep.report import SweepResult

KIND = "sweep"  # the sweep directory's marker kind
INFO = "sweep-info.json"


@dataclasses.dataclass
class _Sweep:
    """A sweep being run: where, on what study, with which config and spec."""

    sweep_dir: str
    config: Any  # the RunConfig (its sweep section included)
    base: dict[str, Any]  # the config as plain data (its sweep section too)
    spec: spec_lib.SweepSpec
    study: Any
    storage: Any
    cache: Any
    say: Callable[..., None]
    tracker: Any = None  # a sweep_tracking.SweepTracker with tracking: mlflow
    lock: str | None = None  # store.claim_lock: an SQLite storage's claim lock

    @property
    def groups_dir(self) -> str:
        return os.path.join(self.sweep_dir, "groups")


def sweep(
    config: str | os.PathLike[str] | None = None,
    workdir: str = "sweeps",
    *,
    overrides: tuple[str, ...] | list[str] = (),
    trials: int | None = None,
    storage: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    compilation_cache: Any = None,
    say: Callable[..., None] = print,
) -> SweepResult:
    """Runs (or joins, or resumes) the sweep of a config's ``sweep:`` section.

    Args:
      config: a YAML path or a shipped config's name. Ignored with ``resume``.
      workdir: where the sweep directory (``WORKDIR/<config name>``) goes.
        Defaults to `"sweeps"`.
      overrides: ``key.path=value`` strings (``--set``). Defaults to `()`.
      trials: the number of trials in place of ``sweep.trials``. Defaults to
        `None`.
      storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``,
        ``journal:PATH``). Defaults to `None`: ``SWEEP_DIR/study.db`` (with
        ``resume``: the one the sweep was made with).
      resume: a sweep directory whose trials a killed worker left running.
        Defaults to `None`.
      compilation_cache: as ``jaxfit.run``'s, for every group run. Defaults to
        `None` (``SWEEP_DIR/groups/.jax_cache``).
      say: prints a line. Defaults to `print`.

    Returns:
      A ``SweepResult``.

    Raises:
      ConfigError: an invalid config, sweep section, workdir, storage, or a
        sweep directory of another config; before anything is written.
      RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``) stopped it, after one
        line on stderr saying how to resume (``resume=SWEEP_DIR``).
      Preempted: SIGTERM stopped it (a ``SystemExit``, status 143), after the
        same line.
    """
    state = _open(config, workdir, overrides, trials, storage, resume, say)
    state.cache = compilation_cache
    try:
        with preemption.handling():  # SIGTERM: a stop between trials (or steps)
            if resume is not None:
                _take_over(state)
            while True:
                _check_stop()
                claimed = store.claim(
                    state.study, state.storage, state.spec.lanes, state.lock
                )
                if not claimed:
                    break
                _run_claimed(state, claimed)
        result = report.finish(
            state.sweep_dir, state.study, state.spec, state.base, say
        )
    except BaseException as error:
        if state.tracker is not None:
            state.tracker.stopped(error)  # the parent KILLED or FAILED
        if isinstance(error, KeyboardInterrupt | preemption.Preempted):
            raise _stopped(state, error) from None
        raise
    if state.tracker is not None:
        value = report.write(state.sweep_dir, state.study, state.spec, state.base)
        state.tracker.ended(state.study, state.spec, value)
    return result


def _check_stop(deferred: Any = None) -> None:
    """Acts on a stop that came while it could not: a Ctrl-C ``deferred``
    recorded (raised as KeyboardInterrupt), a SIGTERM (``Preempted``)."""
    if deferred is not None and deferred.interrupts:
        raise KeyboardInterrupt
    signum = preemption.requested()
    if signum is not None:
        raise preemption.Preempted("", signum)


def _stopped(state: _Sweep, error: BaseException) -> BaseException:
    """Says (stderr, one line) how the sweep stopped and how to go on; returns
    what to raise: a ``RunInterrupted`` for Ctrl-C (exit 130, the line said),
    the ``Preempted`` itself for SIGTERM (exit 143)."""
    states = space.optuna_module().trial.TrialState
    done = len(state.study.get_trials(deepcopy=False, states=_finished(states)))
    how = (
        "interrupted"
        if isinstance(error, KeyboardInterrupt)
        else f"preempted ({signal.Signals(getattr(error, 'signum', 15)).name})"
    )
    print(
        f"jaxfit sweep: {how}; {done} of {state.spec.trials} trials finished; "
        f"resume with: jaxfit sweep --resume {state.sweep_dir}",
        file=sys.stderr,
        flush=True,
    )
    if isinstance(error, KeyboardInterrupt):
        return runner_run.RunInterrupted("", state.sweep_dir)
    return error


def _finished(states: Any) -> tuple[Any, ...]:
    return (states.COMPLETE, states.PRUNED, states.FAIL)


def _open(
    config: Any,
    workdir: str,
    overrides: Any,
    count: int | None,
    url: str | None,
    resume: Any,
    say: Callable[..., None],
) -> _Sweep:
    """The sweep directory (made, joined or resumed), its config, spec and study."""
    if resume is not None:
        sweep_dir, info = _resumed(resume)
        path, overrides = os.path.join(sweep_dir, "sweep.yaml"), ()
        url = url or info["storage"] or store.default_url(sweep_dir)
    else:
        path = config_lib.resolve(config)
    loaded, base = _load(path, overrides)
    spec = spec_lib.parse(loaded.sweep, loaded)
    if count is None and resume is not None:
        count = info.get("trials")  # the --trials it was made with, if any
    if count is not None:
        spec = _with_trials(spec, count)
    if resume is None:
        sweep_dir = _made(workdir, loaded.name, base, url, spec.trials)
    url = url or store.default_url(sweep_dir)
    optuna_store = store.storage(url)
    tracker = sweep_tracking.tracker(loaded, sweep_dir)
    made = None
    if tracker is not None:
        section = dict(base.get("sweep") or {})
        made = lambda s: tracker.made(s, spec, section)  # noqa: E731
    study = store.open_study(spec, optuna_store, loaded.name, _sampler(spec), made)
    if tracker is not None:
        tracker.joined(study)
    say(
        f"jaxfit sweep: {loaded.name} -> {sweep_dir} ({spec.trials} trials, "
        f"lanes {spec.lanes}, study {loaded.name!r} on {_shown(url)})"
    )
    return _Sweep(
        sweep_dir,
        loaded,
        base,
        spec,
        study,
        optuna_store,
        None,
        say,
        tracker,
        store.claim_lock(url),
    )


def _load(path: str, overrides: Any) -> tuple[Any, dict[str, Any]]:
    """The checked config (its sweep section with it) and its plain data."""
    loaded, _ = checks._load(path, overrides)  # tracking: mlflow importable
    if loaded.sweep is None:
        raise ConfigError(
            f"{os.fspath(path)}: expected a config with a sweep: section (see the "
            "runner guide's Sweeps), got none; `jaxfit run` runs it once."
        )
    _, raw, _ = config_lib.load_located(path, overrides)
    return loaded, json.loads(json.dumps(raw, default=str))


def _with_trials(spec: spec_lib.SweepSpec, count: Any) -> spec_lib.SweepSpec:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(errors.expected("--trials", "a number of trials >= 1", count))
    if spec.sampler == "grid" and count > spec.trials:
        raise ConfigError(
            errors.expected(
                "--trials", f"at most the grid's {spec.trials} points", count
            )
        )
    return dataclasses.replace(spec, trials=count)


def _sampler(spec: spec_lib.SweepSpec) -> Any:
    """The study's sampler: the spec's; a grid's points are enqueued with their
    params fixed (``store``), so a grid draws nothing."""
    if spec.sampler == "grid":
        return space.optuna_module().samplers.RandomSampler(seed=0)
    return spec.make_sampler()


def _shown(url: str) -> str:
    """The storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _made(
    workdir: Any, name: str, base: dict[str, Any], url: str | None, count: int
) -> str:
    """``WORKDIR/<name>``: made and marked, or joined when it is this config's."""
    root = os.path.join(_checked_workdir(workdir), name)
    marker = _marker(root)
    for _ in range(100):  # another worker made it: its config comes next
        if marker is None or "config" in marker:
            break
        time.sleep(0.1)
        marker = _marker(root)
    if marker is not None:
        if marker.get("config") != base:
            raise ConfigError(
                f"workdir: {root!r} holds a sweep of another config (or other "
                "--set values); give another --workdir, or resume it with "
                f"`jaxfit sweep --resume {root}`."
            )
        return os.path.abspath(root)
    try:
        paths.checked_dir(root, "workdir", what="a sweep directory")
    except paths.PathError as error:
        raise ConfigError(str(error)) from None
    made = paths.make_dir(root, KIND)
    _write_json(
        os.path.join(made, paths.MARKER),
        {"created_by": "jaxfit", "kind": KIND, "config": base},
    )
    runner_run._dump_yaml(os.path.join(made, "sweep.yaml"), base)
    info = {"storage": url, "study": name, "trials": count}
    _write_json(os.path.join(made, INFO), info)
    return made


def _marker(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, paths.MARKER), encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("kind") == KIND else None


def _resumed(sweep_dir: Any) -> tuple[str, dict[str, Any]]:
    root = os.path.abspath(os.fspath(sweep_dir))
    if _marker(root) is None:
        raise ConfigError(
            errors.expected(
                "--resume", "a sweep directory jaxfit made (jaxfit sweep)", sweep_dir
            )
        )
    with open(os.path.join(root, INFO), encoding="utf-8") as f:
        return root, json.load(f)


# -- trials -----------------------------------------------------------------------
def _run_claimed(state: _Sweep, claimed: list[Any]) -> None:
    """Draws the claimed trials' values and runs them, group by group."""
    groups: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for trial in claimed:
        values = state.spec.suggest(trial)
        key = trials.group_key(state.spec, state.config, values)
        groups.setdefault(key, []).append((trial, values))
    for members in groups.values():
        _run_group(state, members, resume=False)


def _run_group(
    state: _Sweep, members: list[tuple[Any, dict[str, Any]]], resume: bool
) -> None:
    """Trains one group (or resumes its run) and reports its trials."""
    name = f"group-{members[0][0].number:03d}"
    for i, (trial, _) in enumerate(members):
        trial.set_user_attr("jaxfit_group", name)
        trial.set_user_attr("jaxfit_member", i)
    raw = None
    if not resume:
        numbered = [(t.number, values) for t, values in members]
        base = sweep_tracking.untracked(state.base)  # populations log no MLflow run
        raw = trials.group_config(state.spec, state.config, base, name, numbered)
    state.say(f"jaxfit sweep: trials {[t.number for t, _ in members]} as {name}")
    try:
        group_dir, trainer = trials.run_group(
            state.groups_dir, name, raw, [t for t, _ in members], state.cache
        )
    except (KeyboardInterrupt, preemption.Preempted):
        raise
    except Exception as error:  # noqa: BLE001 - the trials fail, the sweep goes on
        if isinstance(error, ConfigError) and "is in use" in str(error):
            return  # another worker took it up
        _fail(state, members, error)
        return
    _report_group(state, members, group_dir, trainer)


def _report_group(
    state: _Sweep,
    members: list[tuple[Any, dict[str, Any]]],
    group_dir: str,
    trainer: Any,
) -> None:
    """Each member's trial directory, then its outcome told to Optuna, under
    the group run's lock (one process reports a group: another worker's
    ``--resume`` leaves it, and this one leaves a group a resumer took)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked(group_dir))
        except ConfigError as error:
            if "is in use" in str(error):
                return  # another live process reports it
            raise
        for j, (trial, values) in enumerate(members):
            member = int(trial.user_attrs.get("jaxfit_member", j))  # --resume
            deferred: Any = types.SimpleNamespace(interrupts=[])  # as the ending's
            with _sigint_deferred(deferred):  # a trial's directory and tell: whole
                _report_trial(state, trial, values, group_dir, member, trainer)
            _check_stop(deferred)
    report.write(state.sweep_dir, state.study, state.spec, state.base)


def _report_trial(
    state: _Sweep,
    trial: Any,
    values: dict[str, Any],
    group_dir: str,
    i: int,
    trainer: Any,
) -> None:
    """Member ``i``'s trial directory, its MLflow child, its outcome told."""
    states = space.optuna_module().trial.TrialState
    _, pruned_at, value = trials.member_outcome(group_dir, i, state.spec)
    entry = {
        "trial": trial.number,
        "params": values,
        "objective": value,
        "monitor": state.spec.monitor,
        "mode": state.spec.mode,
        "pruned_at": pruned_at,
        "group": os.path.relpath(group_dir, state.sweep_dir),
        "member": i,
    }
    raw = spec_lib.trial_config(state.base, values)
    run_dir = trials.materialize(
        state.sweep_dir, trial.number, raw, group_dir, i, trainer, entry
    )
    trial.set_user_attr("jaxfit_run_dir", os.path.relpath(run_dir, state.sweep_dir))
    error = None
    if pruned_at is None and value is None:
        error = f"{state.spec.monitor} was never finite"
        trial.set_user_attr("jaxfit_error", error)
    told = "PRUNED" if pruned_at is not None else "FAIL" if error else "COMPLETE"
    if state.tracker is not None:  # the child before the tell: --resume logs it
        state.tracker.trial(
            trial.number, raw, run_dir, told, pruned_at=pruned_at, error=error
        )
    if told == "COMPLETE":
        spec_lib.tell(state.study, trial, value)
    else:
        spec_lib.tell(state.study, trial, state=getattr(states, told))


def _fail(
    state: _Sweep, members: list[tuple[Any, dict[str, Any]]], error: Exception
) -> None:
    states = space.optuna_module().trial.TrialState
    line = " ".join(str(error).split()) or type(error).__name__
    line = f"{type(error).__name__}: {line}"[:500]
    state.say(f"jaxfit sweep: trials {[t.number for t, _ in members]} failed: {line}")
    for trial, values in members:
        trial.set_user_attr("jaxfit_error", line)
        if state.tracker is not None:
            raw = spec_lib.trial_config(state.base, values)
            state.tracker.trial(trial.number, raw, None, "FAIL", error=line)
        spec_lib.tell(state.study, trial, state=states.FAIL)
    report.write(state.sweep_dir, state.study, state.spec, state.base)


def _take_over(state: _Sweep) -> None:
    """The trials a killed worker left RUNNING (module docstring)."""
    states = space.optuna_module().trial.TrialState
    left: dict[str | None, list[Any]] = {}
    for frozen in state.study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        left.setdefault(frozen.user_attrs.get("jaxfit_group"), []).append(frozen)
    for name, frozen_trials in left.items():
        frozen_trials.sort(key=lambda f: f.user_attrs.get("jaxfit_member", 0))
        group_dir = (
            None if name is None else trials.group_run_dir(state.groups_dir, name)
        )
        if group_dir is not None and _is_locked(group_dir):
            continue  # a live worker's
        opened = [
            store.reopen(state.study, state.storage, f.number) for f in frozen_trials
        ]
        members = [(t, state.spec.suggest(t)) for t in opened]
        if group_dir is None:
            for key_members in _regrouped(state, members):
                _run_group(state, key_members, resume=False)
        elif os.path.isfile(os.path.join(group_dir, COMPLETE)):
            _report_group(state, members, group_dir, None)
        else:
            _run_group(state, members, resume=True)


def _regrouped(
    state: _Sweep, members: list[tuple[Any, dict[str, Any]]]
) -> list[list[tuple[Any, dict[str, Any]]]]:
    groups: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for trial, values in members:
        key = trials.group_key(state.spec, state.config, values)
        groups.setdefault(key, []).append((trial, values))
    return list(groups.values())
