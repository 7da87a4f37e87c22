"""Metric objects against Keras 3 side by side: the same batches (ragged: 37 samples
in batches of 8) through keras.metrics' update_state and through jaxfit's evaluate
and fit (fused: yield_every="epoch"), with and without sample weights; custom
metrics checked and named; log keys that collide refused."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
from jaxfit import metrics

keras = pytest.importorskip("keras", reason="keras is a test-only cross-check")
if keras.backend.backend() != "jax":
    pytest.skip("keras is not on the JAX backend", allow_module_level=True)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

RNG = np.random.default_rng(0)
N, BATCH, C = 37, 8, 4
P_BIN = RNG.uniform(size=(N, 1)).astype(np.float32)
Y_BIN = (RNG.uniform(size=(N, 1)) < P_BIN).astype(np.float32)  # informative scores
LOGITS = RNG.normal(size=(N, 1)).astype(np.float32)
P_CAT = RNG.dirichlet(np.ones(C), size=N).astype(np.float32)
LABELS = np.array([RNG.choice(C, p=p) for p in P_CAT])
Y_CAT = np.eye(C, dtype=np.float32)[LABELS]
Y_MULTI = (RNG.uniform(size=(N, C)) < P_CAT * 2).astype(np.float32)
WEIGHTS = RNG.uniform(0.0, 2.0, size=N).astype(np.float32)

DATA = {
    "binary": (P_BIN, Y_BIN),
    "logits": (LOGITS, Y_BIN),
    "categorical": (P_CAT, Y_CAT),
    "multilabel": (P_CAT, Y_MULTI),
    "sparse": (P_CAT, LABELS.astype(np.int32)),
}
# (id, jaxfit metric, the same Keras metric, data, jaxfit log keys)
CASES = [
    ("auc_roc", lambda m: m.AUC(), "binary"),
    ("auc_pr", lambda m: m.AUC(curve="PR"), "binary"),
    ("auc_minoring", lambda m: m.AUC(summation_method="minoring"), "multilabel"),
    (
        "auc_majoring_pr",
        lambda m: m.AUC(curve="PR", summation_method="majoring"),
        "binary",
    ),
    ("auc_thresholds", lambda m: m.AUC(thresholds=[0.2, 0.5, 0.9]), "binary"),
    ("auc_logits", lambda m: m.AUC(from_logits=True, num_thresholds=50), "logits"),
    ("precision", lambda m: m.Precision(), "binary"),
    ("precision_thr", lambda m: m.Precision(thresholds=[0.3, 0.6]), "multilabel"),
    ("precision_topk", lambda m: m.Precision(top_k=2), "multilabel"),
    ("recall_class", lambda m: m.Recall(class_id=1), "multilabel"),
    ("recall_topk_class", lambda m: m.Recall(top_k=2, class_id=2), "multilabel"),
    ("f1_none", lambda m: m.F1Score(), "categorical"),
    ("f1_macro", lambda m: m.F1Score(average="macro"), "categorical"),
    ("f1_micro_thr", lambda m: m.F1Score(average="micro", threshold=0.3), "multilabel"),
    (
        "fbeta_weighted",
        lambda m: m.FBetaScore(average="weighted", beta=2.0),
        "multilabel",
    ),
    ("binary_accuracy", lambda m: m.BinaryAccuracy(threshold=0.7), "binary"),
    ("top_k", lambda m: m.TopKCategoricalAccuracy(k=2), "categorical"),
    ("sparse_top_k", lambda m: m.SparseTopKCategoricalAccuracy(k=2), "sparse"),
    ("categorical_accuracy", lambda m: m.CategoricalAccuracy(), "categorical"),
    ("sparse_accuracy", lambda m: m.SparseCategoricalAccuracy(), "sparse"),
]


def identity(params, x):
    """The predictions are the inputs: the metric sees exactly P."""
    return x + 0.0 * params["b"]


def _trainer(metric, weighted=False, **kwargs):
    return jaxfit.Trainer(
        identity,
        {"b": jnp.zeros(())},
        optimizer=optax.sgd(0.0),
        loss=lambda y, p: jnp.zeros(p.shape[:1]),
        **({"weighted_metrics": [metric]} if weighted else {"metrics": [metric]}),
        **kwargs,
    )


def _keras_value(metric, p, y, weights=None):
    for i in range(0, N, BATCH):
        w = None if weights is None else weights[i : i + BATCH]
        metric.update_state(y[i : i + BATCH], p[i : i + BATCH], sample_weight=w)
    return np.atleast_1d(np.asarray(metric.result()))


def _ours(logs, name, size):
    if size == 1 and name in logs:
        return np.array([logs[name]])
    return np.array([logs[f"{name}_{i}"] for i in range(size)])


WEIGHTED = ("auc_roc", "auc_pr", "precision_topk", "recall_class", "f1_macro",
            "fbeta_weighted", "top_k")  # fmt: skip
RUNS = [(*c, False) for c in CASES] + [(*c, True) for c in CASES if c[0] in WEIGHTED]


@pytest.mark.parametrize(
    ("case", "make", "data", "weighted"),
    RUNS,
    ids=[f"{r[0]}-{'weighted' if r[3] else 'plain'}" for r in RUNS],
)
def test_evaluate_equals_keras(case, make, data, weighted):
    p, y = DATA[data]
    expected = _keras_value(make(keras.metrics), p, y, WEIGHTS if weighted else None)
    ours = make(metrics)
    logs = _trainer(ours, weighted).evaluate(
        p, y, batch_size=BATCH, sample_weight=WEIGHTS if weighted else None
    )
    np.testing.assert_allclose(
        _ours(logs, ours.name, expected.size), expected, rtol=1e-5, atol=1e-6
    )


FUSED = [c for c in CASES if c[0] in ("auc_pr", "precision_thr", "f1_none")]


@pytest.mark.parametrize(("case", "make", "data"), FUSED, ids=[c[0] for c in FUSED])
def test_fused_fit_epochs_equal_keras(case, make, data):
    p, y = DATA[data]
    expected = _keras_value(make(keras.metrics), p, y)
    ours = make(metrics)
    history = _trainer(ours).fit(
        p,
        y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        validation_data=(p, y),
        yield_every="epoch",
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
    for got in (logs, val):
        np.testing.assert_allclose(
            _ours(got, ours.name, expected.size), expected, rtol=1e-5, atol=1e-6
        )


def test_default_names_are_keras_and_name_overrides():
    p, y = DATA["multilabel"]
    logs = jaxfit.Trainer(
        identity,
        {"b": jnp.zeros(())},
        loss="mse",
        metrics=[
            metrics.AUC(),
            metrics.Precision(),
            metrics.Recall(name="r"),
            metrics.F1Score(average="macro"),
            metrics.FBetaScore(average="micro"),
            "auc",
            metrics.MeanMetricWrapper(
                lambda t, q: jnp.mean(t - q, axis=-1), name="gap"
            ),
            jaxfit.losses.Huber(delta=0.5),
        ],
    ).evaluate(p, y, batch_size=BATCH)
    assert list(logs) == [
        "loss",
        "auc",
        "precision",
        "r",
        "f1_score",
        "fbeta_score",
        "weighted_auc",
        "gap",
        "huber_loss",
    ]
    np.testing.assert_allclose(logs["gap"], np.mean(y - p), rtol=1e-5)
    keras_huber = keras.metrics.MeanMetricWrapper(keras.losses.huber, delta=0.5)
    np.testing.assert_allclose(
        logs["huber_loss"], _keras_value(keras_huber, p, y)[0], rtol=1e-5
    )


def test_f1_without_average_logs_one_key_per_class():
    p, y = DATA["categorical"]
    logs = _trainer(metrics.F1Score()).evaluate(p, y, batch_size=BATCH)
    assert [k for k in logs if k.startswith("f1")] == [
        f"f1_score_{i}" for i in range(C)
    ]


@pytest.mark.parametrize(
    "fn",
    [lambda t, p: jnp.mean(p), lambda t, p: p],
    ids=["scalar", "per-class"],
)
def test_a_custom_metric_of_the_wrong_shape_is_refused_before_a_step(fn):
    p, y = DATA["categorical"]
    trainer = _trainer(fn)
    with pytest.raises(
        ValueError, match=r"metrics: expected per-sample values of shape \(8,\)"
    ):
        trainer.fit(p, y, batch_size=BATCH, epochs=1)
    assert int(trainer.state.step) == 0


def test_resolve_and_names_accept_the_objects():
    auc = metrics.AUC()
    assert metrics.resolve(auc, Y_BIN, P_BIN) is auc
    assert {"auc", "precision", "recall", "f1_score"} <= set(metrics.names())
    assert isinstance(metrics.resolve("auc", Y_BIN, P_BIN), metrics.AUC)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="curve: expected one of"):
        metrics.AUC(curve="PRGAIN")
    with pytest.raises(ValueError, match="average: expected one of"):
        metrics.F1Score(average="samples")
    with pytest.raises(ValueError, match="thresholds: expected thresholds in"):
        metrics.Precision(thresholds=1.5)
    with pytest.raises(ValueError, match="metrics: expected F1Score: labels"):
        _trainer(metrics.F1Score()).evaluate(P_BIN[:, 0], Y_BIN[:, 0], batch_size=8)


@pytest.mark.parametrize("name", ["val", "val_x"])
def test_an_output_whose_keys_collide_with_val_is_refused(name):
    outputs = lambda params, x: {name: x + params["b"], "x": x + params["b"]}  # noqa: E731
    keys_of = {"val": "val_loss", "val_x": "val_x_loss"}
    trainer = jaxfit.Trainer(outputs, {"b": jnp.zeros(())}, loss="mse")
    y = {name: P_BIN, "x": P_BIN}
    with pytest.raises(ValueError, match=f"the output '{name}'.*{keys_of[name]}"):
        trainer.evaluate(P_BIN, y, batch_size=BATCH)


def test_a_metric_key_that_repeats_a_loss_key_is_refused():
    trainer = jaxfit.Trainer(
        identity, {"b": jnp.zeros(())}, loss="mse", metrics=[metrics.AUC(name="loss")]
    )
    with pytest.raises(ValueError, match="metrics: expected metrics whose log keys"):
        trainer.evaluate(P_BIN, Y_BIN, batch_size=BATCH)


class _StopAtStep(jaxfit.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.trainer.state.step) == 7:  # epoch 1, after its backup at step 6
            raise RuntimeError("stopped on purpose")


def test_a_backup_mid_epoch_with_metric_objects_resumes_exactly(tmp_path):
    # the epoch's running AUC and Precision sums come back from the backup
    x = RNG.normal(size=(64, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)

    def trainer():
        return jaxfit.Trainer(
            lambda p, x: jax.nn.sigmoid(x @ p["w"] + p["b"]),
            {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1,))},
            optimizer=optax.sgd(0.1),
            loss="binary_crossentropy",
            metrics=[metrics.AUC(), "accuracy", metrics.Precision()],
        )

    kwargs = dict(batch_size=8, epochs=2, verbose=0, shuffle=False)
    expected = trainer().fit(x, y, **kwargs).history
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="on purpose"):
        trainer().fit(
            x,
            y,
            callbacks=[
                jaxfit.callbacks.BackupAndRestore(backup, save_freq=3),
                _StopAtStep(),
            ],
            yield_every="batch",
            **kwargs,
        )
    resumed = trainer().fit(
        x, y, callbacks=[jaxfit.callbacks.BackupAndRestore(backup)], **kwargs
    )
    assert list(resumed.history) == list(expected)
    for key, values in expected.items():
        np.testing.assert_allclose(resumed.history[key], values, rtol=1e-6, err_msg=key)
