"""Gradient accumulation: the mean gradient over a group's real samples, so k
batches of b equal one batch of k * b on a ragged epoch too."""

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=45)  # 45 = 2 * 16 + 13: a ragged last batch
X48, Y48 = regression_data(n=48, seed=2)  # 48 = 3 * 16: full batches
W = np.random.default_rng(1).uniform(0.2, 2.0, size=45).astype(np.float32)


def _fit(batch_size, k, weights=None, policy="float32", n=45, epochs=2):
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(0.05),
        loss="mse",
        precision=policy,
    )
    history = trainer.fit(
        X[:n], Y[:n], sample_weight=None if weights is None else weights[:n],
        batch_size=batch_size, epochs=epochs, accumulate_steps=k, verbose=0,
    )  # fmt: skip
    return trainer, history.history


def _close(a, b, rtol=1e-6, atol=1e-7):
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(
            np.asarray(u, np.float32), np.asarray(v, np.float32), rtol, atol
        )


@pytest.mark.parametrize("weights", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("k, batch_size", [(2, 16), (4, 8), (3, 4)])
def test_k_batches_equal_one_k_times_larger_on_a_ragged_epoch(k, batch_size, weights):
    small, small_logs = _fit(batch_size, k, weights)
    big, big_logs = _fit(batch_size * k, 1, weights)
    _close(small, big)
    np.testing.assert_allclose(small_logs["loss"], big_logs["loss"], rtol=1e-6)
    plain, _ = _fit(batch_size, 1, weights)  # not accumulated: another run
    assert not np.allclose(plain.params["w"], big.params["w"], rtol=1e-3)
    steps = 2 * -(-45 // batch_size)
    assert int(small.state.step) == steps  # micro steps


def _plain(x, y, batch_size, k, epochs):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )
    trainer.fit(x, y, batch_size=batch_size, epochs=epochs, accumulate_steps=k,
                verbose=0, shuffle=False)  # fmt: skip
    return trainer


def test_groups_run_on_across_full_epochs_and_a_partial_one_is_dropped():
    # 48 = 3 full batches of 16: over two epochs the groups are (1, 2) (3, 1) (2, 3)
    across = _plain(X48, Y48, 16, 2, epochs=2)
    twice = np.concatenate([X48, X48]), np.concatenate([Y48, Y48])
    _close(across, _plain(*twice, 32, 1, epochs=1))
    assert int(across.state.step) == 6
    # one epoch: batch 3 is left pending when fit ends, and dropped
    _close(_plain(X48, Y48, 16, 2, epochs=1), _plain(X48[:32], Y48[:32], 32, 1, 1))


def test_mixed_float16_with_accumulation_still_trains():
    small, logs = _fit(16, 2, policy="mixed_float16")
    big, _ = _fit(32, 1, policy="mixed_float16")
    _close(small, big, rtol=2e-3, atol=2e-3)  # float16 compute rounds apart
    assert logs["loss"][-1] < logs["loss"][0] and "loss_scale" in logs
