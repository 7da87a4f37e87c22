"""MLflow tracking: MLflowLogger and the runner's ``tracking:`` section, read back
with ``MlflowClient`` from real stores (a local sqlite one, and a server)."""

import doctest
import importlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data
from runner_helpers import run_cli, run_dirs, tiny_config, write_config

import jaxfit
from jaxfit import cli

mlflow = pytest.importorskip("mlflow", reason="MLflow is the optional mlflow extra")


X, Y = regression_data(n=16)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", str(root / "artifacts")


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """The test runs in ``tmp_path``; nothing of MLflow's may land there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "mlflow.db").exists()


def _trainer():
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.05),
        loss="mse",
        metrics=["mae"],
    )


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


class _Raise(jaxfit.callbacks.Callback):
    """Raises ``error`` when epoch ``at`` begins."""

    def __init__(self, at, error):
        super().__init__()
        self.at, self.error = at, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise self.error


def test_logger_params_metrics_artifacts_and_status(store, cwd):
    uri, artifacts = store
    logger = jaxfit.callbacks.MLflowLogger(
        uri,
        experiment="library",
        run_name="first",
        log_every="yield",
        log_model=True,
        tags={"team": "jax"},
        artifact_location=artifacts,
    )
    history = _trainer().fit(
        X,
        Y,
        batch_size=4,
        epochs=2,
        validation_split=0.25,
        yield_every="batch",
        callbacks=[logger],
        verbose=0,
    )
    client = mlflow.MlflowClient(uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.tags["team"] == "jax"
    params = run.data.params
    assert params["epochs"] == "2" and params["batch_size"] == "4"
    assert params["steps"] == "3"  # 12 training samples in batches of 4
    assert float(params["optimizer.learning_rate"]) == pytest.approx(0.05)
    for key in ("loss", "val_loss", "mae", "val_mae", "learning_rate"):
        steps, values = zip(*_history(client, logger.run_id, key))
        assert steps == (0, 1)  # the 0-based epoch, as History.epoch
        np.testing.assert_allclose(values, history.history[key], rtol=1e-6)
    steps = [s for s, _ in _history(client, logger.run_id, "batch_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the trainer's step after each batch
    names = {f.path for f in client.list_artifacts(logger.run_id)}
    assert "checkpoint" in names
    assert client.list_artifacts(logger.run_id, "checkpoint")
    if _has("matplotlib"):
        assert "curves.png" in names
    assert pathlib.Path(artifacts, logger.run_id).is_dir()


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_failed_killed_and_a_resumed_fit_continues_the_run(store, cwd):
    uri, artifacts = store
    client = mlflow.MlflowClient(uri)

    def logger(log_every="epoch"):
        return jaxfit.callbacks.MLflowLogger(
            uri, experiment="statuses", log_every=log_every, artifact_location=artifacts
        )

    failing = logger()
    with pytest.raises(ValueError, match="boom"):
        _trainer().fit(
            X,
            Y,
            batch_size=4,
            epochs=2,
            callbacks=[failing, _Raise(1, ValueError("boom"))],
            verbose=0,
        )
    assert client.get_run(failing.run_id).info.status == "FAILED"
    assert [s for s, _ in _history(client, failing.run_id, "loss")] == [0]

    preempted = logger()
    with pytest.raises(jaxfit.Preempted):
        _trainer().fit(
            X, Y, batch_size=4, epochs=2, callbacks=[preempted, _Sigterm(1)], verbose=0
        )
    assert client.get_run(preempted.run_id).info.status == "KILLED"
    first = preempted.run_id
    _trainer().fit(X, Y, batch_size=4, epochs=1, callbacks=[preempted], verbose=0)
    assert preempted.run_id != first  # a second fit, a run of its own
    assert [s for s, _ in _history(client, preempted.run_id, "loss")] == [0]

    # Ctrl-C at epoch 2 with the newest backup inside epoch 1 (after its 2nd
    # batch, global batch 6), which MLflow has in full: the resumed fit redoes
    # epoch 1's last batches and its end, and logs none of them twice.
    backup = cwd / "backup"

    def fit(mlflow_logger, *more):
        return _trainer().fit(
            X,
            Y,
            batch_size=4,
            epochs=3,
            yield_every="batch",
            callbacks=[
                mlflow_logger,
                *more,
                jaxfit.callbacks.BackupAndRestore(backup, save_freq=3),
            ],
            verbose=0,
        )

    killed = logger("yield")
    with pytest.raises(KeyboardInterrupt):
        fit(killed, _Raise(2, KeyboardInterrupt()))
    run_id = killed.run_id
    assert client.get_run(run_id).info.status == "KILLED"
    resumed = logger("yield")
    history = fit(resumed)
    assert resumed.run_id == run_id  # the backup carried it
    assert client.get_run(run_id).info.status == "FINISHED"
    logged = _history(client, run_id, "loss")
    assert [s for s, _ in logged] == [0, 1, 2]  # each epoch once
    # History comes back with the backup: the three epochs, as logged
    np.testing.assert_allclose(
        [v for _, v in logged], history.history["loss"], rtol=1e-5
    )
    steps = [s for s, _ in _history(client, run_id, "batch_loss")]
    assert steps == list(range(1, 13))  # 4 batches an epoch, each step once
    elsewhere = jaxfit.callbacks.MLflowLogger(
        uri, experiment="statuses", artifact_location=str(cwd / "elsewhere")
    )
    with pytest.raises(ValueError, match="artifact_location: expected the location"):
        _trainer().fit(X, Y, epochs=1, callbacks=[elsewhere], verbose=0)
    experiment = client.get_experiment_by_name("statuses").experiment_id
    assert len(client.search_runs([experiment])) == 4  # no empty extra run


class _Sigterm(jaxfit.callbacks.Callback):
    """Sends SIGTERM (a preemption) to this process when epoch ``at`` begins."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_without_mlflow_fit_and_validate_say_what_to_install(cwd, monkeypatch, capsys):
    logger = jaxfit.callbacks.MLflowLogger()  # nothing imported yet
    path = write_config(cwd, TRACKED)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"^MLflowLogger needs mlflow: pip install"):
        _trainer().fit(X, Y, epochs=1, callbacks=[logger], verbose=0)
    code, _, err = run_cli(capsys, "validate", path)
    assert code != 0 and "tracking.mlflow: needs mlflow: pip install mlflow" in err


