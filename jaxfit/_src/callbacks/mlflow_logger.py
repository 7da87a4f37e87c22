"""MLflowLogger: params, per-epoch (and per-yield) metrics, the curves, a
checkpoint and the run's status, logged through ``mlflow.MlflowClient``."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Literal

import jax

from jaxfit._src import errors
from jaxfit._src.core import hyperparams, placement
from jaxfit._src.driver.callback import Callback

INSTALL = "pip install mlflow (it is in jaxfit-trainer's mlflow extra)"
MSG_NO_MLFLOW = f"MLflowLogger needs mlflow: {INSTALL}."
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value (MAX_PARAM_VAL_LENGTH)
_PARAMS_PER_CALL = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH
_METRICS_PER_CALL = 1000  # MLflow's MAX_METRICS_PER_BATCH
_FIT_PARAMS = ("epochs", "steps", "batch_size")  # of ``self.params``
_NOT_IN_NAMES = re.compile(r"[^/\w.\- :]")  # what MLflow refuses in a key
BATCH_PREFIX = "batch_"  # the per-yield series: batch_<key>, step = trainer step
TEST_PREFIX = "test_"  # the runner's test metrics (not an epoch series)


def mlflow_module() -> Any:
    """``mlflow``, imported on first use (``import jaxfit`` never imports it).

    Raises:
      ImportError: mlflow is not installed (one line: what to install).
    """
    try:
        import mlflow
    except ImportError as error:
        raise ImportError(MSG_NO_MLFLOW) from error
    return mlflow


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"a.b.c": "value"}`` of nested mappings (and lists, indexed ``a.0.b``):
    MLflow's params, each value stringified and cut to ``MAX_PARAM_LENGTH``."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, (list, tuple)) and value and prefix:
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}"))
    else:
        text = str(value)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 3] + "..."
        out[_NOT_IN_NAMES.sub("_", prefix or "value")] = text
    return out


def _optional_text(argname: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(errors.expected(argname, "a non-empty string or None", value))
    return value


def _check_combination(logger: Any, log_every: Any, log_model: Any) -> None:
    """The checks of ``MLflowLogger``'s arguments that involve several of them."""
    if logger.artifact_location is not None and logger.experiment is None:
        raise ValueError(
            errors.expected(
                "artifact_location",
                "None without experiment (MLflow's Default experiment has its own)",
                logger.artifact_location,
            )
        )
    if logger.run_id is not None and (logger.experiment or logger.run_name):
        given = "experiment" if logger.experiment else "run_name"
        raise ValueError(
            errors.expected(
                given,
                "None with run_id (the run continued has its own)",
                getattr(logger, given),
            )
        )
    if log_every not in ("epoch", "yield"):
        raise ValueError(errors.expected("log_every", "'epoch' or 'yield'", log_every))
    if not isinstance(log_model, bool):
        raise ValueError(errors.expected("log_model", "True or False", log_model))
    if log_model and jax.process_count() > 1:
        raise ValueError(
            errors.expected(
                "log_model",
                "False with several processes",
                log_model,
                "Save with ModelCheckpoint to a shared path instead.",
            )
        )


def _ending_status(trainer: Any) -> str:
    """How the fit ends, in MLflow's words: ``FINISHED`` (a normal end, early
    stopping included), ``KILLED`` (Ctrl-C, SIGTERM, a cancelled task) or
    ``FAILED`` (an error). ``on_train_end`` runs in the loop's ``finally``, so
    the exception on its way out is ``sys.exc_info()``'s."""
    session = trainer.session
    if session.finished:
        return "FINISHED"
    error = sys.exc_info()[1]
    if session.preempted is not None or (
        error is not None and not isinstance(error, Exception)
    ):
        return "KILLED"  # KeyboardInterrupt, Preempted (SystemExit), cancelled
    return "FAILED"


