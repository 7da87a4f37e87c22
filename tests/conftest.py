"""Shared fixtures: fixed seeds, tiny data, a compile counter, the device matrix.

The device matrix: CI (and the README's test command) runs this suite twice, on one
device and with ``XLA_FLAGS=--xla_force_host_platform_device_count=8
JAX_PLATFORMS=cpu`` (8 CPU devices, a TPU v2-8's shape). That environment variable
is the one switch: every test builds its trainers with the default ``mesh="auto"``,
so in the second run every path is 8-way data parallel. ``DEVICES`` is the count
seen. tests/test_devices.py compares ``mesh="auto"`` with ``mesh=None`` in one
process: 8 devices against 1 in the second run. What no device count changes
(``one_device_pass``: the wheel installed in a fresh venv, the docs site) runs in
the first run only.
"""

import os

# Keras is a test-only cross-check, and only on the JAX backend.
os.environ.setdefault("KERAS_BACKEND", "jax")

import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Ctrl-C deliverable, as from a terminal: a shell without job control starts a
# background job (a CI launched with `&`) with SIGINT ignored, which Python, its
# pytest-xdist workers and every child process they start keep; the tests that
# send Ctrl-C to a child (test_runner_interrupt, test_startup, test_stream_hang)
# need it. (Serially, test_errors happened to reset it before them; on two
# workers a worker without test_errors failed them.) Children reset a handler to the default on exec, then install
# Python's own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# optax's own transforms (adam's bias correction) are not clean under strict dtype
# promotion, so it is not switched on globally; test_fit runs jaxfit's own code
# under `jax.numpy_dtype_promotion("strict")` instead.

_COMPILES = [0]
_NAMES: list[str] = []  # the compiled functions' names, in order


def _on_event(event: str, duration: float, **kwargs) -> None:
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1
        _NAMES.append(str(kwargs.get("fun_name", "")))


jax.monitoring.register_event_duration_secs_listener(_on_event)

DEVICES = jax.device_count()

# What no device count changes (a wheel built and installed in a fresh venv, the
# documentation site built): checked in the 1-device pass only, not again on 8.
one_device_pass = pytest.mark.skipif(
    DEVICES > 1,
    reason="device-independent (packaging, the docs site): the 1-device pass runs it",
)


def pytest_report_header(config):
    del config
    return f"jaxfit device matrix: {DEVICES} {jax.default_backend()} device(s)"


class CompileCounter:
    """Counts XLA backend compilations since ``reset()``."""

    def __init__(self):
        self.start = _COMPILES[0]

    def reset(self):
        self.start = _COMPILES[0]

    @property
    def count(self) -> int:
        return _COMPILES[0] - self.start

    def named(self, name: str) -> int:
        """How many of them compiled a function called ``name`` (``jit(name)``)."""
        return sum(1 for n in _NAMES[self.start :] if n == f"jit({name})")


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
