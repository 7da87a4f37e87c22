"""A sweep's MLflow tracking, on a real MLflow (a SQLite store in tmp_path) and
a real Optuna: one parent run per sweep, one child per trial (its history's
values per epoch, its swept values among its params), a failed trial's child
FAILED with its error, a pruned one FINISHED with the epoch it stopped after;
two workers share one parent; a SIGKILLed sweep resumed leaves one FINISHED
child per trial."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from runner_helpers import run_cli, write_config
from sweep_helpers import base, read_json
from sweep_helpers import worker as _worker

import jaxfit

pytest.importorskip("optuna", reason="sweeps run on Optuna (the sweep extra)")
mlflow = pytest.importorskip("mlflow", reason="tracking needs the mlflow extra")

HERE = pathlib.Path(__file__).parent
FAILING = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  sampler: grid
  space:
    data.args.fail: {choice: [true, false]}
"""
PRUNED = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  trials: 4
  sampler: {name: random, seed: 3}
  pruner: {name: median, args: {n_startup_trials: 1, n_warmup_steps: 0}}
  lanes: 1
  space:
    optimizer.learning_rate: {loguniform: [0.0001, 0.3]}
"""
TPE = """\
sweep:
  objective: {monitor: val_loss, mode: min}
  trials: 3
  sampler: {name: tpe, seed: 1}
  lanes: 1
  space:
    optimizer.learning_rate: {loguniform: [0.005, 0.5]}
"""


def _config(tmp_path, sweep, epochs):
    return write_config(tmp_path, base(epochs, tracking=True) + sweep, "config.yaml")


_json = read_json


def _runs(workdir):
    """``(parents, children)`` of experiment ``sw`` in the workdir's store."""
    client = mlflow.MlflowClient(f"sqlite:///{os.path.abspath(workdir)}/mlflow.db")
    experiment = client.get_experiment_by_name("sw")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _history(client, run):
    """``{key: [values by step]}`` of a run's metrics (its test ones left out)."""
    out = {}
    for key in run.data.metrics:
        if not key.startswith("test_"):
            found = client.get_metric_history(run.info.run_id, key)
            out[key] = [m.value for m in sorted(found, key=lambda m: m.step)]
            assert [m.step for m in sorted(found, key=lambda m: m.step)] == list(
                range(len(found))
            )
    return out


