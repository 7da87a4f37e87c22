"""from_flax, from_nnx, from_equinox: module libraries through Trainer."""

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit

N, N_IN, HIDDEN = 32, 3, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, N_IN)).astype(np.float32)
    y = (x @ rng.normal(size=(N_IN, 1)) + 0.5).astype(np.float32)
    return x, y


def _fit(model, epochs=8, seed=0):
    x, y = _data()
    trainer = jaxfit.Trainer(model, optimizer=optax.adam(1e-2), loss="mse", seed=seed)
    history = trainer.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return trainer, history


def _assert_dropout_only_in_training(model):
    """Train-mode outputs depend on the rng (dropout); eval-mode outputs do not."""
    x, _ = _data()
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)

    apply = jax.jit(model.apply_fn, static_argnames="train")

    def run(train, rng):
        return apply(model.params, x, train=train, rng=rng, state=model.state)[0]

    assert not np.allclose(run(True, k1), run(True, k2))
    np.testing.assert_array_equal(run(False, k1), run(False, k2))


def _assert_state_changed(before, after):
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, after)
    assert any(jax.tree.leaves(changed))


# -- Flax Linen -------------------------------------------------------------------


@pytest.fixture(scope="module")
def linen():
    return pytest.importorskip("flax.linen")


def _linen_net(linen):
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool):
            h = linen.Dense(HIDDEN)(x)
            h = linen.BatchNorm(use_running_average=not train, momentum=0.9)(h)
            h = linen.Dropout(0.1, deterministic=not train)(linen.relu(h))
            return linen.Dense(1)(h)

    return Net()


@pytest.fixture(scope="module")
def linen_run(linen):
    """(module, model, trainer, history): the BatchNorm + Dropout net, trained once."""
    x, _ = _data()
    module = _linen_net(linen)
    model = jaxfit.from_flax(module, x[:2], seed=3)
    return (module, model, *_fit(model))


def test_from_flax_trains_batch_norm_and_dropout(linen_run):
    x, _ = _data()
    module, model, trainer, history = linen_run
    assert sorted(model.state) == ["batch_stats"]
    assert history.history["loss"][-1] < history.history["loss"][0]
    _assert_state_changed(model.state, trainer.state.model_state)
    expected = jax.jit(lambda variables, x: module.apply(variables, x, train=False))(
        {"params": trainer.params, **trainer.state.model_state}, x
    )
    np.testing.assert_allclose(trainer.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_from_flax_dropout_is_on_in_training_only(linen):
    x, _ = _data()
    _assert_dropout_only_in_training(jaxfit.from_flax(_linen_net(linen), x[:2]))


def _linen_mode_nets(linen):
    """One dropout net per mode-argument name that from_flax recognises."""

    class Train(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool):
            return linen.Dropout(0.5, deterministic=not train)(linen.Dense(4)(x))

    class Training(linen.Module):
        @linen.compact
        def __call__(self, x, *, training: bool = False):
            return linen.Dropout(0.5, deterministic=not training)(linen.Dense(4)(x))

    class Deterministic(linen.Module):
        @linen.compact
        def __call__(self, x, deterministic: bool = True):
            return linen.Dropout(0.5, deterministic=deterministic)(linen.Dense(4)(x))

    return {"train": Train, "training": Training, "deterministic": Deterministic}


@pytest.mark.parametrize("flag", ["train", "training", "deterministic"])
def test_from_flax_passes_the_mode_by_its_call_signature(linen, flag):
    x, _ = _data()
    model = jaxfit.from_flax(_linen_mode_nets(linen)[flag](), x[:2])
    assert model.state == {}
    _assert_dropout_only_in_training(model)


def test_from_flax_passes_use_running_average(linen):
    x, _ = _data()
    model = jaxfit.from_flax(linen.BatchNorm(momentum=0.5), x[:2])
    rng = jax.random.PRNGKey(0)
    y, state = model.apply_fn(model.params, x, train=False, rng=rng, state=model.state)
    assert state is model.state
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-5)  # initial stats
    _, state = model.apply_fn(model.params, x, train=True, rng=rng, state=model.state)
    _assert_state_changed(model.state, state)


