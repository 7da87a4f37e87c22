"""trainer.save / restore / Trainer.load on orbax: the whole TrainState."""

import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

pytest.importorskip("orbax.checkpoint", reason="checkpoints are the optional ckpt extra")

X, Y = regression_data(n=12)


def _trainer(**kwargs):
    return jaxfit.Trainer(linear_apply, linear_params(), optimizer=optax.adam(0.05),
                          loss="mse", **kwargs)


def _leaves_equal(a, b):
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trips_the_whole_state_and_resumes_identically(tmp_path):
    trainer = _trainer()
    trainer.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    path = trainer.save(tmp_path / "ckpt")
    assert os.path.isabs(path)
    continued = trainer.fit(X, Y, batch_size=4, epochs=4, initial_epoch=2, verbose=0)

    other = _trainer()
    other.restore(tmp_path / "ckpt")
    assert int(other.state.step) == 6
    resumed = other.fit(X, Y, batch_size=4, epochs=4, initial_epoch=2, verbose=0)
    assert resumed.history["loss"] == continued.history["loss"]
    _leaves_equal(other.state, trainer.state)


def test_load_builds_a_trainer_from_a_checkpoint(tmp_path):
    trainer = _trainer()
    trainer.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    trainer.save(tmp_path / "ckpt")
    loaded = jaxfit.Trainer.load(tmp_path / "ckpt", linear_apply,
                                 optimizer=optax.adam(0.05), loss="mse")
    _leaves_equal(loaded.state, trainer.state)
    np.testing.assert_allclose(loaded.predict(X), trainer.predict(X))


def test_saving_again_replaces_the_checkpoint_atomically(tmp_path):
    trainer = _trainer()
    trainer.save(tmp_path / "ckpt")
    trainer.fit(X, Y, epochs=1, verbose=0)
    trainer.save(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no staging leftovers
    other = _trainer()
    other.restore(tmp_path / "ckpt")
    assert int(other.state.step) == 1


def test_restore_errors_leave_the_state_untouched(tmp_path):
    trainer = _trainer()
    before = trainer.state
    with pytest.raises(FileNotFoundError, match="path"):
        trainer.restore(tmp_path / "missing")
    wide = jaxfit.Trainer(linear_apply, {"w": jnp.zeros((5, 1)), "b": jnp.zeros(1)},
                          optimizer=optax.adam(0.05), loss="mse")
    wide.save(tmp_path / "wide")
    with pytest.raises(ValueError, match="does not match"):
        trainer.restore(tmp_path / "wide")
    assert trainer.state is before
