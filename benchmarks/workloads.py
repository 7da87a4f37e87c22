"""Benchmark workloads: the same synthetic data and model for every implementation.

Each workload is a dict of sizes (``FULL`` and the ``--quick`` ``QUICK``). ``data``
makes float32 inputs and int32 labels from a fixed seed; ``init`` / ``apply`` are
the pure-JAX model every JAX implementation shares (the ResNet-style CNN is the
YAML runner's Flax module, through ``jaxfit.from_flax``); Keras and Flax NNX
build the same architecture in their own idiom (``benchmarks/external.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FULL = {
    "tiny": {
        "model": "mlp",
        "sizes": [10, 32, 2],
        "batch": 32,
        "samples": 20_000,
        "epochs": 5,
    },
    "mlp": {
        "model": "mlp",
        "sizes": [784, 512, 512, 10],
        "batch": 128,
        "samples": 60_000,
        "epochs": 4,
    },
    "cnn": {
        "model": "cnn",
        "image": 32,
        "channels": [16, 32, 64],
        "classes": 10,
        "batch": 256,
        "samples": 10_240,
        "epochs": 4,
    },
    "callbacks": {
        "model": "mlp",
        "sizes": [10, 32, 2],
        "batch": 32,
        "samples": 20_000,
        "epochs": 5,
        "callbacks": True,
    },
}
QUICK = {
    "tiny": {**FULL["tiny"], "epochs": 4},
    "mlp": {**FULL["mlp"], "samples": 6_400, "epochs": 3},
    "cnn": {
        **FULL["cnn"],
        "image": 16,
        "channels": [8, 16],
        "samples": 512,
        "batch": 64,
        "epochs": 3,
    },
    "callbacks": {**FULL["callbacks"], "epochs": 4},
}


def data(spec: dict[str, Any], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic, learnable: labels from a fixed random projection of the inputs."""
    rng = np.random.default_rng(seed)
    n = spec["samples"]
    if spec["model"] == "mlp":
        x = rng.normal(size=(n, spec["sizes"][0])).astype(np.float32)
        classes = spec["sizes"][-1]
    else:
        size = spec["image"]
        x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
        classes = spec["classes"]
    projection = rng.normal(size=(int(np.prod(x.shape[1:])), classes))
    y = np.argmax(x.reshape(n, -1) @ projection, axis=1).astype(np.int32)
    return x, y


def num_classes(spec: dict[str, Any]) -> int:
    return spec["sizes"][-1] if spec["model"] == "mlp" else spec["classes"]


def model(spec: dict[str, Any], seed: int = 0) -> Any:
    """A ``jaxfit.Model``: the MLP in plain jax.numpy, the CNN through from_flax."""
    import jax
    import jax.numpy as jnp

    import jaxfit

    if spec["model"] == "mlp":
        sizes = spec["sizes"]
        keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) - 1)
        init = jax.nn.initializers.glorot_uniform()
        params = [
            {"w": init(k, (a, b), jnp.float32), "b": jnp.zeros((b,), jnp.float32)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])
        ]

        def apply(params, x):
            for layer in params[:-1]:
                x = jax.nn.relu(x @ layer["w"] + layer["b"])
            return x @ params[-1]["w"] + params[-1]["b"]

        return jaxfit.Model(apply, params)
    from jaxfit._src.runner import zoo

    x, _ = data({**spec, "samples": 2})
    return zoo.resnet(
        sample_x=x,
        num_outputs=spec["classes"],
        seed=seed,
        stage_channels=tuple(spec["channels"]),
    )
