"""Pure step builders: the train, eval and predict computations jaxfit jits.

A *batch* is a dict ``{"x", "y", "sample_weight", "mask"}``: ``x`` and ``y`` are
pytrees with a leading batch axis, ``sample_weight`` is a tuple of float32
vectors (one per output of ``y``) and ``mask`` a float32 vector. ``mask`` is 0 for padding rows (the ragged last batch is padded to the
full batch size, never compiled again). A *block* is the same dict with an extra
leading axis of ``K`` batches; one compiled call runs the ``K`` steps in a
``lax.scan`` so small models are not bound by Python dispatch. A batch whose mask
is all zero is a no-op: the state comes out unchanged. The step builders take
an optional precision policy (``precision``): casts around ``apply`` and, for
``"mixed_float16"``, dynamic loss scaling with skipped non-finite steps.

Reductions follow Keras 3: the loss is ``sum(w * l) / batch_size`` (the
"sum_over_batch_size" reduction, padding rows excluded), a metric is the mean
over the real samples, and a weighted metric the sample-weighted mean
``sum(w * m) / sum(w)``. Both are carried as
``metrics.MeanState`` sums, so the epoch value is exact over ragged batches; a
metric object (``AUC``, ``Precision``...) carries its own state of sums (see
``metric_base``). Every state merges by addition, on device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxfit._src import errors
from jaxfit._src.core import losses, metrics, objective_keys, precision
from jaxfit._src.core.state import TrainState

Logs = dict[str, Any]  # a MeanState, or a metric object's state


def output_names(y: Any) -> list[str]:
    """Names of the leaves of ``y``: dict keys, ``output_<i>`` for sequences."""
    paths = jax.tree_util.tree_flatten_with_path(y)[0]
    names = []
    for path, _ in paths:
        parts = []
        for key in path:
            if isinstance(key, jax.tree_util.DictKey):
                parts.append(str(key.key))
            elif isinstance(key, jax.tree_util.SequenceKey):
                parts.append(f"output_{key.idx}")
            else:
                parts.append(str(getattr(key, "name", key)))
        names.append("_".join(parts) or "output")
    return names


def _is_spec_leaf(value: Any) -> bool:
    return value is None or isinstance(value, str) or callable(value)


def per_output(spec: Any, y: Any, argname: str) -> list[Any]:
    """Broadcasts one spec to every output of ``y`` or matches a pytree of specs."""
    return _per_output(spec, y, argname)


def _per_output(spec: Any, y: Any, argname: str) -> list[Any]:
    """Broadcasts one spec to every output of ``y`` or matches a pytree of specs."""
    # Any: jaxlib ships no stubs for PyTreeDef
    treedef: Any = jax.tree_util.tree_structure(y)
    if _is_spec_leaf(spec):
        return [spec] * treedef.num_leaves
    leaves, spec_def = jax.tree_util.tree_flatten(spec, is_leaf=_is_spec_leaf)
    if spec_def != treedef:
        raise ValueError(
            errors.expected(
                argname,
                f"one entry per output of y, structured like y ({treedef})",
                spec,
            )
        )
    return leaves


@dataclasses.dataclass(frozen=True)
class Objective:
    """The resolved loss and metrics for one structure of ``y`` and ``y_pred``."""

    loss_fns: tuple[Callable[..., Any], ...]
    loss_weights: tuple[float, ...]
    output_names: tuple[str, ...]
    # (log key, output leaf index, fn, sample-weighted?): fn is the per-sample
    # function of a mean metric (what the label checks read), else the object
    metric_fns: tuple[tuple[str, int, Callable[..., Any], bool], ...]
    # the built metric object of each entry of metric_fns
    metric_objects: tuple[Any, ...] = ()

    @property
    def log_names(self) -> list[str]:
        """The keys the logs hold, in order (a vector metric's one per entry)."""
        return objective_keys.expand(
            self.total_names(), self.metric_fns, self.metric_objects
        )

    def total_names(self) -> list[str]:
        """The keys of the epoch totals: one state per loss and per metric."""
        names = ["loss"]
        if len(self.output_names) > 1:
            names += [f"{name}_loss" for name in self.output_names]
        return names + [key for key, _, _, _ in self.metric_fns]

    def empty_totals(self) -> Logs:
        """Zeroed totals: a ``MeanState`` per loss, each metric's ``empty()``."""
        totals: Logs = {name: metrics.empty() for name in self.total_names()}
        for (key, _, _, _), metric in zip(self.metric_fns, self.metric_objects):
            totals[key] = metric.empty()
        return totals

    def per_sample(self, y: Any, y_pred: Any) -> list[jax.Array]:
        """Each output's per-sample loss, shape ``(batch,)``."""
        y_leaves = jax.tree_util.tree_leaves(y)
        pred_leaves = jax.tree_util.tree_leaves(y_pred)
        return [fn(t, p) for fn, t, p in zip(self.loss_fns, y_leaves, pred_leaves)]

    def loss_sum(self, parts: list[jax.Array], weights: tuple[jax.Array, ...]):
        """``sum over outputs of loss_weight * sum(w * loss)`` (weights are masked)."""
        return sum(
            lw * jnp.sum(part * w)
            for lw, part, w in zip(self.loss_weights, parts, weights)
        )

    def batch_logs(self, y, y_pred, parts, weights, mask) -> Logs:
        """This batch's loss and metric states (``MeanState`` sums for the losses,
        each metric object's state for the metrics).

        ``weights`` holds one masked sample-weight vector per output.
        """
        count = jnp.sum(mask)
        logs = {"loss": metrics.MeanState(self.loss_sum(parts, weights), count)}
        if len(parts) > 1:
            for name, part, w in zip(self.output_names, parts, weights):
                logs[f"{name}_loss"] = metrics.MeanState(jnp.sum(part * w), count)
        y_leaves = jax.tree_util.tree_leaves(y)
        pred_leaves = jax.tree_util.tree_leaves(y_pred)
        for (key, leaf, _, weighted), metric in zip(
            self.metric_fns, self.metric_objects
        ):
            logs[key] = metric.update(
                metric.empty(),
                y_leaves[leaf],
                pred_leaves[leaf],
                weights[leaf] if weighted else mask,
            )
        return logs


def make_objective(
    loss: Any,
    loss_weights: Any,
    metric_spec: Any,
    y: Any,
    y_pred: Any,
    weighted_metric_spec: Any = None,
) -> Objective:
    """Resolves loss names, loss weights and metrics against ``y``'s structure.

    As Keras, ``metrics`` are plain means over the real samples (sample and class
    weights do not apply) and ``weighted_metrics`` are sample-weighted means.
    A metric object (``AUC()``...) accumulates its own state the same way. Log
    keys that would collide (an output named ``val``, whose ``val_loss`` is the
    validation loss's key) are refused, naming the output.

    ``y`` and ``y_pred`` may be arrays or shape structs; only shapes are read.
    """
    y_def: Any = jax.tree_util.tree_structure(y)  # Any: PyTreeDef has no stubs
    pred_def: Any = jax.tree_util.tree_structure(y_pred)
    if y_def != pred_def:
        raise ValueError(
            errors.expected(
                "apply_fn",
                f"model outputs structured like y ({y_def})",
                errors.Description(f"outputs structured as {pred_def}"),
            )
        )
    names = output_names(y)
    loss_fns = tuple(
        losses.get(spec, argname="loss") for spec in _per_output(loss, y, "loss")
    )
    if loss_weights is None:
        weights = (1.0,) * len(names)
    else:
        weights = tuple(float(w) for w in _per_output(loss_weights, y, "loss_weights"))
    entries = objective_keys.metric_entries(
        names,
        y,
        y_pred,
        metric_spec,
        weighted_metric_spec,
        objective_keys.loss_keys(names),
    )
    objective = Objective(
        loss_fns,
        weights,
        tuple(names),
        tuple(entry[:4] for entry in entries),
        tuple(entry[4] for entry in entries),
    )
    objective_keys.check_keys(objective.log_names, objective.output_names)
    return objective


def _resolve(policy: str | precision.Policy | None) -> precision.Policy:
    return precision.policy("float32" if policy is None else policy)


def _updated(
    optimizer: optax.GradientTransformation,
    state: TrainState,
    grads: Any,
    model_state: Any,
    rng: Any,
    count: Any = None,
) -> TrainState:
    """``state`` after one optimizer step with ``grads`` (``count``: the batch's
    real samples, passed to an accumulating optimizer's update)."""
    extra = {} if count is None else {"count": count}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    return state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        model_state=model_state,
        rng=rng,
    )