def test_a_tracked_sweep_logs_a_parent_and_a_child_per_trial(tmp_path, capsys):
    config = _config(tmp_path, FAILING, epochs=2)
    workdir = tmp_path / "w"
    code, _, err = run_cli(capsys, "sweep", config, "--workdir", str(workdir))
    assert code == 0, err
    client, parents, children = _runs(workdir)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    sweep_dir = workdir / "sw"
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sw"
    assert parent.data.tags["jaxfit.sweep_dir"] == str(sweep_dir)
    assert parent.data.params["sampler"] == "grid"
    assert parent.data.params["trials"] == "2"
    assert parent.data.params["best.data.args.fail"] == "False"
    best = _json(sweep_dir / "sweep.json")["best"]
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best["objective"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert names == {"sweep.json", "best.yaml", "sweep.png"}
    by_trial = {int(r.data.tags["jaxfit.trial"]): r for r in children}
    assert sorted(by_trial) == [0, 1]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == f"trial-{int(run.data.tags['jaxfit.trial']):03d}"
    failed = next(r for r in children if r.data.params["data.args.fail"] == "True")
    done = next(r for r in children if r.data.params["data.args.fail"] == "False")
    assert failed.info.status == "FAILED"
    assert "this dataset is broken on purpose" in failed.data.tags["jaxfit.error"]
    assert done.info.status == "FINISHED"
    trial_dir = pathlib.Path(done.data.tags["jaxfit.run_dir"])
    history = _json(trial_dir / "history.json")
    ours = _history(client, done)
    assert sorted(ours) == sorted(k for k in history if k != "epoch")
    for key, values in ours.items():
        assert values == pytest.approx(history[key], rel=1e-6)
    assert done.data.params["optimizer.learning_rate"] == "0.05"
    assert done.data.params["fit.epochs"] == "2"
    names = {a.path for a in client.list_artifacts(done.info.run_id)}
    assert names == {"config.yaml", "metrics.json", "history.json", "curves.png"}
    # the trial directory keeps the tracking section, the group run has none
    assert "tracking" in (trial_dir / "config.yaml").read_text(encoding="utf-8")
    group = next((sweep_dir / "groups").glob("group-*-*"))
    assert "tracking: null" in (group / "config.yaml").read_text(encoding="utf-8")


def test_a_pruned_trial_s_child_is_finished_with_its_epoch(tmp_path):
    config = _config(tmp_path, PRUNED, epochs=4)
    result = jaxfit.sweep(config, str(tmp_path / "w"), say=lambda *a: None)
    entries = _json(os.path.join(result.sweep_dir, "sweep.json"))["trials_run"]
    pruned = {e["number"] for e in entries if e["state"] == "PRUNED"}
    assert pruned
    client, parents, children = _runs(tmp_path / "w")
    assert len(parents) == 1 and len(children) == 4
    for run in children:
        number = int(run.data.tags["jaxfit.trial"])
        assert run.info.status == "FINISHED"
        metrics = _json(os.path.join(run.data.tags["jaxfit.run_dir"], "metrics.json"))
        at = metrics["sweep"]["pruned_at"]
        if number in pruned:
            assert run.data.tags["jaxfit.pruned_at"] == str(at)
            assert run.data.tags["jaxfit.trial_state"] == "PRUNED"
            assert len(_history(client, run)["val_loss"]) == at + 1
        else:
            assert "jaxfit.pruned_at" not in run.data.tags and at is None


def test_two_workers_share_one_parent(tmp_path):
    config = _config(tmp_path, TPE, epochs=2)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [_worker(config, tmp_path / "w", "--storage", url) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]
    _, parents, children = _runs(tmp_path / "w")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["jaxfit.trial"]) for r in children) == [0, 1, 2]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {
        parents[0].info.run_id
    }
    assert all(r.info.status == "FINISHED" for r in children)


def test_a_sigkilled_sweep_resumed_has_one_finished_child_per_trial(tmp_path):
    config = _config(tmp_path, TPE.replace("trials: 3", "trials: 2"), epochs=30)
    worker = _worker(config, tmp_path / "w")
    groups = tmp_path / "w" / "sw" / "groups"
    deadline = time.monotonic() + 120
    while not list(groups.glob("group-*-*/backup/*")):  # the first group trains
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    _, parents, children = _runs(tmp_path / "w")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    assert children == []  # killed before its trial directory was complete
    # what a kill while trial 0's child was being logged leaves: a RUNNING one
    client, parent = _runs(tmp_path / "w")[0], parents[0]
    left = client.create_run(
        parent.info.experiment_id,
        run_name="trial-000",
        tags={"mlflow.parentRunId": parent.info.run_id, "jaxfit.trial": "0"},
    )
    result = jaxfit.sweep(resume=str(tmp_path / "w" / "sw"), say=lambda *a: None)
    assert result.best_value is not None
    again = jaxfit.sweep(resume=str(tmp_path / "w" / "sw"), say=lambda *a: None)
    assert again.best_value == result.best_value  # nothing left: nothing logged
    _, parents, children = _runs(tmp_path / "w")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["jaxfit.trial"]) for r in children) == [0, 1]
    assert all(r.info.status == "FINISHED" for r in children)
    assert left.info.run_id not in {r.info.run_id for r in children}  # replaced


def test_without_mlflow_a_tracked_sweep_is_refused_before_anything(tmp_path):
    config = _config(tmp_path, FAILING, epochs=1)
    script = (  # mlflow absent: its import raises ImportError
        "import sys; sys.modules['mlflow'] = None\n"
        "from jaxfit._src.app import cli\n"
        f"sys.exit(cli.main(['sweep', {str(config)!r}, '--workdir', "
        f"{str(tmp_path / 'w')!r}]))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tracking.mlflow: needs mlflow: pip install mlflow" in done.stderr
    assert not (tmp_path / "w").exists()
