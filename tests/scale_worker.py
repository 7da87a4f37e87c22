"""Multi-device runs for test_scale.py, in a subprocess (not a test module).

python scale_worker.py devices OUT            # 4 forced CPU devices, one process
python scale_worker.py process PORT RANK OUT  # one of 2 processes x 2 devices
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

import jaxfit

COMPILES = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: COMPILES.__setitem__(
        0, COMPILES[0] + (event == "/jax/core/compile/backend_compile_duration")
    )
)


def apply(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def params():
    rng = np.random.default_rng(0)
    return {
        "w1": jnp.asarray(rng.normal(size=(5, 8)) * 0.5, jnp.float32),
        "b1": jnp.zeros((8,), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(8, 2)) * 0.5, jnp.float32),
    }


def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    return x, np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], 1).astype(np.float32)


def trainer(**kwargs):
    return jaxfit.Trainer(
        apply,
        params(),
        optimizer=optax.adam(0.02),
        loss="mse",
        metrics=["mae"],
        seed=0,
        **kwargs,
    )


def fit(t, batch_size, **kwargs):
    x, y = data()
    seen = []
    history = t.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=3,
        validation_split=0.2,
        verbose=0,
        callbacks=[{"on_epoch_end": lambda e, logs: seen.append(COMPILES[0])}],
        **kwargs,
    )
    return history.history, seen


def devices(out):
    assert jax.device_count() == 4
    result = {}
    for batch_size in (8, 7):  # 7: not divisible by 4, padded and masked
        result[f"one_{batch_size}"], _ = fit(trainer(mesh=None), batch_size)
        t = trainer()
        result[f"four_{batch_size}"], seen = fit(t, batch_size)
        result[f"compiles_{batch_size}"] = seen
        w1 = t.params["w1"].sharding
        result["replicated"] = [len(w1.device_set), str(w1.spec)]
        mu = t.state.opt_state[0].mu["w1"].sharding
        result["opt_replicated"] = [len(mu.device_set), str(mu.spec)]
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    rules = {
        "w1": PartitionSpec(None, "model"),
        "b1": PartitionSpec("model"),
        "w2": PartitionSpec("model", None),
    }
    t = trainer(mesh=mesh, param_sharding=rules)
    result["sharded"], _ = fit(t, 8)
    result["sharded_specs"] = [
        str(t.params["w1"].sharding.spec),
        str(t.state.opt_state[0].nu["w1"].sharding.spec),
    ]
    t = trainer(
        mesh=mesh,
        param_sharding=lambda path, leaf: (
            PartitionSpec(None, "model")
            if jax.tree_util.keystr(path) == "['w1']"
            else None
        ),
    )
    result["rule_fn_spec"] = str(t.params["w1"].sharding.spec)
    predictions = t.predict(data()[0], batch_size=7)
    result["predict_shape"] = list(predictions.shape)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def process(port, rank, out):
    jaxfit.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=int(rank)
    )
    assert jax.process_count() == 2 and jax.device_count() == 4
    csv = os.path.join(out, f"log-{jax.process_index()}.csv")
    t = trainer()
    x, y = data()
    history = t.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        validation_split=0.2,
        verbose=0,
        callbacks=[
            jaxfit.callbacks.CSVLogger(csv),
            jaxfit.callbacks.EarlyStopping(monitor="loss", patience=50),
        ],
    )
    with open(os.path.join(out, f"history-{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(history.history, f)


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        process(*sys.argv[2:])
