"""Shared fixtures: fixed seeds, tiny data, a compile counter."""

import os

# Keras is a test-only cross-check, and only on the JAX backend.
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# optax's own transforms (adam's bias correction) are not clean under strict dtype
# promotion, so it is not switched on globally; test_fit runs jaxfit's own code
# under `jax.numpy_dtype_promotion("strict")` instead.

_COMPILES = [0]


def _on_event(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


class CompileCounter:
    """Counts XLA backend compilations since ``reset()``."""

    def __init__(self):
        self.start = _COMPILES[0]

    def reset(self):
        self.start = _COMPILES[0]

    @property
    def count(self) -> int:
        return _COMPILES[0] - self.start


@pytest.fixture
def compiles():
    return CompileCounter()


def import_keras():
    """Keras on the JAX backend, or a skip saying why it is unavailable."""
    keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
    if keras.backend.backend() != "jax":
        pytest.skip("keras is not on the JAX backend (set KERAS_BACKEND=jax)")
    return keras


def linear_apply(params, x):
    return x @ params["w"] + params["b"]


def linear_params(n_in=3, n_out=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(n_in, n_out)), jnp.float32),
        "b": jnp.zeros((n_out,), jnp.float32),
    }


def regression_data(n=10, n_in=3, n_out=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype(np.float32)
    y = rng.normal(size=(n, n_out)).astype(np.float32)
    return x, y
