"""A sweep's Optuna study: its storage, made once with exactly its trials, which
workers then claim one by one.

The storage is a URL: by default ``sqlite:///SWEEP_DIR/study.db`` (a file,
nothing to start); any Optuna RDB URL (``postgresql://``, ``mysql://``) works the
same, and ``journal:PATH`` is Optuna's journal file (for a shared disk). Several
``jaxfit sweep`` processes, on one machine or many, share a study through it.

**Exactly N trials.** The process whose ``optuna.create_study`` succeeds (it
fails for every other: the study's name is unique in the storage) enqueues the
sweep's N trials as WAITING ones (a grid: each point, its params fixed) and then
marks the study with their number (``jaxfit_trials``); the others wait for that
mark. Every worker claims WAITING trials one at a time with the storage's
compare-and-set from WAITING to RUNNING (what ``Study.ask`` does with the queue),
and never creates a trial: N trials run in all, however many workers, and none
twice. On SQLite, which has no row lock (Optuna's ``SELECT ... FOR UPDATE`` is
not one there), two workers could both see a trial WAITING and both set it
RUNNING; their claims are serialized by an exclusive ``flock`` on
``<database>.claim.lock`` beside the database file (jaxfit's, made when missing,
never removed: ``claim_lock``). A trial left RUNNING by a killed worker is taken
up again by ``jaxfit sweep --resume`` (``driver``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from jaxfit._src import errors
from jaxfit._src.runner.types import ConfigError
from jaxfit._src.sweep import space
from jaxfit._src.sweep.spec import SweepSpec

COUNT = "jaxfit_trials"  # the study's user attribute: its number of trials
STUDY = "jaxfit-sweep"  # the study's name unless the sweep names one
WAIT_S = 120.0  # how long a joining worker waits for the creator's trials


def default_url(sweep_dir: str) -> str:
    """``sqlite:///<sweep_dir>/study.db`` (absolute)."""
    return "sqlite:///" + os.path.join(os.path.abspath(sweep_dir), "study.db")


def storage(url: str) -> Any:
    """The Optuna storage of ``url`` (an RDB URL, or ``journal:PATH``); workers
    that make a new database's tables at once retry (one of them wins).

    Raises:
      ConfigError: a URL Optuna cannot open (naming ``--storage``).
    """
    for attempt in range(5):
        try:
            return _storage(url)
        except ConfigError as error:
            racing = ("already exists", "IntegrityError", "UniqueViolation")
            if not any(word in str(error) for word in racing) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _storage(url: str) -> Any:
    optuna = space.optuna_module()
    try:
        if url.startswith("journal:"):
            path = url[len("journal:") :]
            backend = optuna.storages.journal.JournalFileBackend(path)
            return optuna.storages.JournalStorage(backend)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:"):  # several writers wait rather than fail
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as error:  # noqa: BLE001 - an unknown driver, a refused connection
        raise ConfigError(
            errors.expected(
                "--storage",
                "an Optuna storage URL (sqlite:///PATH, postgresql://..., "
                "mysql://..., journal:PATH) that opens",
                url,
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})",
            )
        ) from None


def open_study(
    spec: SweepSpec,
    store: Any,
    name: str,
    sampler: Any,
    made: Callable[[Any], None] | None = None,
) -> Any:
    """The sweep's study: made with its trials enqueued when it does not exist,
    else loaded once its creator has enqueued them. ``made(study)`` runs in the
    creator only, before the study is marked with its trials (the sweep's
    MLflow parent run: ``tracking``)."""
    optuna = space.optuna_module()
    pruner = spec.make_pruner()
    try:
        study = optuna.create_study(
            storage=store,
            study_name=name,
            direction=spec.direction,
            sampler=sampler,
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=name, storage=store, sampler=sampler, pruner=pruner
        )
        _wait_for_trials(study, spec)
        return study
    for params in _enqueued(spec):
        study.enqueue_trial(params, skip_if_exists=False)
    if made is not None:
        made(study)
    study.set_user_attr(COUNT, spec.trials)
    return study


def _enqueued(spec: SweepSpec) -> list[dict[str, Any]]:
    """The fixed params of each trial to enqueue: a grid's points, else ``{}``
    (the sampler draws them when a worker claims the trial)."""
    if spec.sampler != "grid":
        return [{} for _ in range(spec.trials)]
    grid = spec.grid()
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return points[: spec.trials]


def _wait_for_trials(study: Any, spec: SweepSpec) -> None:
    """Waits until the study's creator has enqueued its trials; refuses a study
    made for another number of trials."""
    deadline = time.monotonic() + WAIT_S
    while COUNT not in study.user_attrs:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"--storage: the study {study.study_name!r} has no trials "
                f"enqueued after {WAIT_S:.0f} s (its creator stopped before "
                "enqueueing them?); run `jaxfit sweep --resume SWEEP_DIR` where "
                "it was made, or use another study."
            )
        time.sleep(0.5)
    count = study.user_attrs[COUNT]
    if count != spec.trials:
        raise ConfigError(
            errors.expected(
                "sweep.trials",
                f"the study's number of trials ({count}: the study "
                f"{study.study_name!r} was made for them)",
                spec.trials,
            )
        )


def claim_lock(url: str) -> str | None:
    """The lock file serializing claims on an SQLite database file (module
    docstring); ``None`` for other storages (their compare-and-set holds) and
    an in-memory database (one process)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url  # Optuna's RDB storage depends on it

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database) + ".claim.lock"


@contextlib.contextmanager
def _claiming(lock: str | None) -> Iterator[None]:
    """Holds ``lock`` exclusively (``flock``, waiting for it) while the block
    runs; no lock, or no ``fcntl`` (not POSIX), holds nothing."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if lock is None or fcntl is None:
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)  # never truncated
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def claim(study: Any, store: Any, count: int, lock: str | None = None) -> list[Any]:
    """Up to ``count`` WAITING trials, each set RUNNING here (compare-and-set:
    a trial another worker took is skipped), as ``optuna.Trial`` objects;
    ``lock`` (``claim_lock``) held meanwhile."""
    optuna = space.optuna_module()
    state = optuna.trial.TrialState
    study_id = store.get_study_id_from_name(study.study_name)
    claimed: list[Any] = []
    with _claiming(lock):
        for frozen in study.get_trials(deepcopy=False, states=(state.WAITING,)):
            if len(claimed) == count:
                break
            trial_id = store.get_trial_id_from_study_id_trial_number(
                study_id, frozen.number
            )
            try:
                if not store.set_trial_state_values(trial_id, state=state.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            claimed.append(optuna.Trial(study, trial_id))
    return claimed


def reopen(study: Any, store: Any, number: int) -> Any:
    """The ``optuna.Trial`` of a RUNNING trial (to report to and tell)."""
    optuna = space.optuna_module()
    study_id = store.get_study_id_from_name(study.study_name)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.Trial(study, trial_id)
