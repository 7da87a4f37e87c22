"""One value formatter: every error message describes a received value one way.

``errors.describe`` (jaxfit/_src/errors.py) is the formatter; these cases pin its
forms, and the public calls below show them in real messages.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit
from jaxfit._src import errors


def my_loss(y_true, y_pred):
    return y_true - y_pred


DESCRIBE_CASES = [
    # (value, description)
    (0, "0 (int)"),
    (2.5, "2.5 (float)"),
    (True, "True (bool)"),
    (None, "None (NoneType)"),
    ("adam", "'adam' (str)"),
    ([1, 2], "[1, 2] (list)"),
    ({"lr": 0.1}, "{'lr': 0.1} (dict)"),
    (np.zeros((4, 3), np.float32), "an array of shape (4, 3) and dtype float32"),
    (jnp.zeros((2,), jnp.int32), "an array of shape (2,) and dtype int32"),
    (jax.ShapeDtypeStruct((), jnp.float32), "an array of shape () and dtype float32"),
    (np.int64(0), "0 (int64 scalar)"),
    (jnp.float32(2.5), "2.5 (float32 scalar)"),
    (
        (np.zeros((4, 3), np.float32), np.zeros((4,), np.int32)),
        "a tuple ((4, 3) float32, (4,) int32)",
    ),
    (
        {"x": np.zeros((4, 3), np.float32), "y": [np.zeros((4, 1), np.float32)]},
        "a dict {'x': (4, 3) float32, 'y': [(4, 1) float32]}",
    ),
    (my_loss, "my_loss (function)"),
    (dict, "dict (type)"),
    (errors.Description("no batches"), "no batches"),
]


@pytest.mark.parametrize(
    "value,text", DESCRIBE_CASES, ids=[str(i) for i in range(len(DESCRIBE_CASES))]
)
def test_describe(value, text):
    assert errors.describe(value) == text


def test_a_long_repr_is_clipped_and_has_no_memory_address():
    text = errors.describe(optax.adam(1e-3))
    assert " at 0x" not in text
    assert text.endswith("... (GradientTransformationExtraArgs)")
    assert len(text) <= 80 + len(" (GradientTransformationExtraArgs)")


def test_a_large_container_of_arrays_is_clipped():
    text = errors.describe({f"leaf{i}": np.zeros((2, 2)) for i in range(50)})
    assert text.startswith("a dict {'leaf0': (2, 2) float64") and text.endswith("...")
    assert len(text) < 220


def test_expected_names_the_argument_the_expectation_and_the_value():
    assert (
        errors.expected("batch_size", "a positive integer", np.int64(0), "Fix.")
        == "batch_size: expected a positive integer, got 0 (int64 scalar). Fix."
    )


# -- the formatter in real messages ------------------------------------------------

X, Y = regression_data(n=8)


def _trainer(**kwargs):
    kwargs = {"optimizer": optax.sgd(0.1), "loss": "mse", **kwargs}
    return jaxfit.Trainer(linear_apply, linear_params(), **kwargs)


def test_a_batch_dict_with_extra_keys_is_described_with_its_shapes():
    with pytest.raises(ValueError) as info:
        _trainer().fit_dataset([{"xs": X, "ys": Y, "weights": Y}], verbose=0)
    assert (
        "got a dict {'xs': (8, 3) float32, 'ys': (8, 1) float32, "
        "'weights': (8, 1) float32}."
    ) in str(info.value)


def test_a_mismatched_stream_batch_is_described_by_feature_shapes():
    batches = [(X[:4], Y[:4]), ({"a": X[4:]}, Y[4:])]
    with pytest.raises(ValueError) as info:
        _trainer().fit_dataset(batches, verbose=0)
    message = str(info.value)
    assert (
        "batch 1 has structure/shapes a tuple ({'a': (3,) float32}, (1,) float32)"
        ", but batch 0 had a tuple ((3,) float32, (1,) float32)"
    ) in message


def test_an_empty_stream_says_so_in_words():
    with pytest.raises(ValueError) as info:
        _trainer().fit_dataset([], verbose=0)
    assert str(info.value) == "dataset: expected at least one batch, got no batches."
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 1), np.float32))
    with pytest.raises(ValueError) as info:
        _trainer().fit_dataset([empty, empty], verbose=0)
    assert str(info.value) == (
        "dataset: expected at least one batch with rows, got 2 batches, none with rows."
    )


def test_a_scalar_array_argument_shows_its_value():
    with pytest.raises(ValueError) as info:
        _trainer().evaluate(X, Y, batch_size=np.int32(0))
    assert "got 0 (int32 scalar)" in str(info.value)


def test_an_lr_callback_describes_the_optimizer_without_an_address():
    with pytest.raises(ValueError) as info:
        _trainer().fit(
            X,
            Y,
            verbose=0,
            callbacks=[jaxfit.callbacks.LearningRateScheduler(lambda epoch: 0.1)],
        )
    message = str(info.value)
    assert "LearningRateScheduler" in message and " at 0x" not in message
    assert "(GradientTransformationExtraArgs)." in message
