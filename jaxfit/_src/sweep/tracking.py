"""A sweep's experiment tracking (``tracking: {mlflow: ...}``): one parent
MLflow run per sweep, one child run per trial.

The store is the runner's (``runner.tracking``): ``uri`` defaults to
``sqlite:///<abs workdir>/mlflow.db`` (the workdir: the sweep directory's
parent), a new experiment's artifacts in ``<workdir>/mlartifacts``; the
experiment defaults to the config's ``name``.

**Parent.** Made by the worker whose ``optuna.create_study`` succeeds, before
the study is marked with its trials (``store.open_study``'s ``made``), and its
id kept in the study's user attribute ``jaxfit_mlflow_parent``: the workers that
join, and ``--resume``, wait for that mark and log to the same run. Named after
the sweep directory; tags ``jaxfit.sweep_dir``, ``jaxfit.version``; params the
sweep section flattened (``objective.monitor``, ``sampler``, ``trials``...). At
each worker's end: the metric ``best_<monitor>`` (step: the trials finished),
tags ``jaxfit.best_trial`` and ``jaxfit.best.<key path>``, the artifacts
sweep.json, best.yaml and sweep.png; ``FINISHED`` once every trial is finished
(with the best values as params ``best.<key path>``), ``KILLED`` on Ctrl-C or
SIGTERM, ``FAILED`` when the worker raises; a joining worker sets it
``RUNNING`` again.

**Children.** One per trial, logged once its trial directory is complete and
before Optuna is told its outcome: run name ``trial-NNN``, tags
``mlflow.parentRunId``, ``jaxfit.trial``, ``jaxfit.run_dir``,
``jaxfit.version``, ``jaxfit.trial_state`` (Optuna's), params the trial's
config resolved and flattened as ``jaxfit run`` logs it, metrics its
history.json per epoch (step: the 0-based epoch) and its test metrics as
``test_<name>``, artifacts config.yaml, metrics.json, history.json,
curves.png. Status ``FINISHED`` for a complete trial and for a pruned one (with
the tag ``jaxfit.pruned_at``: the 0-based epoch it stopped after), ``FAILED``
with the tag ``jaxfit.error`` (one line) for a failed one. A trial whose child
is already ``FINISHED`` is not logged again; a child a kill left unfinished (or
a failed one of a trial run again) is deleted (MLflow's soft delete) and
logged anew: one child per trial.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jaxfit._src.callbacks import mlflow_logger
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.runner import checks, schema
from jaxfit._src.runner import tracking as runner_tracking
from jaxfit._src.runner.types import ConfigError

PARENT = "jaxfit_mlflow_parent"  # the study's user attribute: the parent's id
_PARENT_FILES = ("sweep.json", "best.yaml", "sweep.png")
_TRIAL_FILES = ("config.yaml", "metrics.json", "history.json", "curves.png")


def untracked(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` without its ``tracking`` section (for the group runs:
    populations log no MLflow run)."""
    return {k: v for k, v in base.items() if k != "tracking"}


def tracker(config: Any, sweep_dir: str) -> SweepTracker | None:
    """The sweep's tracker when its config tracks with MLflow, else ``None``."""
    settings = None if config.tracking is None else config.tracking.mlflow
    if settings is None:
        return None
    return SweepTracker(settings, config.name, sweep_dir)


