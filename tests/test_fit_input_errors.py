"""Inputs a careful user gets wrong get one-line errors naming the argument, what
was expected and what was given, raised before any compile or step, with the
trainer's state untouched (issue 22, bullet 8: no IndexError, ZeroDivisionError or
"Dtype <U1" from inside jaxfit or JAX)."""

import asyncio

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit

X, Y = regression_data(n=8)
B = (X[:4], Y[:4])  # one batch of a stream
EMPTY_X, EMPTY_Y = X[:0], Y[:0]
WORDS = np.array(["a"] * 8)  # strings, one per sample


def _generator():
    yield B


def _one_shot():
    return iter([B, B])


CASES = [
    # (id, call, error type, the argument the message starts with, more text)
    ("fit_x_none", lambda t: t.fit(None, Y), ValueError, "x", "None"),
    ("fit_y_none", lambda t: t.fit(X, None), ValueError, "y", "labels"),
    ("fit_x_empty_dict", lambda t: t.fit({}, Y), ValueError, "x", "{}"),
    ("fit_x_dict_of_none", lambda t: t.fit({"a": None}, Y), ValueError, "x", "None"),
    ("fit_y_empty_tuple", lambda t: t.fit(X, ()), ValueError, "y", "()"),
    ("fit_x_0_samples", lambda t: t.fit(EMPTY_X, EMPTY_Y), ValueError, "x", "(0, 3)"),
    (
        "fit_x_0_samples_with_split",
        lambda t: t.fit(EMPTY_X, EMPTY_Y, validation_split=0.5),
        ValueError,
        "x",
        "at least one sample",
    ),
    ("fit_y_strings", lambda t: t.fit(X, WORDS), TypeError, "y", "<U1"),
    ("fit_y_list_of_str", lambda t: t.fit(X, ["a"] * 8), TypeError, "y", "'a'"),
    ("fit_x_strings", lambda t: t.fit(WORDS[:, None], Y), TypeError, "x", "<U1"),
    ("fit_x_a_string", lambda t: t.fit("abc", Y), TypeError, "x", "'abc'"),
    (
        "fit_x_objects",
        lambda t: t.fit(np.array([object()] * 8), Y),
        TypeError,
        "x",
        "object",
    ),
    (
        "fit_x_a_generator_function",
        lambda t: t.fit(_generator, Y),
        TypeError,
        "x",
        "fit_dataset",
    ),
    (
        "fit_x_a_generator_object",
        lambda t: t.fit((b for b in [B]), None),
        TypeError,
        "x",
        "fit_dataset",
    ),
    (
        "fit_validation_steps_without_validation",
        lambda t: t.fit(X, Y, validation_steps=2),
        ValueError,
        "validation_steps",
        "validation_split",
    ),
    (
        "fit_validation_freq_without_validation",
        lambda t: t.fit(X, Y, validation_freq=2),
        ValueError,
        "validation_freq",
        "validation_freq=2",
    ),
    (
        "fit_x_nested_lists",
        lambda t: t.fit([[1.0, 2.0, 3.0]] * 8, Y),
        ValueError,
        "x",
        "np.asarray",
    ),
    (
        "fit_x_y_lengths_differ",
        lambda t: t.fit(X, Y[:5]),
        ValueError,
        "x, y and sample_weight",
        "x: 8, y: 5",
    ),
    (
        "fit_validation_data_0_samples",
        lambda t: t.fit(X, Y, validation_data=(EMPTY_X, EMPTY_Y)),
        ValueError,
        "validation_data.x",
        "at least one sample",
    ),
    (
        "fit_validation_data_none",
        lambda t: t.fit(X, Y, validation_data=(None, None)),
        ValueError,
        "validation_data.x",
        "None",
    ),
    (
        "fit_validation_y_strings",
        lambda t: t.fit(X, Y, validation_data=(X, WORDS)),
        TypeError,
        "validation_data.y",
        "<U1",
    ),
    (
        "fit_sample_weight_strings",
        lambda t: t.fit(X, Y, sample_weight=WORDS),
        TypeError,
        "sample_weight",
        "real numbers",
    ),
    (
        "fit_sample_weight_complex",
        lambda t: t.fit(X, Y, sample_weight=np.ones(8, np.complex64)),
        TypeError,
        "sample_weight",
        "complex64",
    ),
    ("evaluate_0_samples", lambda t: t.evaluate(EMPTY_X, EMPTY_Y), ValueError, "x", ""),
    ("evaluate_x_none", lambda t: t.evaluate(None, Y), ValueError, "x", "None"),
    ("evaluate_y_strings", lambda t: t.evaluate(X, WORDS), TypeError, "y", "<U1"),
    (
        "evaluate_sample_weight_strings",
        lambda t: t.evaluate(X, Y, sample_weight=WORDS),
        TypeError,
        "sample_weight",
        "<U1",
    ),
    ("predict_0_samples", lambda t: t.predict(EMPTY_X), ValueError, "x", "(0, 3)"),
    ("predict_x_empty_dict", lambda t: t.predict({}), ValueError, "x", "{}"),
    ("predict_x_strings", lambda t: t.predict(WORDS[:, None]), TypeError, "x", "<U1"),
    (
        "fit_dataset_empty",
        lambda t: t.fit_dataset([]),
        ValueError,
        "dataset",
        "no batches",
    ),
    (
        "fit_dataset_a_string",
        lambda t: t.fit_dataset("abc"),
        TypeError,
        "dataset",
        "'abc'",
    ),
    (
        "fit_dataset_one_batch_dict",
        lambda t: t.fit_dataset({"xs": X, "ys": Y}),
        TypeError,
        "dataset",
        "[batch]",
    ),
    (
        "fit_dataset_batch_is_a_string",
        lambda t: t.fit_dataset(["ab"]),
        ValueError,
        "dataset batch 0",
        "'ab'",
    ),
    (
        "fit_dataset_batch_is_none",
        lambda t: t.fit_dataset([None]),
        ValueError,
        "dataset batch 0",
        "None",
    ),
    (
        "fit_dataset_batch_is_an_array",
        lambda t: t.fit_dataset(X),
        ValueError,
        "dataset batch 0",
        "Trainer.fit",
    ),
    (
        "fit_dataset_batch_x_none",
        lambda t: t.fit_dataset([(None, Y)]),
        ValueError,
        "dataset batch 0: x",
        "None",
    ),
    (
        "fit_dataset_batch_y_strings",
        lambda t: t.fit_dataset([(X, WORDS)]),
        TypeError,
        "dataset batch 0: y",
        "<U1",
    ),
    (
        "fit_dataset_batch_lengths_differ",
        lambda t: t.fit_dataset([(X, Y[:3])]),
        ValueError,
        "dataset batch 0",
        "x: 8, y: 3",
    ),
    (
        "fit_dataset_function_needs_arguments",
        lambda t: t.fit_dataset(lambda n: iter([B] * n)),
        TypeError,
        "dataset",
        "functools.partial",
    ),
    (
        "fit_dataset_validation_batches_without_validation",
        lambda t: t.fit_dataset([B], validation_batches=2),
        ValueError,
        "validation_batches",
        "validation_data",
    ),
    (
        "fit_dataset_validation_arrays_as_a_list",
        lambda t: t.fit_dataset([B], validation_data=[X, Y]),
        ValueError,
        "validation_data batch 0",
        "tuple (x, y[, sample_weight])",
    ),
    (
        "fit_dataset_function_returns_none",
        lambda t: t.fit_dataset(lambda: None),
        TypeError,
        "dataset",
        "returned None",
    ),
    (
        "fit_dataset_validation_one_shot",
        lambda t: t.fit_dataset([B], epochs=2, validation_data=_one_shot()),
        ValueError,
        "validation_data",
        "one-shot",
    ),
    (
        "fit_dataset_validation_0_samples",
        lambda t: t.fit_dataset([B], validation_data=(EMPTY_X, EMPTY_Y)),
        ValueError,
        "validation_data.x",
        "at least one sample",
    ),
    (
        "fit_dataset_validation_a_string",
        lambda t: t.fit_dataset([B], validation_data="abc"),
        TypeError,
        "validation_data",
        "'abc'",
    ),
    (
        "fit_dataset_async_batch_none",
        lambda t: asyncio.run(t.fit_dataset_async([None])),
        ValueError,
        "dataset batch 0",
        "None",
    ),
    (
        "evaluate_dataset_batches_0",
        lambda t: t.evaluate_dataset([B], batches=0),
        ValueError,
        "batches",
        "0 (int)",
    ),
    (
        "evaluate_dataset_empty",
        lambda t: t.evaluate_dataset([]),
        ValueError,
        "dataset",
        "no batches",
    ),
]


