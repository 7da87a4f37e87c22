"""from_flax / from_nnx / from_equinox drive the module's train flag, whatever its
name (``train``, ``training``, ``is_training``, ``deterministic`` inverted, or one
named with ``train_arg`` / ``eval_arg``), and refuse a module they cannot drive."""

import jax
import numpy as np
import optax
import pytest

import jaxfit

linen = pytest.importorskip("flax.linen")


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, x.sum(axis=1, keepdims=True).astype(np.float32)


class IsTraining(linen.Module):
    @linen.compact
    def __call__(self, x, is_training: bool = False):
        h = linen.Dense(8)(x)
        h = linen.BatchNorm(use_running_average=not is_training, momentum=0.5)(h)
        return linen.Dense(1)(linen.Dropout(0.5, deterministic=not is_training)(h))


class Deterministic(linen.Module):
    @linen.compact
    def __call__(self, x, deterministic: bool = True):
        return linen.Dense(1)(linen.Dropout(0.5, deterministic=deterministic)(x))


class Inference(linen.Module):  # a flag name jaxfit does not know, inverted
    @linen.compact
    def __call__(self, x, inference: bool = True):
        return linen.Dense(1)(linen.Dropout(0.5, deterministic=inference)(x))


def _fit(model, epochs=2):
    x, y = _data()
    trainer = jaxfit.Trainer(model, optimizer=optax.sgd(0.05), loss="mse", seed=0)
    trainer.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return trainer


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_is_training_puts_dropout_and_batch_norm_in_training_mode():
    x, _ = _data()
    trained = _fit(jaxfit.from_flax(IsTraining(), x[:2]))
    frozen = _fit(jaxfit.from_flax(IsTraining(), x[:2], train_arg=None))
    # eval mode all along: the batch statistics never move
    initial = jaxfit.from_flax(IsTraining(), x[:2]).state
    for a, b in zip(_leaves(initial), _leaves(frozen.state.model_state)):
        np.testing.assert_array_equal(a, b)
    moved = [
        not np.allclose(a, b)
        for a, b in zip(_leaves(initial), _leaves(trained.state.model_state))
    ]
    assert all(moved)
    assert any(
        not np.allclose(a, b)
        for a, b in zip(_leaves(trained.params), _leaves(frozen.params))
    )
    # inference is deterministic and is the module in eval mode
    first, second = trained.predict(x), trained.predict(x)
    np.testing.assert_array_equal(first, second)
    variables = {"params": trained.params, **trained.state.model_state}
    expected = IsTraining().apply(variables, x, is_training=False)
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "module, kwargs",
    [
        (Deterministic(), {}),  # found by name, inverted
        (Inference(), {"eval_arg": "inference"}),
        (IsTraining(), {"train_arg": "is_training"}),
    ],
)
def test_the_flag_switches_dropout(module, kwargs):
    x, _ = _data()
    model = jaxfit.from_flax(module, x[:2], **kwargs)
    apply = jax.jit(model.apply_fn, static_argnames="train")

    def run(train, seed):
        rng = jax.random.PRNGKey(seed)
        return np.asarray(
            apply(model.params, x, train=train, rng=rng, state=model.state)[0]
        )

    np.testing.assert_array_equal(run(False, 1), run(False, 2))
    assert not np.allclose(run(True, 1), run(True, 2))


def test_a_fit_with_dropout_differs_from_eval_mode():
    x, _ = _data()
    on = _fit(jaxfit.from_flax(Deterministic(), x[:2]))
    off = _fit(jaxfit.from_flax(Deterministic(), x[:2], train_arg=None))
    assert not np.allclose(
        on.params["Dense_0"]["kernel"], off.params["Dense_0"]["kernel"]
    )


class TwoFlags(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool = False, deterministic: bool = True):
        return linen.Dense(1)(x)


class FieldFlag(linen.Module):
    deterministic: bool = True

    @linen.compact
    def __call__(self, x):
        return linen.Dense(1)(linen.Dropout(0.5, deterministic=self.deterministic)(x))


@pytest.mark.parametrize(
    "module, kwargs, error, words",
    [
        (TwoFlags(), {}, ValueError, ["module", "'train', 'deterministic'"]),
        (FieldFlag(), {}, ValueError, ["module", "'deterministic'", "train_arg=None"]),
        (Deterministic(), {"train_arg": "training"}, ValueError, ["train_arg"]),
        (Deterministic(), {"train_arg": 1}, TypeError, ["train_arg"]),
        (
            Deterministic(),
            {"train_arg": "deterministic", "eval_arg": "deterministic"},
            ValueError,
            ["eval_arg"],
        ),
    ],
)
def test_a_module_jaxfit_cannot_drive_is_refused(module, kwargs, error, words):
    x, _ = _data()
    with pytest.raises(error) as raised:
        jaxfit.from_flax(module, x[:2], **kwargs)
    for word in words:
        assert word in str(raised.value)


def test_an_explicit_choice_among_two_flags():
    x, _ = _data()
    model = jaxfit.from_flax(TwoFlags(), x[:2], train_arg="train")
    assert sorted(model.params) == ["Dense_0"]


def test_from_nnx_passes_a_user_modules_flag():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x, is_training: bool = False):
            return self.dense(x) * (2.0 if is_training else 1.0)

    x, _ = _data()
    model = jaxfit.from_nnx(Net(nnx.Rngs(0)))
    rng = jax.random.PRNGKey(0)
    y_train, _ = model.apply_fn(model.params, x, train=True, rng=rng, state=model.state)
    y_eval, _ = model.apply_fn(model.params, x, train=False, rng=rng, state=model.state)
    np.testing.assert_allclose(np.asarray(y_train), 2 * np.asarray(y_eval), rtol=1e-6)


def test_from_equinox_passes_a_user_modules_flag():
    eqx = pytest.importorskip("equinox")

    class Net(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, x, *, training: bool = False):
            return self.linear(x) * (2.0 if training else 1.0)

    x, _ = _data()
    net = Net(eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(0)))
    model = jaxfit.from_equinox(net)
    rng = jax.random.PRNGKey(0)
    y_train, _ = model.apply_fn(model.params, x, train=True, rng=rng, state=model.state)
    y_eval, _ = model.apply_fn(model.params, x, train=False, rng=rng, state=model.state)
    np.testing.assert_allclose(np.asarray(y_train), 2 * np.asarray(y_eval), rtol=1e-6)
