"""Data-parallel scaling on forced CPU devices, and precision throughput.

    python benchmarks/scaling.py [--devices 1,2,4] [--epochs 4] [--skip-precision]

Part 1 runs the same MLP fit (784-512-512-10, global batch 256, synthetic data) in
a subprocess per device count with ``--xla_force_host_platform_device_count=N``
and ``mesh="auto"``, and reports the steady epoch time (median of the epochs after
the first), samples/s, speed-up and scaling efficiency (speed-up / N). Forced CPU
"devices" share this machine's cores, so efficiency here measures the driver's and
XLA's partitioning overhead, not real parallel hardware: on a 2-core machine 4
devices cannot be faster than 2.

Part 2 trains the runner's ResNet-style CNN (32x32x3, batch 128) in float32,
mixed_bfloat16 and bfloat16 on the default backend and reports samples/s (on an
accelerator with bfloat16 units the mixed policies should win; on CPU they
usually lose, bfloat16 being emulated). ``--precision-samples`` sets the data
size (1024 on a GPU; keep it small on CPU, where this model is slow).

Measured here (2-core x86 CPU, jax 0.10.2, 2026-11-25, --epochs 3):

| devices | first epoch s | steady epoch s | samples/s | speed-up | efficiency |
|---|---|---|---|---|---|
| 1 | 0.90 | 0.204 | 40100 | 1.00x | 100% |
| 2 | 1.38 | 0.364 | 22490 | 0.56x | 28% |
| 4 | 1.86 | 0.520 | 15767 | 0.39x | 10% |

The final losses agree to 4 digits (1.3619 / 1.3616 / 1.3615). One forced CPU
device already uses both cores (XLA's intra-op threads), so splitting the same
cores into 2 or 4 "devices" only adds partitioning and synchronisation: these
numbers are an upper bound on the driver's multi-device overhead, not a
prediction for real accelerators. Precision (1024 samples, CPU): float32 19
samples/s, mixed_bfloat16 18, bfloat16 18 (bfloat16 is emulated on this CPU).
Not measured on a GPU: this session was not lent one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax, jaxfit

epochs = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.normal(size=(8192, 784)).astype(np.float32)
y = rng.integers(0, 10, size=8192).astype(np.int32)
init = jax.nn.initializers.glorot_uniform()
keys = jax.random.split(jax.random.PRNGKey(0), 3)
sizes = [784, 512, 512, 10]
params = [{"w": init(k, (a, b)), "b": jnp.zeros(b)} for k, a, b in
          zip(keys, sizes[:-1], sizes[1:])]

def apply(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]

times = []
class Clock(jaxfit.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t)

trainer = jaxfit.Trainer(apply, params, optimizer=optax.adam(1e-3),
                         loss="sparse_categorical_crossentropy_from_logits")
history = trainer.fit(x, y, batch_size=256, epochs=epochs, verbose=0,
                      callbacks=[Clock()])
print(json.dumps({"devices": jax.device_count(), "times": times,
                  "loss": history.history["loss"][-1]}))
"""


def scaling(device_counts: list[int], epochs: int) -> list[dict]:
    rows = []
    for n in device_counts:
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
        )
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(epochs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        steady = statistics.median(result["times"][1:])
        rows.append(
            {
                "devices": n,
                "first_s": result["times"][0],
                "steady_s": steady,
                "samples_per_s": 8192 / steady,
                "loss": result["loss"],
            }
        )
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base
        row["efficiency"] = row["speedup"] / (row["devices"] / rows[0]["devices"])
    return rows


def precision(epochs: int, samples: int) -> list[dict]:
    import numpy as np
    import optax

    import jaxfit
    from jaxfit._src.runner import zoo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=samples).astype(np.int32)
    rows = []
    for policy in ("float32", "mixed_bfloat16", "bfloat16"):
        model = zoo.resnet(
            sample_x=x[:2], num_outputs=10, seed=0, stage_channels=(16, 32, 64)
        )
        times: list[float] = []

        class Clock(jaxfit.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)  # noqa: B023 - this run's list

        trainer = jaxfit.Trainer(
            model,
            optimizer=optax.adam(1e-3),
            loss="sparse_categorical_crossentropy_from_logits",
            precision=policy,
        )
        history = trainer.fit(
            x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[Clock()]
        )
        steady = statistics.median(times[1:])
        rows.append(
            {
                "precision": policy,
                "steady_s": steady,
                "samples_per_s": len(x) / steady,
                "loss": history.history["loss"][-1],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--precision-samples", type=int, default=256)
    args = parser.parse_args()
    rows = scaling([int(n) for n in args.devices.split(",")], args.epochs)
    print(
        "| devices | first epoch s | steady epoch s | samples/s | speed-up | "
        "efficiency | final loss |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['first_s']:.2f} | {r['steady_s']:.3f} | "
            f"{r['samples_per_s']:.0f} | {r['speedup']:.2f}x | "
            f"{r['efficiency']:.0%} | {r['loss']:.4f} |"
        )
    if args.skip_precision:
        return
    import jax

    print(f"\nprecision on {jax.default_backend()} ({jax.devices()[0].device_kind}):")
    print("| precision | steady epoch s | samples/s | final loss |")
    print("|---|---|---|---|")
    for r in precision(args.epochs, args.precision_samples):
        print(
            f"| {r['precision']} | {r['steady_s']:.3f} | {r['samples_per_s']:.0f} | "
            f"{r['loss']:.4f} |"
        )


if __name__ == "__main__":
    main()
