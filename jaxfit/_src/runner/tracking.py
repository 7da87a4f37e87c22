"""The runner's experiment tracking: ``tracking: {mlflow: {uri, experiment,
log_every}}``.

One MLflow run per run directory, named after it (its basename), logged by an
``MLflowLogger`` among the run's callbacks: params = the resolved config
flattened to key paths (``optimizer.learning_rate``, ``callbacks.0.name``),
tags ``jaxfit.run_dir`` and ``jaxfit.version``, metrics per epoch (with
``log_every: yield`` each batch's own logs too, as ``batch_<key>``). Once the
ending has written metrics.json (``ended``): the artifacts config.yaml,
metrics.json, history.json, curves.png and checkpoint/, the test metrics as
``test_<name>`` (at the last epoch's step), then the status ``FINISHED``. A fit
or an ending that raises ends the MLflow run ``FAILED``, Ctrl-C and SIGTERM
``KILLED``.

``uri`` defaults to a local store in the workdir, nothing to start:
``sqlite:///<abs workdir>/mlflow.db``, its experiments' artifacts in
``<workdir>/mlartifacts`` (``mlflow ui --backend-store-uri
sqlite:///runs/mlflow.db`` shows them); so are the artifacts of an experiment
a run creates in another store without a server (``sqlite:///...``,
``postgresql://...``: never ``./mlruns``). A server URI (``http://host:port``)
works the same, its artifacts where the server keeps them. ``experiment``
defaults to the config's ``name``. The store and the run are made when the
first epoch begins: a config refused before training makes neither.

The MLflow run's id is kept in the run directory's ``tracking.json`` (written
atomically when the run is opened), and in the backup's callback state, so
``jaxfit run --resume RUN_DIR`` continues the same MLflow run; epochs (and
batch steps) the run already has are not logged again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.callbacks import mlflow_logger
from jaxfit._src.checkpoint import orbax_io
from jaxfit._src.runner import schema
from jaxfit._src.runner.rundir import _write_json
from jaxfit._src.runner.schema import ConfigError, RunConfig

TRACKING_FILE = "tracking.json"  # in the run directory: the MLflow run's id
STORE = "mlflow.db"  # the default store, in the workdir
ARTIFACTS = "mlartifacts"  # the default store's artifacts, in the workdir
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # RFC 3986's
_ARTIFACT_FILES = ("config.yaml", "metrics.json", "history.json", "curves.png")


def _settings(config: RunConfig) -> schema.MLflowConfig | None:
    return None if config.tracking is None else config.tracking.mlflow


def default_uri(workdir: str) -> str:
    """The default store: ``sqlite:///<abs workdir>/mlflow.db``."""
    return f"sqlite:///{os.path.join(os.path.abspath(workdir), STORE)}"


def check(config: RunConfig) -> None:
    """``tracking.mlflow``'s checks, creating no store: mlflow importable, the
    uri of a kind MLflow has a store for, the experiment a non-empty name.

    Raises:
      ConfigError: naming ``tracking.mlflow`` or its key.
    """
    settings = _settings(config)
    if settings is None:
        return
    try:
        mlflow = mlflow_logger.mlflow_module()
    except ImportError:
        raise ConfigError(
            f"tracking.mlflow: needs mlflow: {mlflow_logger.INSTALL}."
        ) from None
    if settings.experiment is not None and not settings.experiment.strip():
        raise ConfigError(
            errors.expected(
                "tracking.mlflow.experiment", "a non-empty name", settings.experiment
            )
        )
    if settings.uri is None:
        return
    from mlflow.tracking._tracking_service import utils

    scheme = settings.uri.partition(":")[0]
    try:  # a builder, never a store
        known = bool(_SCHEME.fullmatch(scheme)) and bool(
            utils._tracking_store_registry.get_store_builder(settings.uri)
        )
    except mlflow.exceptions.MlflowException:  # an unknown scheme
        known = False
    if not known or ":" not in settings.uri:
        raise ConfigError(
            errors.expected(
                "tracking.mlflow.uri",
                "a tracking URI of a kind MLflow has a store for (http://host:port, "
                "sqlite:///path/mlflow.db, file:///abs/dir, postgresql://...)",
                settings.uri,
            )
        )


