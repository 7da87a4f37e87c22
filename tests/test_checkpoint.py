"""trainer.save / restore / Trainer.load on orbax: the whole TrainState."""

import errno
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

pytest.importorskip(
    "orbax.checkpoint", reason="checkpoints are the optional ckpt extra"
)

X, Y = regression_data(n=12)


def _trainer(**kwargs):
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse", **kwargs
    )


def _leaves_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
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
    loaded = jaxfit.Trainer.load(
        tmp_path / "ckpt", linear_apply, optimizer=optax.adam(0.05), loss="mse"
    )
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
    wide = jaxfit.Trainer(
        linear_apply,
        {"w": jnp.zeros((5, 1)), "b": jnp.zeros(1)},
        optimizer=optax.adam(0.05),
        loss="mse",
    )
    wide.save(tmp_path / "wide")
    with pytest.raises(ValueError, match="does not match"):
        trainer.restore(tmp_path / "wide")
    assert trainer.state is before
    with pytest.raises(FileNotFoundError, match="path"):
        jaxfit.Trainer.load(
            tmp_path / "missing", linear_apply, optimizer=optax.adam(0.05), loss="mse"
        )


def _stateful_apply(params, x, *, train, rng, state):
    h = x @ params["w"] + params["b"]
    if train:
        state = {"mean": 0.5 * state["mean"] + 0.5 * jnp.mean(h)}
        h = h * jax.random.bernoulli(rng, 0.9, h.shape) / 0.9
    return h, state


def _stateful_trainer(seed=7):
    return jaxfit.Trainer(
        _stateful_apply,
        linear_params(),
        optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=0.05),
        loss="mse",
        state={"mean": jnp.zeros(())},
        seed=seed,
    )


def test_a_checkpoint_keeps_every_state_component(tmp_path):
    trainer = _stateful_trainer()
    stop = jaxfit.callbacks.EarlyStopping(monitor="loss", patience=5)
    plateau = jaxfit.callbacks.ReduceLROnPlateau(
        monitor="loss", patience=1, min_delta=10.0, factor=0.5
    )
    trainer.fit(X, Y, batch_size=4, epochs=3, verbose=0, callbacks=[stop, plateau])
    path = trainer.save(tmp_path / "ckpt", metadata={"config": {"name": "demo"}})

    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
        info = json.load(f)
    assert info["format"] == "jaxfit-checkpoint/1" and info["step"] == 9
    assert set(info["versions"]) >= {"jaxfit", "jax", "jaxlib", "optax"}
    assert info["seed"] == 7 and info["metadata"] == {"config": {"name": "demo"}}
    assert info["position"] == {"epoch": 3, "batch": 0, "stopped": False}
    saved = info["callbacks"]
    assert saved["History"]["epoch"] == [0, 1, 2]
    assert saved["History"]["history"]["loss"] == trainer.history.history["loss"]
    assert saved["EarlyStopping"]["best"] == stop.best
    assert saved["ReduceLROnPlateau"]["wait"] == plateau.wait
    assert trainer.learning_rate < 0.05  # reduced, and saved with the optimizer state

    other = _stateful_trainer(seed=0)
    returned = other.restore(path)
    assert returned["step"] == 9
    _leaves_equal(
        other.state, trainer.state
    )  # params, opt_state, model_state, rng, step
    assert other.seed == 7 and other.learning_rate == trainer.learning_rate
    np.testing.assert_array_equal(
        other.state.model_state["mean"], trainer.state.model_state["mean"]
    )


def test_weights_only_checkpoints_replace_only_the_params(tmp_path):
    trainer = _trainer()
    trainer.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    trainer.save(tmp_path / "weights", weights_only=True)
    other = _trainer()
    opt_before = other.state.opt_state
    other.restore(tmp_path / "weights")
    _leaves_equal(other.params, trainer.params)
    assert other.state.opt_state is opt_before and int(other.state.step) == 0
    loaded = jaxfit.Trainer.load(
        tmp_path / "weights", linear_apply, optimizer=optax.adam(0.05), loss="mse"
    )
    _leaves_equal(loaded.params, trainer.params)


def test_a_mismatched_checkpoint_names_the_first_differing_path_and_shapes(tmp_path):
    wide = jaxfit.Trainer(
        linear_apply,
        {"w": jnp.zeros((5, 1)), "b": jnp.zeros(1)},
        optimizer=optax.adam(0.05),
        loss="mse",
    )
    wide.save(tmp_path / "wide")
    trainer = _trainer()
    before = trainer.state
    with pytest.raises(ValueError) as info:
        trainer.restore(tmp_path / "wide")
    message = str(info.value)
    assert "'params/w'" in message and "(5, 1)" in message and "(3, 1)" in message
    assert trainer.state is before

    other = jaxfit.Trainer(
        linear_apply,
        {"w": jnp.zeros((3, 1)), "c": jnp.zeros(1)},
        optimizer=optax.adam(0.05),
        loss="mse",
    )
    with pytest.raises(ValueError, match="checkpoint has no 'params/c'"):
        other.restore(tmp_path / "wide")


def _fail_writes(monkeypatch):
    import orbax.checkpoint as ocp

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.StandardCheckpointer, "wait_until_finished", full)


def test_a_failed_save_raises_clearly_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    trainer = _trainer()
    trainer.save(tmp_path / "ckpt")
    trainer.fit(X, Y, batch_size=4, epochs=1, verbose=0)
    with monkeypatch.context() as patch:
        _fail_writes(patch)
        with pytest.raises(OSError) as info:
            trainer.save(tmp_path / "ckpt")
    assert info.value.errno == errno.ENOSPC
    assert "ckpt" in str(info.value) and "previous checkpoint" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    other = _trainer()
    other.restore(tmp_path / "ckpt")
    assert int(other.state.step) == 0

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="could not write the checkpoint"):
        trainer.save(blocker / "ckpt")