def _unless_non_finite(
    pol: precision.Policy,
    state: TrainState,
    new_state: TrainState,
    grads: Any,
    rng: Any,
) -> TrainState:
    """``new_state`` if every gradient is finite, else ``state`` with only the
    rng advanced; the loss scale adjusted either way (loss-scaling policies)."""
    finite = precision.all_finite(grads)
    skipped = state.replace(rng=rng)
    return jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), new_state, skipped
    ).replace(loss_scale=precision.update_loss_scale(pol, state.loss_scale, finite))


def make_train_step(
    apply,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    policy: str | precision.Policy | None = None,
    counts: bool = False,
):
    """Returns ``train_step(state, batch) -> (state, logs)``; all-masked is a no-op.

    Args:
      apply: the normalized ``apply(params, model_state, x, *, train, rng,
        mask=None)``.
      objective: the resolved loss and metrics.
      optimizer: the optax optimizer.
      policy: a precision name or ``precision.Policy``; ``None`` and
        ``"float32"`` trace exactly the plain float32 step. Under a loss-scaling
        policy ``state.loss_scale`` must hold a ``precision.LossScaleState``, and
        a step with non-finite gradients is skipped (see ``precision``).
        Defaults to `None`.
      counts: pass each batch's real-sample count to ``optimizer.update`` as
        ``count=`` (``core.accumulate``). Defaults to `False`.
    """
    pol = _resolve(policy)
    compute_apply = precision.make_compute_apply(pol, apply)
    scaling = pol.loss_scaling

    def train_step(state: TrainState, batch: dict[str, Any]):
        mask = batch["mask"]
        weights = tuple(w * mask for w in batch["sample_weight"])
        rng, step_rng = jax.random.split(state.rng)
        if scaling:
            precision.check_loss_scale(pol, state.loss_scale)

        def loss_fn(params):
            y_pred, model_state = compute_apply(
                params,
                state.model_state,
                batch["x"],
                train=True,
                rng=step_rng,
                mask=mask,
            )
            parts = objective.per_sample(batch["y"], y_pred)
            loss = objective.loss_sum(parts, weights) / jnp.maximum(jnp.sum(mask), 1.0)
            if scaling:
                loss = precision.scale_loss(state.loss_scale, loss)
            return loss, (y_pred, model_state, parts)

        grads, (y_pred, model_state, parts) = jax.grad(loss_fn, has_aux=True)(
            state.params
        )
        if scaling:
            grads = precision.unscale(state.loss_scale, grads)
        count = jnp.sum(mask) if counts else None
        new_state = _updated(optimizer, state, grads, model_state, rng, count)
        if scaling:  # Keras' LossScaleOptimizer: skip the update, adjust the scale
            new_state = _unless_non_finite(pol, state, new_state, grads, rng)
        real = jnp.sum(mask) > 0
        new_state = jax.tree.map(
            lambda new, old: jnp.where(real, new, old), new_state, state
        )
        return new_state, objective.batch_logs(batch["y"], y_pred, parts, weights, mask)

    return train_step