class MLflowLogger(Callback):
    """Logs a fit to MLflow: params, metrics per epoch (and per yield point), the
    learning curves, optionally a checkpoint, and how the fit ended.

    The MLflow run is opened at the first epoch's beginning (after
    ``BackupAndRestore`` has put back a resumed fit's state, with this
    callback's run id: a resumed fit continues the same MLflow run, and no
    empty run is left behind), through an ``mlflow.MlflowClient`` of its own:
    the process-wide ``mlflow.set_tracking_uri`` and active run are never
    touched. Epoch metrics are logged under their log keys (``loss``,
    ``val_loss``, ``learning_rate``...) with ``step`` = the 0-based epoch, as
    ``History.epoch`` counts (and as MLflow's Keras callback does); with
    ``log_every="yield"`` each batch's own logs too, as ``batch_<key>`` with
    ``step`` = the trainer's step after that batch, sent at the yield point
    where they arrive (one ``log_batch`` call per yield point and per epoch,
    never a sync of its own). A continued run skips the steps it already has,
    so none is logged twice. At ``on_train_end``: the curves
    (``History.plot``) as ``curves.png`` when matplotlib is installed, with
    ``log_model=True`` the final ``TrainState`` (``trainer.save``) as the
    artifact directory ``checkpoint``, then the run's status: ``FINISHED``,
    ``FAILED`` when the fit raised, ``KILLED`` on Ctrl-C or SIGTERM. Only
    process 0 logs.

    Args:
      tracking_uri: the tracking store: a server (``"http://host:5000"``), a
        database (``"sqlite:///path/mlflow.db"``)... Defaults to `None`:
        MLflow's own default (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``
        in the working directory, whose artifacts go to ``./mlruns`` unless the
        experiment has an ``artifact_location``).
      experiment: the experiment's name, created if missing. Defaults to `None`
        (MLflow's ``Default`` experiment).
      run_name: the new run's name. Defaults to `None` (MLflow picks one).
      run_id: an existing run to continue (its status set back to ``RUNNING``;
        epochs and steps it has are not logged again). Defaults to `None`: each
        ``fit`` opens a new run, unless a ``BackupAndRestore`` backup brings
        back the run id of the fit it resumes.
      params: the params to log, nested mappings flattened to ``a.b.c`` keys,
        values stringified (cut to 6000 characters, MLflow's limit). Defaults to
        `None`: the fit's ``epochs``, ``steps`` and ``batch_size`` and the
        optimizer's injected hyperparameters (``optimizer.<name>``). A
        continued run keeps the params it has (MLflow refuses to change one).
      log_every: ``"epoch"``, or ``"yield"`` for the batch logs too. Defaults to
        `"epoch"`.
      log_model: log the final ``TrainState`` as the ``checkpoint`` artifact
        directory (needs orbax; one process only). Defaults to `False`.
      tags: the run's tags (strings). Defaults to `None`.
      artifact_location: where a new experiment keeps its artifacts. Defaults
        to `None` (the store's default).

    Raises:
      ValueError: an argument of the wrong kind (one line naming it), or
        ``run_id`` with ``experiment`` / ``run_name`` (a continued run has
        its own).

    Example:
      >>> import jaxfit
      >>> logger = jaxfit.callbacks.MLflowLogger(
      ...     "sqlite:///runs/mlflow.db", experiment="digits", log_every="yield")
    """

    @errors.filter_traceback
    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        log_every: Literal["epoch", "yield"] = "epoch",
        log_model: bool = False,
        tags: Mapping[str, Any] | None = None,
        artifact_location: str | os.PathLike[str] | None = None,
    ):
        super().__init__()
        self.tracking_uri = _optional_text("tracking_uri", tracking_uri)
        self.experiment = _optional_text("experiment", experiment)
        self.run_name = _optional_text("run_name", run_name)
        self.run_id = _optional_text("run_id", run_id)
        self.artifact_location = _optional_text("artifact_location", artifact_location)
        for name, value in (("params", params), ("tags", tags)):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(errors.expected(name, "a mapping or None", value))
        _check_combination(self, log_every, log_model)
        self.params_to_log = None if params is None else flatten(params)
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.log_every, self.log_model = log_every, log_model
        self._given_run_id = self.run_id
        if log_every == "epoch":  # the default hooks: the loop skips batch logs
            self.on_train_batch_end = Callback.on_train_batch_end.__get__(self)  # type: ignore[method-assign]
            self.on_yield = Callback.on_yield.__get__(self)  # type: ignore[method-assign]
        self._client: Any = None
        self._open = False
        self._epoch_done = -1  # the last epoch step the run has
        self._step_done = -1  # the last batch step the run has
        self._step = 0
        self._pending: list[Any] = []

    def population_refusal(self) -> str:
        """Why this callback cannot act in a population (``fit`` raises it)."""
        return (
            "callbacks: MLflowLogger logs one run's floats and cannot log a "
            "population's members yet; track each with trainer.member(i), or "
            "log from a callback of your own (its logs hold one value per member)."
        )

    def get_state(self) -> dict[str, Any] | None:
        return {"run_id": self.run_id}

    def set_state(self, state: dict[str, Any]) -> None:
        if not self._open and state.get("run_id"):
            self.run_id = str(state["run_id"])

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` on ``tracking_uri`` (made on first use)."""
        if self._client is None:
            self._client = mlflow_module().MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def on_train_begin(self, logs=None):
        self._open, self._pending = False, []
        self.run_id = self._given_run_id  # each fit its own run, unless given
        self._epoch_done = self._step_done = -1
        if jax.process_index() == 0:
            mlflow_module()  # fail early when mlflow is missing

    def on_epoch_begin(self, epoch, logs=None):
        self.open_run()

    def open_run(self) -> str | None:
        """Opens (creates or continues) the MLflow run, once per fit (the first
        epoch's beginning does).

        Returns:
          The run's id (``run_id``; ``None`` on processes other than 0).

        Raises:
          ValueError: ``experiment`` exists with another ``artifact_location``.
        """
        if self._open or jax.process_index() != 0:
            return self.run_id
        if self.log_every == "yield" and self.trainer is not None:
            self._step = int(placement.fetch(self.trainer.state.step))
        if self.run_id is None:
            self._create()
        else:
            self._continue()
        self._open = True
        self._opened()
        return self.run_id

    def _create(self) -> None:
        client, experiment_id = self.client, "0"
        if self.experiment is not None:
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                experiment_id = client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            else:
                _same_location(found, self.artifact_location)
                experiment_id = found.experiment_id
        run = client.create_run(
            experiment_id, run_name=self.run_name, tags=self.tags or None
        )
        self.run_id = run.info.run_id
        self._log(params=self._params())

    def _continue(self) -> None:
        client = self.client
        run = client.get_run(self.run_id)
        if run.info.status != "RUNNING":
            client.update_run(self.run_id, status="RUNNING")
        for key in run.data.metrics:
            if key.startswith(TEST_PREFIX):
                continue
            last = max(m.step for m in client.get_metric_history(self.run_id, key))
            if key.startswith(BATCH_PREFIX):
                self._step_done = max(self._step_done, last)
            else:
                self._epoch_done = max(self._epoch_done, last)
        params = self._params()
        self._log(params={k: v for k, v in params.items() if k not in run.data.params})
        if self.tags:
            self._log(tags=self.tags)

    def _opened(self) -> None:
        """Called once the run is open (the runner persists its id here)."""

    def _params(self) -> dict[str, str]:
        if self.params_to_log is not None:
            return self.params_to_log
        out = {k: self.params[k] for k in _FIT_PARAMS if k in self.params}
        if self.trainer is not None:
            for node in hyperparams.find(self.trainer.state.opt_state):
                values = placement.fetch(getattr(node, "hyperparams", {}))
                out.update({f"optimizer.{k}": v for k, v in values.items()})
                break
        return flatten(out)

    def _log(self, metrics=(), params=None, tags=None) -> None:
        """``log_batch`` calls within MLflow's per-call limits."""
        entities = mlflow_module().entities
        metrics = list(metrics)
        for i in range(0, len(metrics), _METRICS_PER_CALL):
            self.client.log_batch(
                self.run_id, metrics=metrics[i : i + _METRICS_PER_CALL]
            )
        for mapping, cls, name in (
            (params, entities.Param, "params"),
            (tags, entities.RunTag, "tags"),
        ):
            items = [cls(k, v) for k, v in (mapping or {}).items()]
            for i in range(0, len(items), _PARAMS_PER_CALL):
                self.client.log_batch(
                    self.run_id, **{name: items[i : i + _PARAMS_PER_CALL]}
                )

    def _metrics(self, logs: Mapping[str, Any], step: int, prefix: str = "") -> list:
        metric = mlflow_module().entities.Metric
        now = int(time.time() * 1000)
        return [metric(prefix + k, float(v), now, step) for k, v in logs.items()]

    def on_train_batch_end(self, batch, logs=None):
        if self.log_every != "yield" or jax.process_index() != 0:
            return
        self._step += 1
        if self._step > self._step_done:
            self._pending += self._metrics(logs or {}, self._step, BATCH_PREFIX)

    def on_yield(self, epoch, batch, logs=None):
        self._flush()

    def _flush(self) -> None:
        if self._pending and self._open:
            pending, self._pending = self._pending, []
            self._log(pending)
            self._step_done = max(m.step for m in pending)

    def on_epoch_end(self, epoch, logs=None):
        if jax.process_index() != 0:
            return
        self.open_run()
        self._flush()
        if epoch > self._epoch_done:
            self._log(self._metrics(logs or {}, epoch))
            self._epoch_done = epoch

    def on_train_end(self, logs=None):
        if not self._open:  # no epoch began: no run to end
            return
        status = _ending_status(self.trainer)
        try:
            self._flush()
            self.log_artifacts(status)
        finally:
            self.end_run(status)

    def log_artifacts(self, status: str = "FINISHED") -> None:
        """Logs the curves (``curves.png``) and, with ``log_model`` after a fit
        that ended normally, ``checkpoint/`` (``on_train_end`` calls it).

        Args:
          status: how the fit ended (``FINISHED``, ``FAILED``, ``KILLED``).
            Defaults to `"FINISHED"`.
        """
        history = getattr(self.trainer, "history", None)
        with tempfile.TemporaryDirectory(prefix="jaxfit-mlflow-") as tmp:
            if history is not None and history.epoch and _has_matplotlib():
                path = os.path.join(tmp, "curves.png")
                _save_plot(history, path)
                self.client.log_artifact(self.run_id, path)
            if self.log_model and status == "FINISHED":
                path = os.path.join(tmp, "checkpoint")
                self.trainer.save(path)
                self.client.log_artifacts(self.run_id, path, "checkpoint")

    def end_run(self, status: str) -> None:
        """Ends the run (``on_train_end`` calls it).

        Args:
          status: the run's status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        """
        self.client.set_terminated(self.run_id, status)
        self._open = False


def _same_location(experiment: Any, location: str | None) -> None:
    """Refuses an existing experiment whose artifacts are elsewhere than the
    ``artifact_location`` given (MLflow cannot move them)."""

    def plain(text: str) -> str:
        text = text.removeprefix("file://")
        return os.path.normpath(text) if os.path.isabs(text) else text

    if location is None or plain(experiment.artifact_location) == plain(location):
        return
    raise ValueError(
        errors.expected(
            "artifact_location",
            f"the location of the existing experiment {experiment.name!r}, "
            f"{experiment.artifact_location!r}",
            location,
            "Give that location, or another experiment name.",
        )
    )


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save_plot(history: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure = history.plot()
    try:
        figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