def test_from_flax_module_without_a_mode_argument(linen):
    x, _ = _data()
    model = jaxfit.from_flax(linen.Dense(1), x[:2])
    assert sorted(model.params) == ["bias", "kernel"]
    assert model.state == {}
    trainer, history = _fit(model, epochs=3)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_allclose(
        trainer.predict(x),
        x @ trainer.params["kernel"] + trainer.params["bias"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_from_flax_same_seed_same_history(linen, linen_run):
    x, _ = _data()
    _, _, _, first = linen_run
    _, second = _fit(jaxfit.from_flax(_linen_net(linen), x[:2], seed=3))
    assert second.history == first.history
    assert second.epoch == first.epoch == list(range(8))


def test_from_flax_rejects_an_nnx_module(linen):
    from flax import nnx

    class Empty(nnx.Module):
        pass

    with pytest.raises(
        TypeError, match=r"(?s)module: expected a flax.linen.Module.*from_nnx"
    ):
        jaxfit.from_flax(Empty(), np.ones((2, 3), np.float32))


def test_from_flax_rejects_a_bad_seed(linen):
    for seed in (-1, 2**63):
        with pytest.raises(
            ValueError,
            match=rf"seed: expected an integer in \[0, 2\*\*63\), got {seed}",
        ):
            jaxfit.from_flax(linen.Dense(1), np.ones((2, 3), np.float32), seed=seed)


# -- Flax NNX ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nnx():
    return pytest.importorskip("flax.nnx")


def _nnx_net(nnx, rngs):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense1 = nnx.Linear(N_IN, HIDDEN, rngs=rngs)
            self.norm = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
            self.dropout = nnx.Dropout(0.1, rngs=rngs)
            self.dense2 = nnx.Linear(HIDDEN, 1, rngs=rngs)

        def __call__(self, x):
            h = self.dropout(nnx.relu(self.norm(self.dense1(x))))
            return self.dense2(h)

    return Net(rngs)


@pytest.fixture(scope="module")
def nnx_run(nnx):
    """(module, model, trainer, history): the net (dropout stream 1), trained once."""
    module = _nnx_net(nnx, nnx.Rngs(params=0, dropout=1))
    model = jaxfit.from_nnx(module)
    return (module, model, *_fit(model))


def test_from_nnx_trains_batch_norm_and_dropout(nnx, nnx_run):
    x, _ = _data()
    module, model, trainer, history = nnx_run
    assert sorted(model.params) == ["dense1", "dense2", "norm"]
    assert sorted(model.state) == ["norm"]  # mean and var; no RNG streams
    assert history.history["loss"][-1] < history.history["loss"][0]
    _assert_state_changed(model.state, trainer.state.model_state)
    np.testing.assert_array_equal(  # from_nnx and training leave the module alone
        module.dense1.kernel[...], model.params["dense1"]["kernel"]
    )
    nnx.update(module, trainer.params, trainer.state.model_state)
    module.eval()
    np.testing.assert_allclose(trainer.predict(x), module(x), rtol=1e-5, atol=1e-6)


def test_from_nnx_dropout_is_on_in_training_only(nnx):
    _assert_dropout_only_in_training(jaxfit.from_nnx(_nnx_net(nnx, nnx.Rngs(0))))


def test_from_nnx_dropout_follows_the_trainer_seed(nnx, nnx_run):
    """The module's own dropout stream does not matter; the trainer's seed does."""
    _, _, _, reference = nnx_run  # dropout stream 1, trainer seed 0

    def run(dropout_seed, seed):
        module = _nnx_net(nnx, nnx.Rngs(params=0, dropout=dropout_seed))
        return _fit(jaxfit.from_nnx(module), seed=seed)[1]

    assert run(dropout_seed=2, seed=0).history == reference.history
    assert run(dropout_seed=1, seed=1).history != reference.history


def test_from_nnx_rejects_a_linen_module(nnx):
    from flax import linen

    with pytest.raises(
        TypeError, match=r"(?s)module: expected a flax.nnx.Module.*from_flax"
    ):
        jaxfit.from_nnx(linen.Dense(1))


# -- Equinox ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def eqx():
    return pytest.importorskip("equinox")


def test_from_equinox_trains_an_mlp(eqx):
    x, _ = _data()
    mlp = eqx.nn.MLP(N_IN, 1, width_size=HIDDEN, depth=1, key=jax.random.PRNGKey(0))
    model = jaxfit.from_equinox(mlp)
    assert model.state == {}
    trainer, history = _fit(model)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, static = eqx.partition(mlp, eqx.is_inexact_array)
    trained = eqx.nn.inference_mode(eqx.combine(trainer.params, static))
    np.testing.assert_allclose(
        trainer.predict(x), jax.vmap(trained)(x), rtol=1e-5, atol=1e-6
    )


def _eqx_net(eqx):
    class Net(eqx.Module):
        dense1: eqx.nn.Linear
        norm: eqx.nn.BatchNorm
        dropout: eqx.nn.Dropout
        dense2: eqx.nn.Linear

        def __init__(self, key):
            key1, key2 = jax.random.split(key)
            self.dense1 = eqx.nn.Linear(N_IN, HIDDEN, key=key1)
            self.norm = eqx.nn.BatchNorm(
                HIDDEN, axis_name="batch", momentum=0.9, mode="ema"
            )
            self.dropout = eqx.nn.Dropout(0.1)
            self.dense2 = eqx.nn.Linear(HIDDEN, 1, key=key2)

        def __call__(self, x, state, *, key=None):
            h, state = self.norm(self.dense1(x), state)
            h = self.dropout(jax.nn.relu(h), key=key)
            return self.dense2(h), state

    return eqx.nn.make_with_state(Net)(jax.random.PRNGKey(0))


def test_from_equinox_trains_batch_norm_and_dropout(eqx):
    x, _ = _data()
    net, state = _eqx_net(eqx)
    model = jaxfit.from_equinox(net, state=state)
    trainer, history = _fit(model)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _assert_state_changed(state, trainer.state.model_state)
    trained = eqx.nn.inference_mode(eqx.combine(trainer.params, net))
    expected, _ = jax.vmap(
        trained, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
    )(x, trainer.state.model_state)
    np.testing.assert_allclose(trainer.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_from_equinox_dropout_is_on_in_training_only(eqx):
    net, state = _eqx_net(eqx)
    _assert_dropout_only_in_training(jaxfit.from_equinox(net, state=state))


def test_from_equinox_without_vmap_gets_the_whole_batch(eqx):
    x, _ = _data()
    linear = eqx.nn.Linear(N_IN, 1, key=jax.random.PRNGKey(0))

    class Batched(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, x):
            return x @ self.linear.weight.T + self.linear.bias

    trainer, history = _fit(jaxfit.from_equinox(Batched(linear), vmap=False), epochs=3)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_allclose(
        trainer.predict(x),
        jax.vmap(eqx.combine(trainer.params, Batched(linear)).linear)(x),
        rtol=1e-5,
        atol=1e-6,
    )


def test_from_equinox_rejects_a_bad_state(eqx):
    mlp = eqx.nn.MLP(N_IN, 1, width_size=HIDDEN, depth=1, key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"state: expected an eqx.nn.State or None"):
        jaxfit.from_equinox(mlp, state={"mean": jnp.zeros(3)})


# -- missing libraries ------------------------------------------------------------


@pytest.mark.parametrize(
    "library, adapter, args, extra",
    [
        ("flax", jaxfit.from_flax, (object(), np.ones((2, 3))), "flax"),
        ("flax", jaxfit.from_nnx, (object(),), "flax"),
        ("equinox", jaxfit.from_equinox, (object(),), "equinox"),
    ],
)
def test_a_missing_library_names_the_extra(monkeypatch, library, adapter, args, extra):
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now fails
    hint = f"pip install {library} (in jaxfit-trainer's {extra} extra)."
    with pytest.raises(ImportError, match=re.escape(hint)):
        adapter(*args)