def test_docstring_example_runs(cwd):
    module = importlib.import_module(jaxfit.callbacks.MLflowLogger.__module__)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    assert not (cwd / "runs").exists()  # a logger made creates nothing


def test_bad_arguments_are_refused_in_init():
    cases = [
        ({"tracking_uri": 3}, "tracking_uri: expected a non-empty string"),
        ({"log_every": "batch"}, "log_every: expected 'epoch' or 'yield'"),
        ({"log_model": 1}, "log_model: expected True or False"),
        ({"params": [1]}, "params: expected a mapping"),
        ({"run_id": "abc", "experiment": "e"}, "experiment: expected None with run_id"),
        ({"artifact_location": "a"}, "artifact_location: expected None without"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            jaxfit.callbacks.MLflowLogger(**kwargs)


TRACKED = tiny_config(
    "  epochs: 3\n  batch_size: 16\n  verbose: 0\n",
    "tracking:\n  mlflow: {}\n",
).replace("runner_helpers:tiny_data", "runner_helpers:tiny_split")


def test_runner_logs_one_run_per_run_dir_and_resume_continues_it(cwd, capsys):
    marker = cwd / "fired"
    path = write_config(
        cwd,
        TRACKED
        + "callbacks:\n  - name: runner_helpers:InterruptOnce\n"
        + f"    args: {{epoch: 1, marker: {marker}}}\n",
    )
    workdir = cwd / "runs"
    with pytest.raises(KeyboardInterrupt):
        jaxfit.run(path, str(workdir))
    (run_dir,) = [p for p in run_dirs(workdir) if p.name.startswith("tiny-")]
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert client.get_run(run_id).info.status == "KILLED"
    result = jaxfit.run(None, resume=str(run_dir))

    run = client.get_run(run_id)  # the same MLflow run, finished
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tiny"
    assert experiment.artifact_location == str(workdir / "mlartifacts")
    assert run.data.params["fit.batch_size"] == "16"
    assert run.data.params["optimizer.name"] == "sgd"
    assert run.data.params["callbacks.0.name"] == "runner_helpers:InterruptOnce"
    assert run.data.tags["jaxfit.run_dir"] == str(run_dir)
    assert run.data.tags["jaxfit.version"] == jaxfit.__version__
    logged = _history(client, run_id, "loss")
    assert [s for s, _ in logged] == [0, 1, 2]  # each epoch once
    np.testing.assert_allclose(
        [v for _, v in logged], result.history.history["loss"], rtol=1e-6
    )
    assert not [k for k in run.data.metrics if k.startswith("batch_")]  # epochs only
    for name, value in result.metrics["test"].items():
        assert _history(client, run_id, f"test_{name}") == [
            (2, pytest.approx(value, rel=1e-6))
        ]
    names = {f.path for f in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json", "history.json", "checkpoint"} <= names
    if _has("matplotlib"):
        assert "curves.png" in names
    assert (workdir / "mlartifacts" / run_id / "artifacts" / "checkpoint").is_dir()
    assert len(client.search_runs([experiment.experiment_id])) == 1
    capsys.readouterr()
    assert cli.main(["show", str(run_dir)]) == 0  # jaxfit show names the MLflow run
    uri = f"sqlite:///{workdir}/mlflow.db"
    assert f"tracking: MLflow run {run_id} ({uri})\n" in capsys.readouterr().out


def test_runner_refused_configs_create_no_store_and_a_given_store_works(cwd):
    workdir = cwd / "runs"
    cases = [
        ("tracking.mlflow.uri=mlflow.db", "tracking.mlflow.uri: expected a tracking"),
        ("tracking.mlflow.uri=foo://x", "tracking.mlflow.uri: expected a tracking"),
        ("tracking.mlflow.url=http://x", "tracking.mlflow.url: unknown key"),
        ("tracking.mlflow.experiment=' '", "tracking.mlflow.experiment: expected"),
        ("fit.batch_size=0", "fit.batch_size"),  # refused with tracking on
    ]
    path = write_config(cwd, TRACKED)
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            jaxfit.run(path, str(workdir), overrides=[override])
    callback = TRACKED + "callbacks:\n  - name: MLflowLogger\n"
    with pytest.raises(ValueError, match=r"callbacks\[0\].name: MLflowLogger"):
        jaxfit.run(write_config(cwd, callback, "callback.yaml"), str(workdir))
    assert not workdir.exists()  # no run directory, no store

    # a store of the user's without a server: a new experiment's artifacts go
    # into the workdir too (MLflow's default would be ./mlruns)
    store = cwd / "shared.db"
    result = jaxfit.run(
        path,
        str(workdir),
        overrides=["fit.epochs=1", f"tracking.mlflow.uri=sqlite:///{store}"],
    )
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED"
    assert (workdir / "mlartifacts" / run.info.run_id / "artifacts").is_dir()
    assert not (workdir / "mlflow.db").exists()
    assert result.metrics["test"] is not None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url):
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def server(tmp_path_factory):
    """A real ``mlflow server`` on a free port (its store and artifacts in a
    temporary directory); skipped if it does not answer within 30 s."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root}/server.db"),
        *("--artifacts-destination", str(root / "artifacts")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,  # its own process group: killed whole below
        )
        try:
            deadline = time.monotonic() + 30
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("mlflow server did not start within 30 s")
                time.sleep(0.25)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_runner_logs_to_a_tracking_server(server, cwd):
    path = write_config(cwd, TRACKED)
    workdir = cwd / "runs"
    result = jaxfit.run(
        path,
        str(workdir),
        overrides=["fit.epochs=1", f"tracking.mlflow.uri={server}"],
    )
    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == os.path.basename(result.run_dir)
    logged = _history(client, run.info.run_id, "loss")
    assert logged == [(0, pytest.approx(result.history.history["loss"][0], rel=1e-6))]
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "checkpoint"} <= names
    assert not (workdir / "mlflow.db").exists()  # the server holds the store
    assert not (workdir / "mlartifacts").exists()


def test_runner_stopped_in_its_ending_is_killed_then_resumed_finished(cwd):
    # SIGTERM when training has ended: the ending stops before its first stage,
    # the MLflow run is KILLED; --resume redoes the ending in the same run
    marker = cwd / "fired"
    path = write_config(
        cwd,
        TRACKED
        + "callbacks:\n  - name: runner_helpers:SignalAt\n"
        + f"    args: {{signal: SIGTERM, hook: on_train_end, marker: {marker}}}\n",
    )
    workdir = cwd / "runs"
    with pytest.raises(jaxfit.Preempted):
        jaxfit.run(path, str(workdir))
    (run_dir,) = [p for p in run_dirs(workdir) if p.name.startswith("tiny-")]
    assert not (run_dir / "metrics.json").exists()
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert client.get_run(run_id).info.status == "KILLED"
    result = jaxfit.run(None, resume=str(run_dir))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(client, run_id, "loss")] == [0, 1, 2]
    assert set(result.metrics["test"]) <= {
        k[5:] for k in run.data.metrics if k.startswith("test_")
    }
