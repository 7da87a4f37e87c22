"""Scale: data parallel over forced CPU devices and two processes (subprocesses),
gradient accumulation, mixed precision, and data that stays where it is."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

WORKER = os.path.join(os.path.dirname(__file__), "scale_worker.py")


def _env(devices):
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )


def _assert_close(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, err_msg=key)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices") / "result.json"
    result = subprocess.run(
        [sys.executable, WORKER, "devices", str(out)],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("batch_size", [8, 7])  # 7: padded and masked to 8
def test_history_does_not_depend_on_the_device_count(four_devices, batch_size):
    _assert_close(four_devices[f"four_{batch_size}"], four_devices[f"one_{batch_size}"])
    compiles = four_devices[f"compiles_{batch_size}"]
    assert compiles[0] > 0 and compiles == [compiles[0]] * 3  # none after epoch 1


def test_params_are_replicated_or_sharded_as_asked(four_devices):
    assert four_devices["replicated"] == [4, "P()"]
    assert four_devices["opt_replicated"] == [4, "P()"]
    # a 2x2 (data, model) mesh with rules: params and their Adam moments sharded
    assert four_devices["sharded_specs"] == ["P(None, 'model')", "P(None, 'model')"]
    assert four_devices["rule_fn_spec"] == "P(None, 'model')"
    _assert_close(four_devices["sharded"], four_devices["one_8"])
    assert four_devices["predict_shape"] == [90, 2]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(tmp_path, four_devices):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "process", str(port), str(rank), str(tmp_path)],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    histories = []
    for rank in (0, 1):
        with open(tmp_path / f"history-{rank}.json", encoding="utf-8") as f:
            histories.append(json.load(f))
    assert histories[0] == histories[1]
    _assert_close(histories[0], four_devices["four_8"])
    # only process 0 wrote its log (each process was given its own file name)
    assert (tmp_path / "log-0.csv").exists() and not (tmp_path / "log-1.csv").exists()


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_steps_match_a_k_times_larger_batch(k):
    x, y = regression_data(n=48)

    def run(batch_size, accumulate_steps):
        trainer = jaxfit.Trainer(
            linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
        )
        history = trainer.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=3,
            shuffle=False,
            verbose=0,
            accumulate_steps=accumulate_steps,
        )
        return trainer, history

    big, big_history = run(4 * k, 1)
    small, small_history = run(4, k)
    np.testing.assert_allclose(
        small_history.history["loss"], big_history.history["loss"], rtol=1e-5
    )
    for a, b in zip(jax.tree.leaves(small.params), jax.tree.leaves(big.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(small.state.step) == 3 * 12  # micro steps
    assert jax.tree.structure(small.state.opt_state) == jax.tree.structure(
        big.state.opt_state
    )  # back to the plain optimizer state after fit


def _digits_accuracy(precision):
    from jaxfit.examples.digits import init_mlp, load_digits, mlp

    x, y = load_digits()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    trainer = jaxfit.Trainer(
        mlp,
        init_mlp(jax.random.PRNGKey(0)),
        optimizer=optax.adam(3e-3),
        loss="sparse_categorical_crossentropy_from_logits",
        metrics=["accuracy"],
        precision=precision,
    )
    history = trainer.fit(
        x, y, batch_size=64, epochs=12, validation_split=0.2, verbose=0
    )
    return history.history["val_accuracy"][-1], trainer


def test_bfloat16_trains_digits_within_one_point_of_float32():
    pytest.importorskip("sklearn")
    reference, _ = _digits_accuracy("float32")
    for precision in ("mixed_bfloat16", "bfloat16"):
        accuracy, trainer = _digits_accuracy(precision)
        assert accuracy >= reference - 0.01, precision
        stored = trainer.params["dense_0"]["w"].dtype
        assert stored == (jnp.bfloat16 if precision == "bfloat16" else jnp.float32)


def test_float16_loss_scaling_survives_an_injected_overflow():
    x, y = regression_data(n=16)
    x[5, 0] = 1e6  # overflows float16 (max 65504) in batch 1 only
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.01),
        loss="mse",
        precision="mixed_float16",
    )
    before = jax.device_get(trainer.params)
    scales, steps = [], []

    class Watch(jaxfit.callbacks.Callback):
        def on_yield(self, epoch, batch, logs=None):
            scales.append(float(self.trainer.state.loss_scale.scale))
            steps.append(int(self.trainer.state.step))

    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        yield_every="batch",
        callbacks=[Watch()],
    )
    assert scales == [2.0**15, 2.0**14, 2.0**14, 2.0**14]  # lowered at the overflow
    assert steps == [1, 1, 2, 3]  # the overflowing step was skipped
    assert history.history["loss_scale"] == [2.0**14]  # visible in the logs
    params = jax.device_get(trainer.params)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    assert not np.array_equal(params["w"], before["w"])  # the other steps trained


def test_device_arrays_are_used_in_place_and_host_arrays_stay_on_the_host():
    x, y = regression_data(n=67)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )
    xd, yd = jax.device_put(x), jax.device_put(y)
    with jax.transfer_guard_device_to_host("disallow"):  # x, y never come back
        on_device = trainer.fit(
            xd, yd, batch_size=8, epochs=2, shuffle=False, verbose=0
        )
    other = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )
    on_host = other.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert on_device.history == on_host.history
    del xd, yd
    full = [a for a in jax.live_arrays() if a.shape in ((67, 3), (67, 1))]
    assert not full  # host data moved one block at a time, never whole


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"mesh": "all"}, "mesh"),
        (
            {
                "data_axis": "batch",
                "mesh": jax.sharding.Mesh(np.array(jax.devices()), ("data",)),
            },
            "data_axis",
        ),
        ({"precision": "float8"}, "precision"),
        ({"param_sharding": {"w": "model"}}, "param_sharding"),
    ],
)
def test_bad_scale_arguments_are_named(kwargs, argname):
    with pytest.raises((ValueError, TypeError), match=argname):
        jaxfit.Trainer(
            linear_apply,
            linear_params(),
            optimizer=optax.sgd(0.1),
            loss="mse",
            **kwargs,
        )


def test_accumulate_steps_is_validated_before_training():
    x, y = regression_data(n=8)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )
    before = trainer.state
    with pytest.raises(ValueError, match="accumulate_steps"):
        trainer.fit(x, y, accumulate_steps=0, verbose=0)
    assert trainer.state is before
