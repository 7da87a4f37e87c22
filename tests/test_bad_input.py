"""Bad data never reaches JAX: labels, shapes, params, class weights and one-shot
streams are checked before any compile or step, with messages that name the
argument (and leaf, batch or row), what was expected and what was given."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params

import jaxfit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=40).astype(np.int32)
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]


def _softmax(params, x):
    return jax.nn.softmax(x @ params["w"] + params["b"])


def _classifier(loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    return jaxfit.Trainer(
        _softmax,
        linear_params(4, 3),
        optimizer=optax.sgd(0.1),
        loss=loss,
        metrics=list(metrics),
    )


def _untouched(trainer, compiles):
    assert int(trainer.state.step) == 0
    np.testing.assert_array_equal(trainer.params["w"], linear_params(4, 3)["w"])
    assert compiles.count == 0


def _fails(trainer, compiles, parts, call=None, error=ValueError):
    compiles.reset()
    with pytest.raises(error) as info:
        (call or (lambda t: t.fit(X, LABELS, batch_size=8, verbose=0)))(trainer)
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)
    _untouched(trainer, compiles)
    return message


def test_one_hot_y_with_a_sparse_loss(compiles):
    _fails(
        _classifier(),
        compiles,
        [
            "y: expected integer class indices of shape (N,) or (N, 1)",
            "sparse_categorical_crossentropy",
            "(N, 3)",
            "categorical_crossentropy",
        ],
        lambda t: t.fit(X, ONE_HOT, verbose=0),
    )


@pytest.mark.parametrize("bad,shown", [(5, "values from 0 to 5"), (-1, "from -1 to 2")])
def test_sparse_labels_out_of_range(bad, shown, compiles):
    labels = LABELS.copy()
    labels[7] = bad
    message = _fails(
        _classifier(),
        compiles,
        ["y: expected class indices in [0, 3)", shown, f"row 7 holds {bad}"],
        lambda t: t.fit(X, labels, verbose=0),
    )
    assert "3 classes" in message


def test_float_labels_for_a_sparse_loss(compiles):
    labels = LABELS.astype(np.float32)
    labels[3] = 0.5
    _fails(
        _classifier(),
        compiles,
        ["y: expected integer class indices", "row 3 holds 0.5"],
        lambda t: t.fit(X, labels, verbose=0),
    )
    # whole-number floats are class indices too (Keras)
    trainer = _classifier()
    trainer.fit(X, LABELS.astype(np.float32), epochs=1, verbose=0)


def test_integer_y_with_categorical_crossentropy(compiles):
    _fails(
        _classifier(loss="categorical_crossentropy", metrics=()),
        compiles,
        [
            "y: expected one row of 3 per sample, shape (N, 3)",
            "categorical_crossentropy",
            "labels of shape (N,)",
            "sparse_categorical_crossentropy",
        ],
    )


def test_y_with_an_extra_axis_for_a_sparse_loss(compiles):
    _fails(
        _classifier(),
        compiles,
        ["y: expected integer class indices", "labels of shape (N, 1, 1)"],
        lambda t: t.fit(X, LABELS.reshape(40, 1, 1), verbose=0),
    )


def test_binary_labels_outside_zero_one(compiles):
    trainer = jaxfit.Trainer(
        lambda p, x: jax.nn.sigmoid(x @ p["w"] + p["b"]),
        linear_params(4, 1),
        optimizer=optax.sgd(0.1),
        loss="binary_crossentropy",
    )
    y = (X[:, :1] > 0).astype(np.float32)
    y[9] = 2.0
    compiles.reset()
    with pytest.raises(
        ValueError,
        match=r"y: expected 0/1 labels or probabilities in "
        r"\[0, 1\].*row 9 holds 2\.0",
    ):
        trainer.fit(X, y, verbose=0)
    assert int(trainer.state.step) == 0 and compiles.count == 0


def test_validation_data_with_the_wrong_feature_width(compiles):
    message = _fails(
        _classifier(),
        compiles,
        [
            "validation_data.x: the model cannot be applied to x of shape "
            "(8, 5) float32",
            "params of shapes",
            "['w'] (4, 3) float32",
        ],
        lambda t: t.fit(
            X,
            LABELS,
            batch_size=8,
            verbose=0,
            validation_data=(X[:10, :1].repeat(5, 1), LABELS[:10]),
        ),
    )
    assert "dot_general" in message  # the cause, after what jaxfit says


def test_x_with_the_wrong_width_names_x(compiles):
    _fails(
        _classifier(),
        compiles,
        ["x: the model cannot be applied to x of shape (8, 2) float32"],
        lambda t: t.fit(X[:, :2], LABELS, batch_size=8, verbose=0),
    )


def test_validation_labels_are_checked_and_named(compiles):
    bad = LABELS[:10].copy()
    bad[2] = 7
    _fails(
        _classifier(),
        compiles,
        ["validation_data.y: expected class indices in [0, 3)", "row 2 holds 7"],
        lambda t: t.fit(X, LABELS, verbose=0, validation_data=(X[:10], bad)),
    )


def test_evaluate_checks_labels_too():
    trainer = _classifier()
    with pytest.raises(ValueError, match=r"^y: expected integer class indices"):
        trainer.evaluate(X, ONE_HOT)


@pytest.mark.parametrize(
    "params,parts",
    [
        (
            {"w": jnp.zeros((4, 1)), "b": 0},
            ["params['b']: expected a floating-point array", "got 0 (int)", "state="],
        ),
        ({"w": jnp.zeros((4, 1)), "b": np.arange(1)}, ["params['b']", "dtype int"]),
        (
            {"w": jnp.zeros((4, 1)), "name": "lin"},
            ["params['name']: expected an array of numbers", "'lin' (str)"],
        ),
    ],
)
def test_params_are_checked_at_construction(params, parts):
    with pytest.raises(TypeError) as info:
        jaxfit.Trainer(
            lambda p, x: x @ p["w"], params, optimizer=optax.sgd(0.1), loss="mse"
        )
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_integer_model_state_is_fine_but_strings_are_not():
    def apply(params, x, *, state):
        return x @ params["w"], {"calls": state["calls"] + 1}

    trainer = jaxfit.Trainer(
        apply,
        {"w": jnp.zeros((4, 1))},
        state={"calls": 0},
        optimizer=optax.sgd(0.1),
        loss="mse",
    )
    trainer.fit(X, X[:, :1], batch_size=20, epochs=1, verbose=0)
    assert int(trainer.state.model_state["calls"]) == 2
    with pytest.raises(
        TypeError, match=r"state\['tag'\]: expected an array of numbers"
    ):
        jaxfit.Trainer(
            apply,
            {"w": jnp.zeros((4, 1))},
            state={"calls": 0, "tag": "x"},
            optimizer=optax.sgd(0.1),
            loss="mse",
        )


def test_class_weight_must_cover_every_class(compiles):
    _fails(
        _classifier(),
        compiles,
        [
            "class_weight: expected a weight for every class present in y",
            "no weight for class 2",
        ],
        lambda t: t.fit(X, LABELS, class_weight={0: 1.0, 1: 2.0}, verbose=0),
    )
    with pytest.raises(ValueError, match="class_weight"):
        _classifier().fit(X, LABELS, class_weight={"a": 1.0}, verbose=0)


def test_a_stream_batch_with_bad_labels_names_its_index():
    batches = [(X[i : i + 8], LABELS[i : i + 8]) for i in range(0, 40, 8)]
    bad = batches[3][1].copy()
    bad[0] = 9
    batches[3] = (batches[3][0], bad)
    trainer = _classifier()
    with pytest.raises(
        ValueError,
        match=r"dataset batch 3: y: expected class indices "
        r"in \[0, 3\)",
    ):
        trainer.fit_dataset(batches, epochs=1, verbose=0)
    # the first batch is checked before anything runs
    trainer = _classifier()
    with pytest.raises(ValueError, match=r"dataset batch 0: y: expected integer class"):
        trainer.fit_dataset([(X[:8], ONE_HOT[:8])], epochs=1, verbose=0)
    assert int(trainer.state.step) == 0
    with pytest.raises(ValueError, match=r"dataset batch 1: y.*no weight for class"):
        _classifier().fit_dataset(
            [(X[:3], np.array([0, 1, 0])), (X[:3], LABELS[:3] * 0 + 2)],
            class_weight={0: 1.0, 1: 1.0},
            epochs=1,
            verbose=0,
        )


def test_a_linear_regression_still_trains(compiles):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(4, 1), optimizer=optax.sgd(0.1), loss="mse"
    )
    history = trainer.fit(X, X[:, :1] * 2.0, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_regression_y_not_shaped_like_the_output(compiles):
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(4, 1), optimizer=optax.sgd(0.1), loss="mse"
    )
    compiles.reset()
    with pytest.raises(
        ValueError,
        match=r"^y: expected labels shaped like the model's "
        r"output \(N, 1\) for mean_squared_error, got "
        r"shape \(N, 2\)",
    ):
        trainer.fit(X, X[:, :2], verbose=0)
    assert int(trainer.state.step) == 0 and compiles.count == 0
    trainer.fit(X, X[:, 0], epochs=1, verbose=0)  # (N,) aligns with (N, 1), as Keras


def test_the_readme_example_message_is_what_jaxfit_says():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text(
        encoding="utf-8"
    )
    errors_section = readme[readme.index("## Errors") :]
    example = " ".join(
        re.search(r"```text\n(.*?)```", errors_section, re.S).group(1).split()
    )
    labels = LABELS.copy()
    labels[7] = 5
    with pytest.raises(ValueError) as info:
        _classifier().fit(X, labels, verbose=0)
    assert str(info.value) == example


def test_predict_with_the_wrong_width_names_x(compiles):
    trainer = _classifier()
    compiles.reset()
    with pytest.raises(
        ValueError,
        match=r"^x: the model cannot be applied to x of "
        r"shape \(32, 2\) float32",
    ):
        trainer.predict(X[:, :2])
    assert compiles.count == 0
    assert trainer.predict(X).shape == (40, 3)


@pytest.mark.parametrize(
    "loss,y,parts",
    [
        (
            jaxfit.losses.SparseCategoricalCrossentropy(),
            ONE_HOT,
            ["y: expected integer class indices", "(N, 3)"],
        ),
        (
            jaxfit.losses.CategoricalCrossentropy(label_smoothing=0.1),
            LABELS,
            ["y: expected", "categorical_crossentropy", "(N, 3)"],
        ),
    ],
)
def test_loss_objects_get_the_label_checks_of_their_names(compiles, loss, y, parts):
    # an object with arguments is checked as the name it stands for
    _fails(_classifier(loss=loss), compiles, parts, lambda t: t.fit(X, y, verbose=0))


def test_a_confusion_metric_refuses_labels_outside_0_1(compiles):
    _fails(
        _classifier(loss="mse", metrics=(jaxfit.metrics.Precision(),)),
        compiles,
        ["y: expected", "precision"],
        lambda t: t.fit(X, ONE_HOT * 3, verbose=0),
    )
