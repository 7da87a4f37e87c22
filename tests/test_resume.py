"""Exact resume: runs killed with SIGKILL and restarted under BackupAndRestore end
bit-identical to an uninterrupted run (params, optimizer, rng, model state, History).

Each run is a subprocess executing ``resume_worker.py``.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip(
    "orbax.checkpoint", reason="checkpoints are the optional ckpt extra"
)

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")


def _run(out, backup_dir, save_freq, kill="none", expect=0, write="sync"):
    result = subprocess.run(
        [
            sys.executable,
            WORKER,
            str(out),
            str(backup_dir),
            str(save_freq),
            kill,
            write,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == expect, result.stderr[-3000:]
    if expect:
        return None
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        run = json.load(f)
    return run, dict(np.load(os.path.join(out, "state.npz")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    return _run(root / "out", root / "backup", "epoch")


# (save_freq, kill spec, epochs the resumed process runs, its first batch index)
CASES = [
    ("epoch", "epoch:2", [2, 3], 0),  # killed between epochs 2 and 3 (of 4)
    (5, "batch:2:7:5", [2, 3], 5),  # killed mid-epoch; the backup is 5 batches in
    # killed the moment the first backup's hook returns: that backup is on disk
    ("epoch", "backup:0", [1, 2, 3], 0),
]


@pytest.mark.parametrize("save_freq,kill,ran,first_batch", CASES)
def test_a_killed_run_resumes_bit_identical(
    tmp_path, uninterrupted, save_freq, kill, ran, first_batch
):
    expected_run, expected_state = uninterrupted
    backup = tmp_path / "backup"
    _run(tmp_path / "killed", backup, save_freq, kill, expect=-signal.SIGKILL)
    assert not os.path.exists(tmp_path / "killed" / "run.json")
    assert any(name.startswith("backup-") for name in os.listdir(backup))

    run, state = _run(tmp_path / "resumed", backup, save_freq)
    assert run["ran"] == ran and run["first_batch"] == first_batch  # it did resume
    assert run["history"] == expected_run["history"]  # exact floats
    assert run["epoch"] == expected_run["epoch"] == [0, 1, 2, 3]
    assert state.keys() == expected_state.keys()
    for key in state:
        np.testing.assert_array_equal(state[key], expected_state[key])
    assert not run["backup_left"]  # delete_checkpoint after a normal end
    # The run changed its learning rate on a plateau: the schedule state resumed too.
    assert len(set(run["history"]["learning_rate"])) > 1


def test_a_kill_with_background_writes_loses_at_most_the_newest_backup(
    tmp_path, uninterrupted
):
    # write_in_background=True: killed the moment epoch 1's backup hook returns,
    # backup 1 may still be in flight, but backup 0 is complete (the hook waited
    # for it before starting backup 1), so the rerun resumes at epoch 1 or 2.
    expected_run, expected_state = uninterrupted
    backup = tmp_path / "backup"
    _run(
        tmp_path / "killed",
        backup,
        "epoch",
        "backup:1",
        expect=-signal.SIGKILL,
        write="background",
    )
    run, state = _run(tmp_path / "resumed", backup, "epoch", write="background")
    assert run["ran"] in ([1, 2, 3], [2, 3]) and run["first_batch"] == 0
    assert run["history"] == expected_run["history"]
    assert run["epoch"] == [0, 1, 2, 3]
    for key in expected_state:
        np.testing.assert_array_equal(state[key], expected_state[key])
    assert not run["backup_left"]


_KILL_INSIDE_SAVE = """
import os, signal, sys
import numpy as np, optax
sys.path.insert(0, {tests!r})
from conftest import linear_apply, linear_params, regression_data
import jaxfit

where, path = sys.argv[1], sys.argv[2]
x, y = regression_data(n=12)
trainer = jaxfit.Trainer(linear_apply, linear_params(), optimizer=optax.adam(0.05),
                         loss="mse")
trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
trainer.save(path)                    # the checkpoint that must survive (step 3)
trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if where == "orbax":                  # while orbax writes the arrays
    import orbax.checkpoint as ocp
    ocp.StandardCheckpointer.save = die
else:                                 # before / between the renames into place
    calls = [0]
    real = os.replace
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == int(where):
            die()
        return real(src, dst)
    os.replace = replace
trainer.save(path)
"""


@pytest.mark.parametrize("where", ["orbax", "1", "2"])
def test_a_kill_inside_save_leaves_the_previous_checkpoint_loadable(tmp_path, where):
    import optax
    from conftest import linear_apply, linear_params

    import jaxfit

    script = _KILL_INSIDE_SAVE.format(tests=os.path.dirname(__file__))
    path = tmp_path / "ckpt"
    result = subprocess.run(
        [sys.executable, "-c", script, where, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )
    trainer.restore(path)
    assert int(trainer.state.step) == 3  # the first save, whole
    trainer.save(path)  # and the next save cleans up what the kill left
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


_SAVE_ON_FOUR_DEVICES = """
import sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, {tests!r})
from conftest import linear_apply, regression_data
import jaxfit

assert jax.device_count() == 4
mesh = Mesh(np.array(jax.devices()), ("data",))
params = {{"w": jax.device_put(jnp.arange(12.0).reshape(3, 4) / 10,
                              NamedSharding(mesh, P(None, "data"))),
          "b": jax.device_put(jnp.zeros(4), NamedSharding(mesh, P()))}}
trainer = jaxfit.Trainer(linear_apply, params, optimizer=optax.adam(0.05), loss="mse")
x, y = regression_data(n=16, n_out=4)
trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
assert len(trainer.params["w"].sharding.device_set) == 4
trainer.save(sys.argv[1])
np.savez(sys.argv[2], **{{k: np.asarray(v) for k, v in trainer.params.items()}})
"""


def test_a_checkpoint_from_four_devices_restores_onto_one(tmp_path):
    import jax
    import optax
    from conftest import linear_apply

    import jaxfit

    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
    )
    script = _SAVE_ON_FOUR_DEVICES.format(tests=os.path.dirname(__file__))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ckpt"), str(tmp_path / "p.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = np.load(tmp_path / "p.npz")

    trainer = jaxfit.Trainer.load(
        tmp_path / "ckpt",
        linear_apply,
        mesh=None,
        optimizer=optax.adam(0.05),
        loss="mse",
    )
    device = jax.devices()[0]
    for name in ("w", "b"):
        assert trainer.params[name].sharding.device_set == {device}
        np.testing.assert_array_equal(np.asarray(trainer.params[name]), expected[name])
    assert int(trainer.state.step) == 4
