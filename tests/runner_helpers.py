"""User code for the runner tests, imported by configs as ``runner_helpers:...``."""

import os

import jax.numpy as jnp
import numpy as np

import jaxfit


def tiny_data(num_samples=64, seed=0):
    """A user dataset callable: returns the mapping the runner accepts."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 3)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    return {"x_train": x, "y_train": y, "task": "regression"}


def linear_model(sample_x, num_outputs, scale=0.0):
    """A user model callable: returns a jaxfit.Model."""
    params = {"w": jnp.full((sample_x.shape[1], num_outputs), scale, jnp.float32)}
    return jaxfit.Model(lambda params, x: x @ params["w"], params)


class InterruptOnce(jaxfit.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of ``epoch``, the first time only."""

    def __init__(self, epoch, marker):
        super().__init__()
        self.epoch, self.marker = epoch, marker

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise KeyboardInterrupt
