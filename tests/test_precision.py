"""Precision policies in the pure core: casts, storage dtypes, dynamic loss scaling.

These drive the step builders directly (``make_train_step`` / ``make_block``) on
hand-built ``TrainState``s and batches, as the Trainer does.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfit._src.core import apply as apply_lib
from jaxfit._src.core import inference_steps, metrics, precision
from jaxfit._src.core import step as step_lib
from jaxfit._src.core.state import TrainState

BATCH = 8


def mlp_apply(params, x):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def mlp_params(n_in=4, n_hidden=16, n_out=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(
            rng.normal(size=(n_in, n_hidden)) / np.sqrt(n_in), jnp.float32
        ),
        "b1": jnp.zeros((n_hidden,), jnp.float32),
        "w2": jnp.asarray(
            rng.normal(size=(n_hidden, n_out)) / np.sqrt(n_hidden), jnp.float32
        ),
        "b2": jnp.zeros((n_out,), jnp.float32),
    }


def make_state(params, optimizer, pol, model_state=None, seed=0):
    """What Trainer.__init__ does, with the precision helpers."""
    params = precision.cast_for_storage(pol, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        model_state=precision.cast_for_storage(pol, model_state),
        rng=jax.random.PRNGKey(seed),
        loss_scale=precision.initial_loss_scale(pol),
    )


def make_batch(x, y, mask=None):
    n = x.shape[0]
    mask = np.ones((n,), np.float32) if mask is None else np.asarray(mask, np.float32)
    return {
        "x": jnp.asarray(x),
        "y": jnp.asarray(y),
        "sample_weight": (jnp.ones((n,), jnp.float32),),
        "mask": jnp.asarray(mask),
    }


def stack(batches):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches)


def regression_batches(num, n_in=4, seed=0):
    rng = np.random.default_rng(seed)
    return [
        make_batch(
            rng.normal(size=(BATCH, n_in)).astype(np.float32),
            rng.normal(size=(BATCH, 1)).astype(np.float32),
        )
        for _ in range(num)
    ]


def build(
    apply_fn,
    params,
    optimizer,
    pol,
    loss="mse",
    metric_spec=None,
    x_example=None,
    y_example=None,
):
    """(state, jitted block, jitted eval step, objective) for a policy."""
    apply, _ = apply_lib.normalize(apply_fn)
    state = make_state(params, optimizer, pol)
    y_pred = jax.eval_shape(
        lambda s, x: precision.make_compute_apply(pol, apply)(
            s.params, s.model_state, x, train=False, rng=s.rng
        )[0],
        state,
        x_example,
    )
    objective = step_lib.make_objective(loss, None, metric_spec, y_example, y_pred)
    block = jax.jit(
        step_lib.make_block(
            step_lib.make_train_step(apply, objective, optimizer, policy=pol)
        )
    )
    eval_step = jax.jit(inference_steps.make_eval_step(apply, objective, policy=pol))
    return state, block, eval_step, objective


def run(block, state, objective, batches, fused=False):
    """Runs the batches as one scanned block (``fused``) or as one-batch blocks.

    Returns the state and the epoch means of the logs.
    """
    totals = objective.empty_totals()
    for part in [batches] if fused else [[batch] for batch in batches]:
        state, totals, _ = block(state, totals, stack(part))
    return state, {k: float(metrics.compute(v)) for k, v in totals.items()}


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


def all_finite(tree):
    return all(
        bool(np.all(np.isfinite(np.asarray(a, np.float32))))
        for a in jax.tree.leaves(tree)
    )


# -- policies -----------------------------------------------------------------------
POLICY_CASES = [
    ("float32", jnp.float32, jnp.float32, False),
    ("bfloat16", jnp.bfloat16, jnp.bfloat16, False),
    ("mixed_bfloat16", jnp.float32, jnp.bfloat16, False),
    ("mixed_float16", jnp.float32, jnp.float16, True),
]


@pytest.mark.parametrize("name,param_dtype,compute_dtype,scaling", POLICY_CASES)
def test_policy_names_resolve_to_keras_dtypes(
    name, param_dtype, compute_dtype, scaling
):
    pol = precision.policy(name)
    assert (pol.param_dtype, pol.compute_dtype, pol.loss_scaling) == (
        param_dtype,
        compute_dtype,
        scaling,
    )
    assert precision.policy(pol) is pol
    assert name in precision.PRECISIONS
    assert (precision.initial_loss_scale(pol) is None) == (not scaling)


@pytest.mark.parametrize("bad", ["float16", "mixed", "", None, 32])
def test_unknown_precision_raises_naming_precision(bad):
    with pytest.raises(ValueError, match=r"^precision: expected one of 'float32'"):
        precision.policy(bad)


def test_initial_loss_scale_is_keras_default():
    loss_scale = precision.initial_loss_scale(precision.policy("mixed_float16"))
    assert float(loss_scale.scale) == 2.0**15 and loss_scale.scale.dtype == jnp.float32
    assert int(loss_scale.good_steps) == 0 and loss_scale.good_steps.dtype == jnp.int32
    assert precision.policy("mixed_float16").growth_steps == 2000


def test_casts_touch_only_floating_leaves():
    tree = {
        "f": jnp.ones((2,), jnp.float32),
        "i": jnp.ones((2,), jnp.int32),
        "b": jnp.ones((2,), bool),
        "key": jax.random.key(0),
        "raw_key": jax.random.PRNGKey(0),
        "none": None,
    }
    cast = precision.cast_floating(tree, jnp.bfloat16)
    assert cast["f"].dtype == jnp.bfloat16
    for name in ("i", "b", "key", "raw_key"):
        assert cast[name] is tree[name]
    assert cast["none"] is None
    back = precision.cast_like(cast, tree)
    assert back["f"].dtype == jnp.float32


def test_float32_storage_cast_is_the_identity():
    params = {"w": jnp.ones((2,), jnp.bfloat16)}
    assert precision.cast_for_storage(precision.policy("float32"), params) is params
    mixed = precision.cast_for_storage(precision.policy("mixed_bfloat16"), params)
    assert mixed["w"].dtype == jnp.float32


# -- float32: today's step, bit for bit ----------------------------------------------
def test_float32_policy_is_bit_identical_to_no_policy():
    batches = regression_batches(3)
    x0, y0 = batches[0]["x"], batches[0]["y"]
    results, jaxprs = [], []
    for pol in (None, "float32"):
        resolved = precision.policy("float32")
        state, _, _, objective = build(
            mlp_apply,
            mlp_params(),
            optax.adam(1e-2),
            resolved,
            x_example=x0,
            y_example=y0,
        )
        apply, _ = apply_lib.normalize(mlp_apply)
        train_step = step_lib.make_train_step(
            apply, objective, optax.adam(1e-2), policy=pol
        )
        jaxprs.append(str(jax.make_jaxpr(train_step)(state, batches[0])))
        block = jax.jit(step_lib.make_block(train_step))
        results.append(run(block, state, objective, batches))
        assert state.loss_scale is None
    assert jaxprs[0] == jaxprs[1]
    assert_trees_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_float32_state_has_no_extra_leaves():
    pol = precision.policy("float32")
    state = make_state(mlp_params(), optax.sgd(0.1), pol)
    legacy = TrainState(
        step=state.step,
        params=state.params,
        opt_state=state.opt_state,
        model_state=None,
        rng=state.rng,
    )
    assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(legacy))
    assert jax.tree.structure(state) == jax.tree.structure(legacy)


# -- mixed_bfloat16 -----------------------------------------------------------------
def test_mixed_bfloat16_apply_sees_bfloat16_and_master_params_stay_float32():
    """Params and x arrive in bfloat16; the model state as stored (float32)."""
    seen = []

    def apply(params, x, *, state):
        seen.append(
            (
                jax.tree.map(lambda a: a.dtype, params),
                x.dtype,
                state["mean"].dtype,
                state["count"].dtype,
            )
        )
        y_pred = mlp_apply(params, x)
        new_state = {  # returned in bfloat16: stored back as float32
            "mean": (0.5 * state["mean"] + 0.5 * jnp.mean(x, axis=0)).astype(x.dtype),
            "count": state["count"] + 1,
        }
        return y_pred, new_state

    pol = precision.policy("mixed_bfloat16")
    batches = regression_batches(2)
    model_state = {
        "mean": jnp.zeros((4,), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
    }
    normalized, _ = apply_lib.normalize(apply)
    optimizer = optax.adam(1e-2)
    state = make_state(mlp_params(), optimizer, pol, model_state=model_state)
    objective = step_lib.make_objective(
        "mse", None, None, batches[0]["y"], batches[0]["y"]
    )
    train_step = step_lib.make_train_step(normalized, objective, optimizer, policy=pol)
    block = jax.jit(step_lib.make_block(train_step))
    new_state, logs = run(block, state, objective, batches)
    assert np.isfinite(logs["loss"])

    params_dtypes, x_dtype, mean_dtype, count_dtype = seen[-1]
    assert set(jax.tree.leaves(params_dtypes)) == {jnp.dtype(jnp.bfloat16)}
    assert (x_dtype, mean_dtype, count_dtype) == (jnp.bfloat16, jnp.float32, jnp.int32)
    for new, old in zip(
        jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)
    ):
        assert new.dtype == jnp.float32 and not np.array_equal(new, old)
    assert {
        a.dtype
        for a in jax.tree.leaves(new_state.opt_state)
        if jnp.issubdtype(a.dtype, jnp.floating)
    } == {jnp.dtype(jnp.float32)}
    assert new_state.model_state["mean"].dtype == jnp.float32
    assert int(new_state.model_state["count"]) == 2 and int(new_state.step) == 2
    assert new_state.loss_scale is None

    grads = jax.grad(
        lambda p: jnp.mean(
            precision.make_compute_apply(pol, normalized)(
                p, model_state, batches[0]["x"], train=True, rng=state.rng
            )[0]
        )
    )(state.params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_running_averages_in_the_model_state_keep_float32_precision(name):
    """A batch-norm style average (momentum 0.99) of a constant 1.5 reaches 1.5.

    The state reaches ``apply`` in float32, so the update is done in float32;
    in bfloat16 it would stall at 1.0.
    """

    def apply(params, x, *, state):
        mean = jnp.mean(x, axis=0).astype(state["mean"].dtype)
        new_state = {"mean": 0.99 * state["mean"] + 0.01 * mean}
        return mlp_apply(params, x), new_state

    pol = precision.policy(name)
    normalized, _ = apply_lib.normalize(apply)
    optimizer = optax.sgd(0.0)
    state = make_state(
        mlp_params(), optimizer, pol, model_state={"mean": jnp.zeros((4,), jnp.float32)}
    )
    x = jnp.full((BATCH, 4), 1.5, jnp.float32)
    batch = make_batch(x, jnp.zeros((BATCH, 1), jnp.float32))
    objective = step_lib.make_objective("mse", None, None, batch["y"], batch["y"])
    block = jax.jit(
        step_lib.make_block(
            step_lib.make_train_step(normalized, objective, optimizer, policy=pol)
        )
    )
    repeated = jax.tree.map(lambda a: jnp.broadcast_to(a, (1000, *a.shape)), batch)
    state, _, _ = block(state, objective.empty_totals(), repeated)
    assert state.model_state["mean"].dtype == jnp.float32
    np.testing.assert_allclose(state.model_state["mean"], 1.5, rtol=1e-3)


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_low_precision_loss_is_close_to_float32(name):
    batches = regression_batches(1, seed=3)
    x0, y0 = batches[0]["x"], batches[0]["y"]
    losses = {}
    for pol_name in ("float32", name):
        pol = precision.policy(pol_name)
        state, _, eval_step, _ = build(
            mlp_apply, mlp_params(), optax.sgd(0.1), pol, x_example=x0, y_example=y0
        )
        _, logs = eval_step(state, batches[0])
        losses[pol_name] = float(metrics.compute(logs["loss"]))
    np.testing.assert_allclose(losses[name], losses["float32"], rtol=2e-2)


def classification_data(n=512, n_in=8, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype(np.float32)
    teacher = rng.normal(size=(n_in, n_classes))
    y = np.argmax(x @ teacher, axis=-1).astype(np.int32)
    return x, y


@functools.cache
def trained_accuracy(name):
    """Training accuracy of a small MLP after 120 adam steps under ``name``."""
    x, y = classification_data()
    batch, steps = 32, 120
    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(8)])[: batch * steps]
    batches = [make_batch(x[i], y[i]) for i in order.reshape(steps, batch)]
    pol = precision.policy(name)
    state, block, eval_step, objective = build(
        mlp_apply,
        mlp_params(n_in=8, n_hidden=32, n_out=3),
        optax.adam(1e-2),
        pol,
        loss="sparse_categorical_crossentropy_from_logits",
        metric_spec=["accuracy"],
        x_example=batches[0]["x"],
        y_example=batches[0]["y"],
    )
    state, _ = run(block, state, objective, batches, fused=True)
    assert all_finite(state.params)
    _, logs = eval_step(state, make_batch(x, y))
    return float(metrics.compute(logs["accuracy"]))


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_low_precision_training_reaches_float32_accuracy(name):
    assert trained_accuracy("float32") > 0.9
    assert abs(trained_accuracy(name) - trained_accuracy("float32")) <= 0.03


def test_bfloat16_stores_params_and_optimizer_state_in_bfloat16():
    pol = precision.policy("bfloat16")
    batches = regression_batches(2)
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.adam(1e-2),
        pol,
        x_example=batches[0]["x"],
        y_example=batches[0]["y"],
    )
    new_state, logs = run(block, state, objective, batches)
    floating = [
        a
        for a in jax.tree.leaves((new_state.params, new_state.opt_state))
        if jnp.issubdtype(a.dtype, jnp.floating)
    ]
    assert {a.dtype for a in floating} == {jnp.dtype(jnp.bfloat16)}
    assert not np.array_equal(new_state.params["w1"], state.params["w1"])
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_eval_and_predict_outputs_are_float32(name):
    pol = precision.policy(name)
    batch = regression_batches(1)[0]
    state, _, eval_step, _ = build(
        mlp_apply,
        mlp_params(),
        optax.sgd(0.1),
        pol,
        x_example=batch["x"],
        y_example=batch["y"],
    )
    apply, _ = apply_lib.normalize(mlp_apply)
    y_pred = jax.jit(inference_steps.make_predict_step(apply, policy=pol))(
        state, batch["x"]
    )
    assert y_pred.dtype == jnp.float32
    out_state, logs = eval_step(state, batch)
    assert logs["loss"].total.dtype == jnp.float32
    assert_trees_equal(out_state, state)


# -- mixed_float16: dynamic loss scaling -------------------------------------------
def scaled_policy(**changes):
    return dataclasses.replace(precision.policy("mixed_float16"), **changes)


def overflow_batch(kind, seed=5):
    """A batch whose float16 gradients overflow.

    ``targets``: the loss is finite (float32), but its scaled gradient overflows
    float16 on the way back through the output cast. ``inputs``: ``x`` itself is
    beyond float16's range, so the forward pass is already infinite.
    """
    batch = regression_batches(1, seed=seed)[0]
    if kind == "targets":
        return dict(batch, y=batch["y"] + 1e4)
    return dict(batch, x=batch["x"].at[0, 0].set(1e30))


@pytest.mark.parametrize("kind", ["targets", "inputs"])
def test_mixed_float16_skips_a_step_with_non_finite_gradients(kind):
    pol = scaled_policy(initial_scale=2.0**10)
    batches = regression_batches(4)
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.adam(1e-2),
        pol,
        x_example=batches[0]["x"],
        y_example=batches[0]["y"],
    )
    state, _ = run(block, state, objective, batches[:2])
    assert int(state.step) == 2 and int(state.loss_scale.good_steps) == 2

    skipped, logs = run(block, state, objective, [overflow_batch(kind)])
    assert_trees_equal(skipped.params, state.params)
    assert_trees_equal(skipped.opt_state, state.opt_state)
    assert int(skipped.step) == 2  # Keras: the optimizer's iterations do not advance
    assert not np.array_equal(
        jax.random.key_data(skipped.rng), jax.random.key_data(state.rng)
    )
    assert float(skipped.loss_scale.scale) == 2.0**9
    assert int(skipped.loss_scale.good_steps) == 0
    if kind == "targets":  # only the scaled gradient overflowed, not the loss
        assert np.isfinite(logs["loss"])

    after, _ = run(block, skipped, objective, batches[2:])
    assert int(after.step) == 4 and int(after.loss_scale.good_steps) == 2
    assert float(after.loss_scale.scale) == 2.0**9
    assert all_finite(after.params) and all_finite(after.opt_state)
    assert not np.array_equal(after.params["w1"], skipped.params["w1"])


def test_the_loss_scale_is_what_keeps_small_gradients_alive():
    """Unscaled, the batch's float16 gradients underflow; scaled they survive.

    ``dmse/dw = sum_i 2 * (0 - 1e-4) / 8 * 1e-4 = -2e-8``: each term (2.5e-9) is
    below float16's smallest subnormal (6e-8) unless the loss is scaled.
    """
    apply, _ = apply_lib.normalize(lambda params, x: x @ params["w"])
    x = jnp.full((BATCH, 1), 1e-4, jnp.float32)
    y = jnp.full((BATCH, 1), 1e-4, jnp.float32)
    params = {"w": jnp.zeros((1, 1), jnp.float32)}
    updated = {}
    for initial_scale in (1.0, 2.0**15):
        pol = scaled_policy(initial_scale=initial_scale)
        state = make_state(params, optax.sgd(1.0), pol)
        objective = step_lib.make_objective("mse", None, None, y, y)
        step = jax.jit(
            step_lib.make_train_step(apply, objective, optax.sgd(1.0), policy=pol)
        )
        new_state, _ = step(state, make_batch(x, y))
        updated[initial_scale] = float(new_state.params["w"][0, 0])
        assert int(new_state.step) == 1  # finite either way: not a skipped step
    assert updated[1.0] == 0.0
    np.testing.assert_allclose(updated[2.0**15], 2e-8, rtol=1e-2)


def test_loss_scale_doubles_after_growth_steps_finite_steps():
    pol = scaled_policy(initial_scale=2.0**4, growth_steps=3)
    batches = regression_batches(7)
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.sgd(1e-2),
        pol,
        x_example=batches[0]["x"],
        y_example=batches[0]["y"],
    )
    scales = []
    for batch in batches:
        state, _ = run(block, state, objective, [batch])
        scales.append((float(state.loss_scale.scale), int(state.loss_scale.good_steps)))
    assert scales == [
        (16.0, 1),
        (16.0, 2),
        (32.0, 0),
        (32.0, 1),
        (32.0, 2),
        (64.0, 0),
        (64.0, 1),
    ]


def test_loss_scale_never_drops_below_one():
    pol = scaled_policy(initial_scale=2.0)
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.sgd(1e-2),
        pol,
        x_example=regression_batches(1)[0]["x"],
        y_example=regression_batches(1)[0]["y"],
    )
    for _ in range(3):
        state, _ = run(block, state, objective, [overflow_batch("inputs")])
    assert float(state.loss_scale.scale) == 1.0 and int(state.step) == 0
    assert all_finite(state.params)


def test_an_all_masked_batch_leaves_the_loss_scale_alone():
    pol = scaled_policy(initial_scale=2.0**10, growth_steps=2)
    batches = regression_batches(1)
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.adam(1e-2),
        pol,
        x_example=batches[0]["x"],
        y_example=batches[0]["y"],
    )
    state, _ = run(block, state, objective, batches)
    assert int(state.loss_scale.good_steps) == 1
    for batch in (batches[0], overflow_batch("inputs"), overflow_batch("targets")):
        padding = dict(batch, mask=jnp.zeros((BATCH,), jnp.float32))
        same, _ = run(block, state, objective, [padding])
        assert_trees_equal(same, state)


def test_partly_masked_overflow_rows_do_not_count():
    """Padding rows full of overflowing values are masked out of the loss."""
    pol = scaled_policy(initial_scale=2.0**10)
    batch = overflow_batch("targets")
    real = regression_batches(1, seed=5)[0]
    mask = jnp.asarray([1.0] * 4 + [0.0] * 4)
    batch = dict(
        batch, y=jnp.where(mask[:, None] > 0, real["y"], batch["y"]), mask=mask
    )
    state, block, _, objective = build(
        mlp_apply,
        mlp_params(),
        optax.adam(1e-2),
        pol,
        x_example=batch["x"],
        y_example=batch["y"],
    )
    new_state, _ = run(block, state, objective, [batch])
    assert int(new_state.step) == 1 and int(new_state.loss_scale.good_steps) == 1


def test_loss_scaling_without_a_loss_scale_state_raises():
    pol = precision.policy("mixed_float16")
    batch = regression_batches(1)[0]
    apply, _ = apply_lib.normalize(mlp_apply)
    state = make_state(mlp_params(), optax.sgd(0.1), pol).replace(loss_scale=None)
    objective = step_lib.make_objective("mse", None, None, batch["y"], batch["y"])
    step = step_lib.make_train_step(apply, objective, optax.sgd(0.1), policy=pol)
    with pytest.raises(TypeError, match=r"^state\.loss_scale: expected"):
        step(state, batch)


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16", "bfloat16"])
def test_precision_steps_are_clean_under_strict_dtype_promotion(name):
    pol = dataclasses.replace(precision.policy(name), initial_scale=2.0**10)
    batches = regression_batches(2)
    with jax.numpy_dtype_promotion("strict"):
        state, block, eval_step, objective = build(
            mlp_apply,
            mlp_params(),
            optax.sgd(0.1),
            pol,
            x_example=batches[0]["x"],
            y_example=batches[0]["y"],
        )
        state, logs = run(block, state, objective, batches)
        eval_step(state, batches[0])
    assert int(state.step) == 2 and np.isfinite(logs["loss"])
