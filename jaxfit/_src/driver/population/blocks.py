"""A population's compiled blocks: the member-vmapped steps inside one loop.

A block runs its real batches in a ``lax.fori_loop`` (as ``core.step.make_block``)
whose body is the train (or eval) step ``vmap``-ped over the member axis of the
state, so the loop's trip count is shared and every step is one program for
all members. Each member's step sees its batch with its mask multiplied by its
``active`` flag: a stopped member's batches are all padding, which the step
turns into a no-op (state unchanged). Each member's loss weights are an input
of the step, so they may differ per member without another program.

A block is *per member* (``[members, slots, batch, ...]``: each member's own
shuffling order) or *shared* (``[slots, batch, ...]``: validation, streams,
unshuffled data); each layout has its program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit._src.core import inference_steps
from jaxfit._src.core import step as step_lib
from jaxfit._src.driver import compiler
from jaxfit._src.driver.population.members import member


class Call:
    """A population's compiled block, called as a single model's is
    (``(state, totals, block)``): it picks the program of the block's layout
    and adds the members' ``active`` flags and loss weights."""

    def __init__(self, per_member: Any, shared: Any, extras: Callable[[], tuple]):
        self._per_member, self._shared, self._extras = per_member, shared, extras

    def _pick(self, block: Any) -> Any:
        per_member = block["mask"].ndim == 3 and self._per_member is not None
        return self._per_member if per_member else self._shared

    def __call__(self, state: Any, totals: Any, block: Any) -> Any:
        return self._pick(block)(state, totals, block, *self._extras())

    def lower(self, state: Any, totals: Any, block: Any) -> Any:
        """The chosen program lowered for these arguments (compile ahead)."""
        return self._pick(block).lower(state, totals, block, *self._extras())


def _slot(tree: Any, i: Any, axis: int) -> Any:
    return jax.tree.map(
        lambda a: jax.lax.dynamic_index_in_dim(a, i, axis, keepdims=False), tree
    )


def population_block(step: Callable[..., Any], member_axis: int | None):
    """``block(state, totals, batches, active, weights) -> (state, totals, logs)``
    over a block of ``member_axis`` layout (0: per member, None: shared);
    ``logs`` is ``[slots, members, ...]``."""
    vstep = jax.vmap(step, in_axes=(0, member_axis, 0, 0))
    slot_axis = 0 if member_axis is None else 1

    def run(state, totals, batch, active, weights):
        state, logs = vstep(state, batch, active, weights)
        return state, jax.tree.map(jnp.add, totals, logs), logs

    def block(state, totals, batches, active, weights):
        mask = batches["mask"] if member_axis is None else batches["mask"][0]
        slots = mask.shape[0]
        if slots == 1:
            state, totals, logs = run(
                state, totals, _slot(batches, 0, slot_axis), active, weights
            )
            return state, totals, jax.tree.map(lambda a: a[None], logs)
        real = jnp.sum(jnp.any(mask > 0, axis=1)).astype(jnp.int32)
        logs = jax.tree.map(lambda t: jnp.zeros((slots, *t.shape), t.dtype), totals)

        def one(i, carry):
            state, totals, logs = carry
            batch = _slot(batches, i, slot_axis)
            state, totals, out = run(state, totals, batch, active, weights)
            logs = jax.tree.map(lambda buf, v: buf.at[i].set(v), logs, out)
            return state, totals, logs

        return jax.lax.fori_loop(0, real, one, (state, totals, logs))

    return block


@dataclasses.dataclass
class Population:
    """What a population's builder needs besides the spec: the number of
    members, their loss weights (``None``: the spec's for all) and a getter
    of their ``active`` flags (a device array)."""

    members: int
    loss_weights: list[Any] | None
    active: Callable[[], Any]


def _weights(pop: Population, objective: Any, y_spec: Any) -> np.ndarray:
    """``[members, outputs]`` float32 loss weights."""
    if pop.loss_weights is None:
        return np.tile(np.asarray(objective.loss_weights, np.float32), (pop.members, 1))
    rows = []
    for i, value in enumerate(pop.loss_weights):
        argname = f"hyperparams['loss_weights'][{i}]"
        rows.append([float(w) for w in step_lib.per_output(value, y_spec, argname)])
    return np.asarray(rows, np.float32)


