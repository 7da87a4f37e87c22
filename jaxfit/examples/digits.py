"""An MLP on scikit-learn's offline digits data: ``python -m jaxfit.examples.digits``.

The same task as the main job (`jaxfit run digits_mlp`), in plain
Python with no YAML and no Flax: 1,797 8x8 digit images
(shipped inside scikit-learn, no download), a 64-128-10 MLP, Adam, and a
validation split of the last 20% of the samples. Reaches > 95% validation
accuracy in a few seconds (the samples are shuffled once before the split) on a laptop CPU.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits images scaled to [0, 1] as float32, and integer labels."""
    from sklearn.datasets import load_digits as sklearn_digits  # optional extra

    data = sklearn_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)


def init_mlp(rng: jax.Array, sizes: tuple[int, ...] = (64, 128, 10)) -> dict[str, Any]:
    """Glorot-uniform weights and zero biases for an MLP with the given sizes."""
    params = {}
    init = jax.nn.initializers.glorot_uniform()
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        rng, key = jax.random.split(rng)
        params[f"dense_{i}"] = {
            "w": init(key, (n_in, n_out), jnp.float32),
            "b": jnp.zeros((n_out,), jnp.float32),
        }
    return params


def mlp(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """ReLU hidden layers, logits out."""
    layers = [params[f"dense_{i}"] for i in range(len(params))]
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def train_and_evaluate(
    epochs: int = 30, seed: int = 0, verbose: Any = 2
) -> jaxfit.History:
    """Trains the MLP on digits and returns the History (``val_accuracy`` > 0.95)."""
    x, y = load_digits()
    # The file is ordered by writer, and validation_split takes the last 20%
    # before any shuffling (Keras, tfjs), so shuffle the samples once first.
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    trainer = jaxfit.Trainer(
        mlp,
        init_mlp(jax.random.PRNGKey(seed)),
        optimizer=optax.adam(3e-3),
        loss="sparse_categorical_crossentropy_from_logits",
        metrics=["accuracy"],
        seed=seed,
    )
    return trainer.fit(
        x, y, batch_size=64, epochs=epochs, validation_split=0.2, verbose=verbose
    )


def main(argv: list[str] | None = None) -> jaxfit.History:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = train_and_evaluate(epochs=args.epochs, seed=args.seed)
    final = {key: values[-1] for key, values in history.history.items()}
    print("final:", " - ".join(f"{k}: {v:.4f}" for k, v in final.items()))
    return history


if __name__ == "__main__":
    main()
