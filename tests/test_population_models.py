"""A population of a jaxfit.Model: each member starts from model.reinit(seed + i)
(from_flax's init; from_nnx / from_equinox given init=) and trains exactly as
Trainer(model.reinit(seed + i), seed=seed + i); a Model without init shares its
params as every member's start."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxfit

RATES = [1e-2, 3e-2]


def _data(n=36):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, :1] - x[:, 1:2] > 0).astype(np.float32)


def _close(a, b):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-6), a, b
    )


def _adam(rate=1e-2):
    return optax.inject_hyperparams(optax.adam)(learning_rate=rate)


class _Net(nn.Module):  # dropout and batch norm: rng and state per member
    @nn.compact
    def __call__(self, x, train: bool = False):
        # no bias before the norm: its gradient is float noise (zero in exact
        # arithmetic), which Adam would scale up to full steps either way
        h = nn.Dense(6, use_bias=False)(x)
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.3, deterministic=not train)(jnp.tanh(h))
        return nn.Dense(1)(h)


def _fit(trainer):
    x, y = _data()
    return trainer.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0)


def test_flax_members_start_from_their_seeds_and_train_as_their_own_trainers():
    x, _ = _data()
    model = jaxfit.from_flax(_Net(), x[:2], seed=0)
    # the adapter's own variables are init(PRNGKey(seed)), as documented
    _close(model.init(jax.random.PRNGKey(0)), (model.params, model.state))
    population = jaxfit.Trainer(
        model,
        optimizer=_adam(),
        loss="binary_crossentropy",
        seed=5,
        population=2,
        hyperparams={"learning_rate": RATES},
    )
    starts = [model.reinit(5 + i) for i in range(2)]
    _close(jax.tree.map(lambda a: a[1], population.params), starts[1].params)
    kernel = [np.asarray(s.params["Dense_0"]["kernel"]) for s in starts]
    assert not np.allclose(kernel[0], kernel[1])  # re-initialised, not shared
    assert not np.allclose(kernel[0], model.params["Dense_0"]["kernel"])
    history = _fit(population)
    for i, start in enumerate(starts):
        single = jaxfit.Trainer(
            start,
            optimizer=_adam(RATES[i]),
            loss="binary_crossentropy",
            seed=5 + i,
        )
        alone = _fit(single)
        member = population.member(i)
        _close(single.params, member.params)
        _close(single.state.model_state, member.state.model_state)
        np.testing.assert_allclose(
            alone.history["val_loss"], history.members[i].history["val_loss"], 2e-5
        )


def test_nnx_and_equinox_reinit_with_their_init_functions():
    class Lin(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(4, 1, rngs=rngs)

        def __call__(self, x):
            return self.dense(x)

    nnx_model = jaxfit.from_nnx(
        Lin(nnx.Rngs(0)), init=lambda key: Lin(nnx.Rngs(params=key))
    )
    key = jax.random.fold_in(jax.random.PRNGKey(7), 0x696E6974)  # documented
    made = Lin(nnx.Rngs(params=key))
    expected = nnx.to_pure_dict(nnx.split(made, nnx.Param, ...)[1])
    _close(nnx_model.reinit(7).params, expected)

    def mlp(key):
        return eqx.nn.MLP(4, 1, width_size=3, depth=1, key=key)

    eqx_model = jaxfit.from_equinox(mlp(jax.random.PRNGKey(0)), init=mlp)
    x, y = _data()
    population = jaxfit.Trainer(
        eqx_model,
        optimizer=_adam(),
        loss="mse",
        seed=2,
        population=2,
        hyperparams={"learning_rate": RATES},
    )
    population.fit(x, y, epochs=1, batch_size=12, verbose=0)
    single = jaxfit.Trainer(
        eqx_model.reinit(3), optimizer=_adam(RATES[1]), loss="mse", seed=3
    )
    single.fit(x, y, epochs=1, batch_size=12, verbose=0)
    _close(single.params, population.member(1).params)


def test_a_model_without_init_shares_its_params_as_every_members_start():
    x, _ = _data()
    flax_model = jaxfit.from_flax(nn.Dense(1), x[:2])
    model = jaxfit.Model(flax_model.apply_fn, flax_model.params, flax_model.state)
    population = jaxfit.Trainer(
        model, optimizer=_adam(), loss="mse", population=3, seed=0
    )
    for i in range(3):
        _close(jax.tree.map(lambda a, i=i: a[i], population.params), model.params)


def test_reinit_refuses_a_model_without_init_and_an_init_of_other_shapes():
    params = {"w": jnp.ones((4, 1))}
    with pytest.raises(
        ValueError, match=r"model: expected a jaxfit\.Model with an init"
    ):
        jaxfit.Model(lambda p, x: x @ p["w"], params).reinit(0)
    wrong = jaxfit.Model(
        lambda p, x: x @ p["w"],
        params,
        init=lambda key: ({"w": jax.random.normal(key, (3, 1))}, None),
    )
    with pytest.raises(ValueError, match=r"params\['w'\]: float32\[3, 1\]"):
        wrong.reinit(0)
    with pytest.raises(ValueError, match=r"params\['w'\]: float32\[3, 1\]"):
        jaxfit.Trainer(wrong, optimizer=_adam(), loss="mse", population=2)
    with pytest.raises(TypeError, match="init: expected None or init"):
        jaxfit.from_equinox(eqx.nn.Linear(4, 1, key=jax.random.PRNGKey(0)), init=3)
