"""Same results on 1 or N devices: every path that pads batches to the data axis.

Each test trains (or evaluates, predicts, checkpoints) the same thing with the
default ``mesh="auto"`` and with ``mesh=None`` (one device) in one process and
compares. In the device matrix's 8-device run (see conftest) that is 8 devices
against 1, with batch sizes that divide by 8 and batch sizes that do not (padded
and masked to the next multiple); in the one-device run both are one device.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DEVICES, linear_apply, linear_params

import jaxfit

RNG = np.random.default_rng(0)
X = RNG.normal(size=(37, 3)).astype(np.float32)
Y = (
    X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1 * RNG.normal(size=(37, 1))
).astype(np.float32)
LABELS = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32)
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]
W = RNG.uniform(0.2, 2.0, size=37).astype(np.float32)
BATCH_SIZES = [8, 16, 6, 13, 3]  # 8, 16 divide by 8 devices; 6, 13, 3 are padded
TOL = dict(rtol=2e-5, atol=1e-6)  # float32 reassociation across devices


def _both(make, run):
    """``run(trainer)`` for a trainer on every device and one on a single device."""
    results = []
    for mesh in ("auto", None):
        trainer = make(mesh)
        if mesh == "auto":
            devices = {
                d
                for leaf in jax.tree.leaves(trainer.params)
                for d in leaf.sharding.device_set
            }
            assert len(devices) == DEVICES
        results.append(run(trainer))
    return results


def _close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)


def _linear(mesh, optimizer=None, **kwargs):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        mesh=mesh,
        seed=0,
        optimizer=optimizer or optax.adam(0.05),
        **kwargs,
    )


def _softmax_apply(params, x):
    return jax.nn.softmax(x @ params["w"] + params["b"])


def _classifier(mesh, **kwargs):
    return jaxfit.Trainer(
        _softmax_apply,
        linear_params(3, 3),
        mesh=mesh,
        seed=0,
        optimizer=optax.sgd(0.2),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        **kwargs,
    )


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_fit_history_evaluate_and_predict(batch_size):
    def run(trainer):
        history = trainer.fit(
            X, Y, batch_size=batch_size, epochs=3, validation_split=0.25, verbose=0
        )
        return (
            history.history,
            trainer.evaluate(X, Y, batch_size=batch_size),
            trainer.predict(X, batch_size=batch_size),
            trainer.params,
        )

    auto, one = _both(lambda mesh: _linear(mesh, loss="mse", metrics=["mae"]), run)
    _close(auto, one)
    assert auto[2].shape == (37, 1)
    # predict is the model applied to every row, in order
    np.testing.assert_allclose(auto[2], np.asarray(linear_apply(auto[3], X)), **TOL)


@pytest.mark.parametrize("batch_size", [8, 6])
def test_class_and_sample_weights_and_validation_data(batch_size):
    def run(trainer):
        return trainer.fit(
            X,
            ONE_HOT,
            batch_size=batch_size,
            epochs=2,
            class_weight={0: 1.0, 1: 2.0, 2: 0.5},
            validation_data=(X[:11], ONE_HOT[:11], W[:11]),
            verbose=0,
        ).history, trainer.params

    _close(*_both(_classifier, run))

    def run_weighted(trainer):
        return trainer.fit(
            X,
            ONE_HOT,
            batch_size=batch_size,
            epochs=2,
            sample_weight=W,
            validation_split=0.3,
            verbose=0,
        ).history, trainer.params

    _close(
        *_both(
            lambda mesh: _classifier(mesh, weighted_metrics=["accuracy"]), run_weighted
        )
    )


@pytest.mark.parametrize("batch_size", [8, 5])
def test_multi_output_pytrees_with_per_output_weights(batch_size):
    def apply(params, x):
        h = x @ params["w"]
        return {"reg": h[:, :1], "cls": jax.nn.sigmoid(h[:, 1:])}

    y = {"reg": Y, "cls": (X[:, :1] > 0).astype(np.float32)}
    weights = {"reg": W, "cls": W[::-1].copy()}

    def make(mesh):
        return jaxfit.Trainer(
            apply,
            {"w": jnp.full((3, 2), 0.1)},
            mesh=mesh,
            optimizer=optax.adam(0.05),
            loss={"reg": "mse", "cls": "binary_crossentropy"},
            loss_weights={"reg": 1.0, "cls": 0.5},
            metrics={"cls": ["accuracy"]},
        )

    def run(trainer):
        history = trainer.fit(
            X,
            y,
            batch_size=batch_size,
            epochs=2,
            sample_weight=weights,
            validation_split=0.2,
            verbose=0,
        )
        return history.history, trainer.predict(X, batch_size=batch_size)

    auto, one = _both(make, run)
    _close(auto, one)
    assert auto[1]["reg"].shape == (37, 1) and auto[1]["cls"].shape == (37, 1)


@pytest.mark.parametrize("batch_size", [8, 6])
def test_accumulate_steps_and_steps_per_epoch(batch_size):
    def run(trainer):
        history = trainer.fit(
            X,
            Y,
            batch_size=batch_size,
            epochs=3,
            accumulate_steps=2,
            steps_per_epoch=3,
            validation_split=0.2,
            validation_batch_size=5,
            verbose=0,
        )
        return history.history, trainer.params

    _close(*_both(lambda mesh: _linear(mesh, loss="mse"), run))


@pytest.mark.parametrize("sizes", [[8, 8, 8], [5, 5, 3]])
def test_fit_dataset_and_evaluate_dataset(sizes):
    edges = np.cumsum([0] + sizes)
    batches = [(X[a:b], Y[a:b], W[a:b]) for a, b in itertools.pairwise(edges)]
    validation = [(X[20:27], Y[20:27]), (X[27:30], Y[27:30])]

    def run(trainer):
        history = trainer.fit_dataset(
            batches, epochs=3, validation_data=validation, verbose=0
        )
        return (history.history, trainer.evaluate_dataset(validation), trainer.params)

    _close(*_both(lambda mesh: _linear(mesh, loss="mse", metrics=["mae"]), run))


@pytest.mark.parametrize("batch_size", [8, 6])
def test_checkpoints_move_between_device_counts(tmp_path, batch_size):
    pytest.importorskip("orbax.checkpoint")
    trainer = _linear("auto", loss="mse")
    trainer.fit(X, Y, batch_size=batch_size, epochs=2, verbose=0)
    trainer.save(tmp_path / "auto")
    one = jaxfit.Trainer.load(
        tmp_path / "auto",
        linear_apply,
        mesh=None,
        optimizer=optax.adam(0.05),
        loss="mse",
    )
    _close(one.state, trainer.state)
    one.save(tmp_path / "one")
    back = jaxfit.Trainer.load(
        tmp_path / "one", linear_apply, optimizer=optax.adam(0.05), loss="mse"
    )
    _close(back.state, trainer.state)
    # training on from either gives the same
    _close(
        one.fit(X, Y, batch_size=batch_size, epochs=1, verbose=0).history,
        back.fit(X, Y, batch_size=batch_size, epochs=1, verbose=0).history,
    )


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("batch_size", [8, 6])
def test_a_run_interrupted_on_one_topology_resumes_on_the_other(tmp_path, batch_size):
    pytest.importorskip("orbax.checkpoint")
    kwargs = dict(batch_size=batch_size, epochs=4, validation_split=0.2, verbose=0)
    expected = _linear(None, loss="mse").fit(X, Y, **kwargs).history

    def fail_at_epoch_2(epoch, logs):
        if epoch == 2:
            raise _Interrupt

    for first, second in (("auto", None), (None, "auto")):
        backup = tmp_path / f"backup-{first}"
        trainer = _linear(first, loss="mse")
        with pytest.raises(_Interrupt):
            trainer.fit(
                X,
                Y,
                callbacks=[
                    {"on_epoch_begin": fail_at_epoch_2},
                    jaxfit.callbacks.BackupAndRestore(backup),
                ],
                **kwargs,
            )
        resumed = _linear(second, loss="mse")
        history = resumed.fit(
            X, Y, callbacks=[jaxfit.callbacks.BackupAndRestore(backup)], **kwargs
        )
        assert history.epoch == [0, 1, 2, 3]
        _close(history.history, expected)


def test_a_stateful_model_sees_the_same_batch_statistics():
    """Batch statistics must exclude padding rows: an apply that declares ``mask``
    receives it (1 for real rows, 0 for padding)."""

    def apply(params, x, *, train, state, mask):
        if train:  # batch mean over the real rows only, like a masked BatchNorm
            mean = jnp.sum(x * mask[:, None], axis=0) / jnp.sum(mask)
            state = {"mean": 0.9 * state["mean"] + 0.1 * mean}
        else:
            mean = state["mean"]
        return (x - mean) @ params["w"] + params["b"], state

    def make(mesh):
        return jaxfit.Trainer(
            apply,
            linear_params(),
            state={"mean": jnp.zeros(3)},
            mesh=mesh,
            optimizer=optax.sgd(0.1),
            loss="mse",
        )

    def run(trainer):
        history = trainer.fit(
            X, Y, batch_size=6, epochs=2, validation_split=0.2, verbose=0
        )
        return history.history, trainer.state.model_state, trainer.predict(X)

    _close(*_both(make, run))


def test_a_flax_batch_norm_given_the_mask_is_the_same_on_every_topology():
    linen = pytest.importorskip("flax.linen")

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool, mask):
            # no bias before the norm: its gradient is 0 up to rounding, which Adam
            # would blow up into steps of size lr (not a device question)
            h = linen.Dense(4, use_bias=False)(x)
            h = linen.BatchNorm(use_running_average=not train, momentum=0.9)(
                h, mask=mask[:, None] > 0
            )
            return linen.Dense(1)(jax.nn.relu(h))

    def make(mesh):
        return jaxfit.Trainer(
            jaxfit.from_flax(Net(), X[:2]),
            mesh=mesh,
            optimizer=optax.adam(0.02),
            loss="mse",
        )

    def run(trainer):
        history = trainer.fit(X, Y, batch_size=6, epochs=2, verbose=0)
        return history.history, trainer.state.model_state, trainer.predict(X)

    auto, one = _both(make, run)
    _close(auto, one)
