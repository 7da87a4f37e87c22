"""trainer.compile (Keras' habit): changing the optimizer, loss or metrics between
calls takes effect; a trainer without them (Trainer.load for inference) predicts and
says what is missing for fit and evaluate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=24)


def _trainer(**kwargs):
    kwargs.setdefault("optimizer", optax.sgd(0.1))
    kwargs.setdefault("loss", "mse")
    return jaxfit.Trainer(linear_apply, linear_params(), seed=0, **kwargs)


def test_a_new_loss_and_metrics_take_effect_and_params_are_kept():
    trainer = _trainer()
    trainer.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    params = jax.tree.map(np.asarray, trainer.params)
    trainer.compile(loss="mae", metrics=["mse"])
    logs = trainer.evaluate(X, Y, batch_size=8)
    pred = X @ params["w"] + params["b"]
    np.testing.assert_allclose(logs["loss"], np.mean(np.abs(pred - Y)), rtol=1e-5)
    np.testing.assert_allclose(logs["mse"], np.mean((pred - Y) ** 2), rtol=1e-5)
    history = trainer.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert set(history.history) == {"loss", "mse"}
    # the same as a fresh trainer built with that loss from those params and the
    # optimizer state it had
    fresh = jaxfit.Trainer(
        linear_apply, params, optimizer=optax.sgd(0.1), loss="mae", metrics=["mse"]
    )
    expected = fresh.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        history.history["loss"], expected.history["loss"], rtol=1e-5
    )


def test_assigning_an_attribute_compiles_too():
    trainer = _trainer()
    trainer.evaluate(X, Y)
    trainer.loss = "mae"
    trainer.metrics = ["mse"]
    assert trainer.loss == "mae"
    assert set(trainer.evaluate(X, Y)) == {"loss", "mse"}
    with pytest.raises(ValueError, match="metrics"):
        trainer.metrics = ["acuracy"]
    assert trainer.metrics == ["mse"]  # unchanged by the failed assignment


def test_a_new_optimizer_starts_from_a_fresh_state_and_the_same_one_keeps_it():
    trainer = _trainer(optimizer=optax.adam(0.1))
    trainer.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    count = int(trainer.state.opt_state[0].count)
    assert count == 6
    trainer.compile(optimizer=trainer.optimizer)  # the same object: state kept
    assert int(trainer.state.opt_state[0].count) == count
    params = jax.tree.map(np.asarray, trainer.params)
    trainer.optimizer = optax.sgd(0.5)
    assert isinstance(trainer.state.opt_state[0], optax.EmptyState)
    trainer.fit(X, Y, batch_size=24, epochs=1, shuffle=False, verbose=0)
    # one plain SGD step from the kept params
    grad_w = 2 * X.T @ (X @ params["w"] + params["b"] - Y) / len(X)
    np.testing.assert_allclose(
        trainer.params["w"], params["w"] - 0.5 * grad_w, rtol=1e-4, atol=1e-6
    )
    assert int(trainer.state.step) == 7


def test_bad_compile_arguments_change_nothing():
    trainer = _trainer()
    for kwargs, error in (
        (dict(optimizer="adam"), TypeError),
        (dict(loss="msee"), ValueError),
        (dict(weighted_metrics=["nope"]), ValueError),
    ):
        with pytest.raises(error):
            trainer.compile(**kwargs)
    assert trainer.loss == "mse" and trainer.metrics is None
    assert trainer.weighted_metrics is None


def test_compile_inside_fit_is_refused():
    trainer = _trainer()
    errors = []

    def change(epoch, logs):
        try:
            trainer.compile(loss="mae")
        except RuntimeError as error:
            errors.append(str(error))

    trainer.fit(X, Y, epochs=1, verbose=0, callbacks=[{"on_epoch_end": change}])
    assert errors and "between calls" in errors[0]


def test_a_trainer_without_optimizer_or_loss_predicts_and_names_what_is_missing():
    trainer = jaxfit.Trainer(linear_apply, linear_params())
    params = linear_params()
    np.testing.assert_allclose(
        trainer.predict(X), X @ params["w"] + params["b"], rtol=1e-5
    )
    with pytest.raises(
        ValueError,
        match="fit: this trainer has no optimizer and no "
        r"loss.*compile\(optimizer=..., loss=...\)",
    ):
        trainer.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: this trainer has no loss"):
        trainer.evaluate(X, Y)
    assert int(trainer.state.step) == 0
    trainer.compile(optimizer=optax.sgd(0.1), loss="mse")
    assert len(trainer.fit(X, Y, epochs=2, verbose=0).epoch) == 2


def test_load_without_optimizer_is_for_inference(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    state_apply = lambda p, x, *, state: (x @ p["w"] + state["shift"], state)  # noqa: E731
    trainer = jaxfit.Trainer(
        state_apply,
        linear_params(),
        state={"shift": jnp.ones(())},
        optimizer=optax.adam(0.1),
        loss="mse",
        seed=3,
    )
    trainer.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    trainer.save(tmp_path / "ckpt")
    loaded = jaxfit.Trainer.load(tmp_path / "ckpt", state_apply)
    np.testing.assert_allclose(loaded.predict(X), trainer.predict(X), rtol=1e-6)
    assert int(loaded.state.step) == 6 and loaded.seed == 3
    assert loaded.optimizer is None and loaded.state.opt_state is None
    with pytest.raises(ValueError, match="fit: this trainer has no optimizer"):
        loaded.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match="evaluate: this trainer has no loss"):
        loaded.evaluate(X, Y)
    # evaluation needs only a loss
    loaded.compile(loss="mse")
    np.testing.assert_allclose(
        loaded.evaluate(X, Y)["loss"], trainer.evaluate(X, Y)["loss"], rtol=1e-6
    )