def _trainer():
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )


def _host(tree):
    return [np.array(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize(
    "call,error,argname,detail", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_input_is_one_line_naming_the_argument_and_changes_nothing(
    call, error, argname, detail, compiles
):
    trainer = _trainer()
    before, step = _host(trainer.state), int(trainer.state.step)
    compiles.reset()
    with pytest.raises(Exception) as info:
        call(trainer)
    assert type(info.value) is error, repr(info.value)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{argname}: "), message
    assert "expected" in message and detail in message, message
    assert compiles.count == 0
    assert int(trainer.state.step) == step
    after = _host(trainer.state)
    assert all(
        a.dtype == b.dtype and a.tobytes() == b.tobytes()
        for a, b in zip(before, after, strict=True)
    )


def test_the_trainer_trains_after_a_refused_call():
    trainer = _trainer()
    with pytest.raises(ValueError):
        trainer.fit(None, Y)
    history = trainer.fit(X, Y, verbose=0)
    assert history.epoch == [0] and int(trainer.state.step) == 1


LATER_BATCH_CASES = [
    # (id, the bad second batch, error type, text of the message)
    ("none", None, ValueError, "None"),
    ("y_strings", (B[0], WORDS[:4]), TypeError, "<U1"),
    ("sample_weight_strings", (*B, WORDS[:4]), TypeError, "real numbers"),
]


@pytest.mark.parametrize(
    "bad,error,detail",
    [c[1:] for c in LATER_BATCH_CASES],
    ids=[c[0] for c in LATER_BATCH_CASES],
)
def test_a_bad_later_batch_is_named_by_its_index(bad, error, detail):
    """A stream's later batch is read while training runs: the batches before it
    train, and the error names it (its message and a note)."""
    trainer = _trainer()
    with pytest.raises(Exception) as info:
        trainer.fit_dataset([(*B, np.ones(4, np.float32)), bad], verbose=0)
    assert type(info.value) is error, repr(info.value)
    message = str(info.value)
    assert "\n" not in message and message.startswith("dataset batch 1"), message
    assert detail in message
    assert "batch 1" in " ".join(info.value.__notes__)
    assert not trainer.session.running


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70, 1.5, True, "0"])
def test_a_seed_jax_cannot_take_is_named(seed):
    with pytest.raises(
        ValueError, match=r"^seed: expected an integer in \[0, 2\*\*63\)"
    ):
        jaxfit.Trainer(
            linear_apply, linear_params(), optimizer=optax.sgd(0.1), seed=seed
        )


def test_the_largest_seed_works():
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.sgd(0.1),
        loss="mse",
        seed=2**63 - 1,
    )
    trainer.fit(X, Y, epochs=1, batch_size=4, verbose=0)
    assert int(trainer.state.step) == 2


def test_a_steps_per_epoch_too_large_to_plan_is_named():
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(0.1), loss="mse"
    )
    with pytest.raises(
        ValueError, match=r"^steps_per_epoch: expected at most \d+ batches"
    ):
        trainer.fit(X, Y, batch_size=4, steps_per_epoch=2**70, verbose=0)
    assert int(trainer.state.step) == 0