def builder(pop: Population) -> Callable[..., compiler.Compiled]:
    """A ``Compiler`` builder of ``pop``'s blocks (see ``compiler._build``)."""

    def build(spec, state, shardings, x_spec, y_spec, accumulate_steps, argname):
        return _build(pop, spec, state, x_spec, y_spec, accumulate_steps, argname)

    return build


def _member_steps(spec, objective, optimizer, accumulate_steps):
    """The train and eval steps of one member: ``(state, batch, active,
    weights) -> (state, logs)``."""

    def with_weights(weights):
        count = len(objective.loss_weights)
        return dataclasses.replace(
            objective, loss_weights=tuple(weights[k] for k in range(count))
        )

    def train(state, batch, active, weights):
        step = step_lib.make_train_step(
            spec.apply,
            with_weights(weights),
            optimizer,
            spec.policy,
            counts=accumulate_steps > 1,
        )
        return step(state, {**batch, "mask": batch["mask"] * active})

    def evaluate(state, batch, active, weights):
        del active  # a stopped member is still evaluated (its logs are dropped)
        step = inference_steps.make_eval_step(
            spec.apply, with_weights(weights), policy=spec.policy
        )
        return inference_steps.keyed(step)(state, batch)

    return train, evaluate


def _build(pop, spec, state, x_spec, y_spec, accumulate_steps, argname):
    where = spec.placement
    one = jax.eval_shape(lambda s: member(s, 0), state)
    batch_size = jax.tree.leaves(x_spec)[0].shape[0]
    optimizer = compiler.optimizer_for(spec, one, accumulate_steps, batch_size)
    one = jax.eval_shape(
        lambda s: compiler.accumulating(spec, s, accumulate_steps), one
    )
    stacked = jax.eval_shape(
        lambda s: compiler.accumulating(spec, s, accumulate_steps, pop.members), state
    )
    shardings = where.state_shardings(stacked, None)
    forward, y_pred = compiler.trace_forward(spec, one, x_spec, argname)
    objective = compiler.resolve_objective(spec, y_spec, y_pred, argname)
    weights = jax.device_put(_weights(pop, objective, y_spec), where.replicated)
    steps = _member_steps(spec, objective, optimizer, accumulate_steps)
    train_call, eval_call = _calls(
        where, shardings, steps, lambda: (pop.active(), weights)
    )
    empty = jax.jit(
        compiler.named(
            lambda: jax.tree.map(
                lambda t: jnp.broadcast_to(t, (pop.members, *t.shape)),
                objective.empty_totals(),
            ),
            "empty_totals",
        ),
        out_shardings=where.replicated,
    )
    return compiler.Compiled(
        objective.log_names,
        train_call,
        eval_call,
        empty,
        shardings,
        accumulate_steps,
        compiler.fusable(forward),
        objective,
        y_pred,
        members=pop.members,
    )


def _calls(where, shardings, steps, extras) -> tuple[Call, Call]:
    """The jitted train (both layouts) and eval (shared) blocks, as ``Call``s."""
    train, evaluate = steps
    rep, members = where.replicated, where.member_sharding

    def jit(fn, name, data, out, donate):
        return jax.jit(
            compiler.named(fn, name),
            in_shardings=(shardings, rep, data, members, rep),
            out_shardings=out,
            donate_argnums=donate,
        )

    shared, out = where.batch_sharding(2), (shardings, rep, rep)
    train_call = Call(
        jit(
            population_block(train, 0),
            "train_block",
            where.member_block_sharding(),
            out,
            (0, 1),
        ),
        jit(population_block(train, None), "train_block", shared, out, (0, 1)),
        extras,
    )
    eval_block = population_block(evaluate, None)

    def eval_run(state, totals, batches, active, weights):
        state, totals, logs = eval_block(state, totals, batches, active, weights)
        return state.rng, totals, logs

    eval_call = Call(
        None, jit(eval_run, "eval_block", shared, (members, rep, rep), (1,)), extras
    )
    return train_call, eval_call
