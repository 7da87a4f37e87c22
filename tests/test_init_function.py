"""``params`` may be an init function ``init(key) -> params``: the Trainer calls it
once with a key derived from ``seed`` (documented), a stream apart from the
training rng's, so member ``i`` of a population is ``seed + i``'s init."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit


def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": 0.5 * jax.random.normal(k1, (3, 8)),
        "w2": 0.5 * jax.random.normal(k2, (8, 1)),
    }


def apply(params, x, *, train=False, rng=None):
    h = jnp.tanh(x @ params["w1"])
    if train:  # dropout: its keys come from the training rng
        h = h * jax.random.bernoulli(rng, 0.8, h.shape) / 0.8
    return h @ params["w2"]


X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = np.sin(X.sum(axis=1, keepdims=True))


def _trainer(params, seed):
    return jaxfit.Trainer(
        apply, params, optimizer=optax.adam(0.01), loss="mse", seed=seed
    )


@pytest.mark.parametrize("seed", [0, 7])
def test_an_init_function_trains_as_its_params_given_by_hand(seed):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x696E6974)  # documented
    by_function = _trainer(init, seed)
    by_hand = _trainer(init(key), seed)
    for a, b in zip(jax.tree.leaves(by_function.params), jax.tree.leaves(init(key))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    runs = [
        t.fit(X, Y, epochs=2, batch_size=8, verbose=0).history["loss"]
        for t in (by_function, by_hand)
    ]
    assert runs[0] == runs[1]
    for a, b in zip(
        jax.tree.leaves(by_function.params), jax.tree.leaves(by_hand.params)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_seed_decides_the_init_and_its_key_is_no_dropout_key():
    first, other = _trainer(init, 0), _trainer(init, 1)
    assert not np.array_equal(first.params["w1"], other.params["w1"])
    # the init stream is apart from the training rng (PRNGKey(seed)) and the keys
    # split from it, so no init draw repeats a dropout draw
    init_key = jax.random.fold_in(jax.random.PRNGKey(0), 0x696E6974)
    training = jax.random.PRNGKey(0)
    children = list(jax.random.split(training, 4)) + [training]
    assert not any(np.array_equal(key, init_key) for key in children)


def test_an_init_function_that_returns_nothing_is_refused_naming_params():
    with pytest.raises(TypeError, match=r"^params: expected an init function"):
        _trainer(lambda key: None, 0)


def test_a_bad_seed_is_refused_before_the_init_function_runs():
    called = []
    with pytest.raises((TypeError, ValueError), match="seed"):
        _trainer(lambda key: called.append(key) or init(key), "0")
    assert not called
