"""The loop runs on a FitSession and a plan, without any Trainer: a hand-made source
of blocks, jitted blocks from the core step builders, and plain callbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import linear_apply, linear_params

from jaxfit._src.core import apply as apply_lib
from jaxfit._src.core import inference_steps
from jaxfit._src.core import step as step_lib
from jaxfit._src.core.placement import Placement
from jaxfit._src.core.state import TrainState
from jaxfit._src.driver import callback as callback_lib
from jaxfit._src.driver import evaluating, loop, steps, yield_policy
from jaxfit._src.driver.compiler import Compiled
from jaxfit._src.driver.session import FitSession


class _Source:
    """Two blocks of two batches of 4 rows each per epoch (the last batch ragged)."""

    required_steps = None
    steps = 4

    def __init__(self):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(4, 4, 3)).astype(np.float32)
        self.y = rng.normal(size=(4, 4, 1)).astype(np.float32)
        self.mask = np.ones((4, 4), np.float32)
        self.mask[3, 2:] = 0.0
        self.closed = False

    def epoch_blocks(self, epoch, start, capacity, steps):
        for first in range(start, 4, 2):
            part = slice(first, first + 2)
            yield (
                {
                    "x": self.x[part],
                    "y": self.y[part],
                    "sample_weight": (self.mask[part],),
                    "mask": self.mask[part],
                },
                2,
            )  # (block, real batches)

    def eval_blocks(self, limit, capacity, steps):
        return self.epoch_blocks(0, 0, capacity, steps)

    def close(self):
        self.closed = True


def test_fit_loop_trains_a_session_without_a_trainer():
    apply, _ = apply_lib.normalize(linear_apply)
    y_spec = jax.ShapeDtypeStruct((4, 1), jnp.float32)
    objective = step_lib.make_objective("mse", None, ["mae"], y_spec, y_spec)
    optimizer = optax.sgd(0.1)
    block = jax.jit(
        step_lib.make_block(step_lib.make_train_step(apply, objective, optimizer))
    )
    eval_fn = step_lib.make_block(inference_steps.make_eval_step(apply, objective))
    names = objective.log_names
    compiled = Compiled(
        names,
        block,
        jax.jit(lambda s, t, b: (s.rng, *eval_fn(s, t, b)[1:])),  # (rng, totals, logs)
        jax.jit(objective.empty_totals),
    )
    params = linear_params()
    state = TrainState(
        jnp.zeros((), jnp.int32),
        params,
        optimizer.init(params),
        None,
        jax.random.PRNGKey(0),
    )
    session = FitSession(state, Placement(None))
    source = _Source()
    validation = evaluating.EvalPlan(source, compiled)
    plan = loop.FitPlan(
        source, 2, 0, yield_policy.parse("batch"), validation, 1, compiled, capacity=2
    )
    seen = []
    callbacks = callback_lib.CallbackList(
        callback_lib.normalize(
            [
                {
                    "on_train_batch_end": lambda batch, logs: seen.append(batch),
                    "on_epoch_end": lambda epoch, logs: seen.append(
                        ("end", epoch, sorted(logs))
                    ),
                }
            ]
        ),
        None,
        {},
    )
    steps.finish(loop.fit_loop(session, plan, callbacks))
    assert int(session.state.step) == 8 and session.finished and source.closed
    assert seen == [
        0,
        1,
        2,
        3,
        ("end", 0, ["loss", "mae", "val_loss", "val_mae"]),
        0,
        1,
        2,
        3,
        ("end", 1, ["loss", "mae", "val_loss", "val_mae"]),
    ]
    assert session.position.epoch == 2
