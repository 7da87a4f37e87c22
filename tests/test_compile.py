"""Compile once: no recompilation after the first epoch or on a second fit."""

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit


def test_zero_compilations_after_the_first_epoch_and_on_a_second_fit(compiles):
    x, y = regression_data(n=37)  # ragged last batch
    vx, vy = regression_data(n=11, seed=1)
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(1e-2),
        loss="mse",
        metrics=["mae"],
    )
    seen = []

    class CountPerEpoch(jaxfit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(compiles.count)

    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        validation_data=(vx, vy),
        callbacks=[CountPerEpoch()],
        verbose=0,
    )
    assert seen[0] > 0
    assert seen[1] == seen[0] and seen[2] == seen[0]
    compiles.reset()
    trainer.fit(x, y, batch_size=8, epochs=2, validation_data=(vx, vy), verbose=0)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        validation_data=(vx, vy),
        verbose=0,
        initial_epoch=0,
        shuffle=False,
    )
    assert compiles.count == 0


@pytest.mark.parametrize("call", ["fit", "fit_dataset"])
def test_blocks_of_every_length_share_one_program(compiles, call):
    # a clock that jumps 3 ms at every read makes the measured step time, and so
    # the block lengths, change all along; the programs do not
    x, y = regression_data(n=400)
    clock = iter(range(10**9))
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(1e-2), loss="mse"
    )
    lengths, last = [], {}

    class Lengths(jaxfit.callbacks.Callback):
        def on_yield(self, epoch, batch, logs=None):  # batches since the last one
            lengths.append(batch - last.get(epoch, -1))
            last[epoch] = batch

    kwargs = dict(
        epochs=2,
        yield_every=20,
        now=lambda: next(clock) * 0.003,
        callbacks=[Lengths()],
        verbose=0,
    )
    if call == "fit":
        trainer.fit(x, y, batch_size=4, validation_split=0.25, **kwargs)
    else:
        batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 300, 4)]
        trainer.fit_dataset(batches, validation_data=batches[:5], **kwargs)
    assert len(set(lengths)) > 2 and min(lengths) > 0  # stretches of several lengths
    assert compiles.named("train_block") == 1
    assert compiles.named("eval_block") == 1


def test_batch_policy_compiles_once_across_epochs(compiles):
    x, y = regression_data(n=9)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(1e-2), loss="mse"
    )
    trainer.fit(x, y, batch_size=4, epochs=1, yield_every="batch", verbose=0)
    compiles.reset()
    trainer.fit(x, y, batch_size=4, epochs=3, yield_every="batch", verbose=0)
    trainer.predict(x, batch_size=4)
    first_predict = compiles.count
    trainer.predict(x[:5], batch_size=4)
    assert compiles.count == first_predict


def test_params_placed_by_the_user_compile_once(compiles):
    import jax

    x, y = regression_data(n=37)
    params = jax.device_put(linear_params(), jax.devices()[0])  # committed arrays
    trainer = jaxfit.Trainer(
        linear_apply, params, optimizer=optax.adam(1e-2), loss="mse"
    )
    seen = []
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        yield_every="batch",
        verbose=0,
        validation_split=0.2,
        callbacks=[{"on_epoch_end": lambda e, logs: seen.append(compiles.count)}],
    )
    assert seen[0] > 0 and seen == [seen[0]] * 3


def test_a_conv_model_on_cpu_runs_one_step_per_call_with_the_same_history():
    import jax
    import jax.numpy as jnp
    import numpy as np

    def conv_apply(params, x):  # NHWC images, one 3x3 convolution, a dense head
        h = jax.lax.conv_general_dilated(
            x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.mean(jax.nn.relu(h), axis=(1, 2)) @ params["w"]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 6, 2)).astype(np.float32)
    y = rng.normal(size=(24, 1)).astype(np.float32)
    params = {
        "k": jnp.asarray(rng.normal(size=(3, 3, 2, 4)) * 0.3, jnp.float32),
        "w": jnp.asarray(rng.normal(size=(4, 1)) * 0.3, jnp.float32),
    }
    histories, calls = [], []
    for yield_every in ("auto", "batch"):
        trainer = jaxfit.Trainer(
            conv_apply, params, optimizer=optax.adam(1e-2), loss="mse"
        )
        trainer.fit(
            x,
            y,
            batch_size=4,
            epochs=2,
            shuffle=False,
            verbose=0,
            yield_every=yield_every,
        )
        histories.append(trainer.history.history)
        calls.append(trainer._compiler._cache)
    assert histories[0] == histories[1]
    if jax.default_backend() == "cpu":
        (compiled,) = calls[0].values()
        assert not compiled.fuse  # XLA:CPU convolutions are slow inside loops


def _first_fit_compiles(params, optimizer, compiles):
    x, y = regression_data(n=37)
    trainer = jaxfit.Trainer(
        linear_apply, params, optimizer=optimizer, loss="mse", metrics=["mae"]
    )
    compiles.reset()
    per_epoch = []
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        validation_split=0.2,
        verbose=0,
        callbacks=[{"on_epoch_end": lambda e, logs: per_epoch.append(compiles.count)}],
    )
    return per_epoch, trainer


@pytest.mark.parametrize(
    "optimizer", [optax.sgd(1e-2), optax.adam(1e-2)], ids=["sgd", "adam"]
)
@pytest.mark.parametrize(
    "weak",
    [
        lambda p: {"w": p["w"] + 0.0, "b": jnp.array(0.0)},  # weakly typed jax arrays
        lambda p: {"w": p["w"], "b": 0.0},  # a Python float
    ],
    ids=["jnp-weak", "python-float"],
)
def test_weakly_typed_initial_values_compile_like_strong_ones(
    optimizer, weak, compiles
):
    strong_counts, _ = _first_fit_compiles(linear_params(), optimizer, compiles)
    weak_counts, trainer = _first_fit_compiles(
        weak(linear_params()), optimizer, compiles
    )
    # the train block and the eval step each compile once: as many compiles as
    # with strongly typed params, all in the first epoch
    assert weak_counts == strong_counts == [strong_counts[0]] * 3
    for leaf in jax.tree.leaves(trainer.state):
        assert not getattr(leaf, "weak_type", False)
    assert trainer.params["b"].dtype == jnp.float32