class SweepTracker:
    """The parent run and the trials' children of one sweep (module docstring).

    Args:
      settings: the config's ``tracking.mlflow``.
      name: the config's name (the experiment's default).
      sweep_dir: the sweep directory.
    """

    def __init__(self, settings: Any, name: str, sweep_dir: str):
        workdir = os.path.dirname(os.path.abspath(sweep_dir))
        self.sweep_dir = os.path.abspath(sweep_dir)
        self.uri = settings.uri or runner_tracking.default_uri(workdir)
        self.experiment = settings.experiment or name
        local = runner_tracking._local(settings)
        self.location = (
            os.path.join(workdir, runner_tracking.ARTIFACTS) if local else None
        )
        self.parent_id: str | None = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` on the store, made on first use: the
        study's creator makes a new store's tables before any joiner opens it."""
        if self._client is None:
            mlflow = mlflow_logger.mlflow_module()
            self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        return self._client

    # -- the parent ---------------------------------------------------------------
    def made(self, study: Any, spec: Any, section: dict[str, Any]) -> None:
        """Creates the parent run and marks ``study`` with its id (the study's
        creator, before the study is marked with its trials)."""
        experiment_id = self._experiment_id()
        run = self.client.create_run(
            experiment_id,
            run_name=os.path.basename(self.sweep_dir),
            tags={
                "jaxfit.sweep_dir": self.sweep_dir,
                "jaxfit.version": orbax_io.versions()["jaxfit"],
            },
        )
        self.parent_id = run.info.run_id
        params = {**section, "trials": spec.trials, "lanes": spec.lanes}
        _logger(self, self.parent_id)._log(params=mlflow_logger.flatten(params))
        study.set_user_attr(PARENT, self.parent_id)

    def joined(self, study: Any) -> None:
        """The parent's id from the study (its creator marks it before the
        study's trials, which ``store.open_study`` waited for); the parent set
        ``RUNNING`` again when a worker had ended it.

        Raises:
          ConfigError: the study has no parent (made by a sweep without
            tracking).
        """
        if self.parent_id is None:
            found = study.user_attrs.get(PARENT)
            if not isinstance(found, str) or not found:
                raise ConfigError(
                    f"tracking: the study {study.study_name!r} has no MLflow parent "
                    "run (a sweep without a tracking section made it); remove the "
                    "tracking section, or use another study (--storage)."
                )
            self.parent_id = found
        if self.client.get_run(self.parent_id).info.status != "RUNNING":
            self.client.update_run(self.parent_id, status="RUNNING")

    def ended(self, study: Any, spec: Any, value: dict[str, Any]) -> None:
        """A worker's end: the best objective, its values, the sweep's files;
        ``FINISHED`` once no trial is waiting or running."""
        assert self.parent_id is not None
        logger, best = _logger(self, self.parent_id), value.get("best")
        done = [e for e in value["trials_run"] if e["state"] not in _OPEN]
        final = len(done) == len(value["trials_run"])
        if best is not None:
            metric = f"best_{spec.monitor}"
            logger._log(logger._metrics({metric: best["objective"]}, len(done)))
            tags = {"jaxfit.best_trial": str(best["number"])}
            tags.update({f"jaxfit.best.{k}": str(v) for k, v in best["params"].items()})
            logger._log(tags=tags)
            if final:
                logger._log(params=mlflow_logger.flatten({"best": best["params"]}))
        for name in _PARENT_FILES:
            path = os.path.join(self.sweep_dir, name)
            if os.path.isfile(path):
                self.client.log_artifact(self.parent_id, path)
        if final:
            self.client.set_terminated(self.parent_id, "FINISHED")

    def stopped(self, error: BaseException) -> None:
        """The worker stops on ``error``: the parent ``FAILED`` (an error) or
        ``KILLED`` (Ctrl-C, SIGTERM)."""
        if self.parent_id is None:
            return
        status = "FAILED" if isinstance(error, Exception) else "KILLED"
        try:
            self.client.set_terminated(self.parent_id, status)
        except Exception:  # noqa: BLE001 - the worker's own error goes on
            pass

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=self.location
            )
        except mlflow_logger.mlflow_module().exceptions.MlflowException:
            found = self.client.get_experiment_by_name(self.experiment)  # a race
            if found is None:
                raise
            return found.experiment_id

    # -- the children -------------------------------------------------------------
    def trial(
        self,
        number: int,
        raw: dict[str, Any],
        run_dir: str | None,
        state: str,
        *,
        pruned_at: int | None = None,
        error: str | None = None,
    ) -> None:
        """Logs trial ``number``'s child run (module docstring), unless it has a
        ``FINISHED`` one.

        Args:
          number: the trial's number.
          raw: the trial's config (plain data).
          run_dir: its trial directory, or ``None`` (a failed group: none).
          state: Optuna's state it is told (``COMPLETE``, ``PRUNED``, ``FAIL``).
          pruned_at: the 0-based epoch it was pruned after. Defaults to `None`.
          error: its one-line error. Defaults to `None`.
        """
        if self._logged(number):
            return
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "jaxfit.trial": str(number),
            "jaxfit.trial_state": state,
            "jaxfit.version": orbax_io.versions()["jaxfit"],
        }
        if run_dir is not None:
            tags["jaxfit.run_dir"] = os.path.abspath(run_dir)
        if pruned_at is not None:
            tags["jaxfit.pruned_at"] = str(pruned_at)
        if error is not None:
            tags["jaxfit.error"] = error
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        run = self.client.create_run(
            experiment_id, run_name=f"trial-{number:03d}", tags=tags
        )
        logger = _logger(self, run.info.run_id)
        logger._log(params=mlflow_logger.flatten(_resolved(raw)))
        if run_dir is not None:
            _log_trial_dir(logger, run_dir)
        status = "FAILED" if state == "FAIL" else "FINISHED"
        self.client.set_terminated(run.info.run_id, status)

    def _logged(self, number: int) -> bool:
        """Whether trial ``number`` has a ``FINISHED`` child; its other children
        (a kill's leftover, a failed attempt of a trial run again) deleted."""
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        found = self.client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{self.parent_id}' and "
                f"tags.`jaxfit.trial` = '{number}'"
            ),
        )
        if any(run.info.status == "FINISHED" for run in found):
            return True
        for run in found:
            self.client.delete_run(run.info.run_id)
        return False


_OPEN = ("WAITING", "RUNNING")


def _logger(owner: SweepTracker, run_id: str) -> Any:
    """An ``MLflowLogger`` on ``run_id`` (its batched logging, no fit)."""
    logger = mlflow_logger.MLflowLogger(owner.uri, run_id=run_id)
    logger._client = owner.client
    logger.run_id = run_id
    return logger


def _resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """The config as ``jaxfit run`` logs it (resolved, ``environment`` left
    out); the plain data when it does not resolve (a failing trial's)."""
    try:
        config = checks.check(schema.parse(raw))
    except Exception:  # noqa: BLE001 - the trial's own error is its tag
        return {k: v for k, v in raw.items() if k != "environment"}
    return {k: v for k, v in schema.to_dict(config).items() if k != "environment"}


def _log_trial_dir(logger: Any, run_dir: str) -> None:
    """A trial directory's history per epoch, test metrics and files."""
    history = _json(os.path.join(run_dir, "history.json")) or {}
    epochs = list(history.get("epoch", []))
    metrics = []
    for key, values in history.items():
        if key == "epoch":
            continue
        for epoch, value in zip(epochs, values):
            metrics += logger._metrics({key: value}, int(epoch))
    logger._log(metrics)
    ended = _json(os.path.join(run_dir, "metrics.json")) or {}
    step = max(int(ended.get("last_epoch") or 1) - 1, 0)
    test = ended.get("test") or {}
    logger._log(logger._metrics(test, step, mlflow_logger.TEST_PREFIX))
    for name in _TRIAL_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            logger.client.log_artifact(logger.run_id, path)


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