class _RunLogger(mlflow_logger.MLflowLogger):
    """The runner's MLflowLogger: persists the run id in ``tracking.json``,
    and leaves a finished fit's run open for the ending (``ended``)."""

    def __init__(self, run_dir: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def _opened(self) -> None:
        path = os.path.join(self.run_dir, TRACKING_FILE)
        record = {"mlflow": {"run_id": self.run_id, "tracking_uri": self.tracking_uri}}
        if _read(self.run_dir) != self.run_id:
            _write_json(path, record)

    def _create(self) -> None:
        if self.experiment is not None and self.client.get_experiment_by_name(
            self.experiment
        ):
            self.artifact_location = None  # an existing experiment keeps its own
        super()._create()

    def log_artifacts(self, status: str = "FINISHED") -> None:
        del status  # the runner logs the run directory's files (``ended``)

    def end_run(self, status: str) -> None:
        if status != "FINISHED":  # a finished fit's run ends after the ending
            super().end_run(status)


def _local(settings: schema.MLflowConfig) -> bool:
    """Whether the store is one without a server (a database, a directory): its
    new experiments keep their artifacts in ``<workdir>/mlartifacts``, never in
    the working directory's ``./mlruns`` (MLflow's default there)."""
    remote = ("http:", "https:", "databricks")
    return settings.uri is None or not settings.uri.lower().startswith(remote)


def _read(run_dir: str) -> str | None:
    """The MLflow run id ``tracking.json`` holds, or ``None``."""
    try:
        with open(os.path.join(run_dir, TRACKING_FILE), encoding="utf-8") as f:
            run_id = json.load(f)["mlflow"]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def logger(config: RunConfig, run_dir: str) -> list[Any]:
    """``[the run's MLflowLogger]`` when the config tracks with MLflow, else ``[]``.
    The workdir is the run directory's parent."""
    settings = _settings(config)
    if settings is None:
        return []
    workdir = os.path.dirname(os.path.abspath(run_dir))
    run_id = _read(run_dir)
    resolved = {k: v for k, v in schema.to_dict(config).items() if k != "environment"}
    new = run_id is None
    return [
        _RunLogger(
            run_dir,
            tracking_uri=settings.uri or default_uri(workdir),
            experiment=(settings.experiment or config.name) if new else None,
            run_name=os.path.basename(os.path.abspath(run_dir)) if new else None,
            run_id=run_id,
            params=resolved,
            log_every=settings.log_every,
            tags={
                "jaxfit.run_dir": os.path.abspath(run_dir),
                "jaxfit.version": orbax_io.versions()["jaxfit"],
            },
            artifact_location=(
                os.path.join(workdir, ARTIFACTS) if new and _local(settings) else None
            ),
        )
    ]


def ended(
    callbacks: list[Any], run_dir: str, end: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``end()`` (the run's ending), then the MLflow run's artifacts, test metrics
    and ``FINISHED``; ``FAILED`` / ``KILLED`` when the ending raises."""
    found = [c for c in callbacks if isinstance(c, _RunLogger)]
    if not found or jax.process_index() != 0:
        return end()
    tracker = found[0]
    try:
        metrics = end()
    except BaseException as error:
        tracker.open_run()  # a resumed run that ran no epoch
        tracker.client.set_terminated(
            tracker.run_id, "FAILED" if isinstance(error, Exception) else "KILLED"
        )
        raise
    tracker.open_run()
    client, run_id = tracker.client, tracker.run_id
    for name in _ARTIFACT_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            client.log_artifact(run_id, path)
    checkpoint = os.path.join(run_dir, "checkpoint")
    if os.path.isdir(checkpoint):
        client.log_artifacts(run_id, checkpoint, "checkpoint")
    step = max(int(metrics.get("last_epoch") or 1) - 1, 0)
    test = metrics.get("test") or {}
    tracker._log(tracker._metrics(test, step, mlflow_logger.TEST_PREFIX))
    client.set_terminated(run_id, "FINISHED")
    return metrics