def make_block(step: Callable[..., Any]):
    """Fuses ``step`` over a block of batches: one program for any number of them.

    Returns ``block(state, totals, block_batch) -> (state, totals, batch_logs)``
    where ``totals`` is the running epoch sum (merged on device) and
    ``batch_logs`` holds each batch's own sums, stacked along the block axis.
    A block is a buffer of slots: its real batches come first and the rest are
    all padding (mask 0). A ``lax.fori_loop`` runs only the real ones (a trip
    count read from the mask, so blocks of any length up to the buffer's share
    one compiled program); the empty slots' logs are zeros. A buffer of one
    slot runs the step with no loop at all (XLA:CPU runs convolutions inside a
    while loop, even a one-trip one, an order of magnitude slower than outside
    one). On CPU the loop costs what ``lax.scan`` over the same slots does
    (measured: 8.3 us a step either way for the tiny benchmark model).
    """

    def run(state, totals, batch):
        state, logs = step(state, batch)
        totals = _merge(totals, logs)
        return state, totals, logs

    def block(state, totals, batches):
        slots = jax.tree.leaves(batches)[0].shape[0]
        if slots == 1:  # one step: no loop
            state, totals, logs = run(
                state, totals, jax.tree.map(lambda a: a[0], batches)
            )
            return state, totals, jax.tree.map(lambda a: a[None], logs)
        real = jnp.sum(jnp.any(batches["mask"] > 0, axis=1)).astype(jnp.int32)
        # a batch's logs are shaped like the totals they merge into: no extra trace
        logs = jax.tree.map(lambda t: jnp.zeros((slots, *t.shape), t.dtype), totals)

        def one(i, carry):
            state, totals, logs = carry
            batch = jax.tree.map(
                lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), batches
            )
            state, totals, out = run(state, totals, batch)
            logs = jax.tree.map(lambda buf, v: buf.at[i].set(v), logs, out)
            return state, totals, logs

        return jax.lax.fori_loop(0, real, one, (state, totals, logs))

    return block


def _merge(totals: Logs, logs: Logs) -> Logs:
    """Every state is sums: the merge of two is their leafwise sum (``MeanState``
    and metric objects' states alike)."""
    return jax.tree.map(jnp.add, totals, logs)
