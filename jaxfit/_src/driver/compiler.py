"""Compilation: from the user's functions and the data's shapes to jitted blocks.

``Compiler.prepare`` traces the model and the loss abstractly once per *key* (no
XLA compile: ``jax.jit`` compiles on the first call), checks the labels against
the losses and metrics, and builds the jitted train and eval blocks with their
shardings and donation. The key covers everything the compiled steps depend on:
the spec (apply, policy, optimizer, loss, metrics, loss weights: a new spec for
every ``Trainer.compile``), the structure, feature shapes and dtypes of x and y,
the state's structure and shardings, and ``accumulate_steps``. A second call with
the same key returns the same ``Compiled`` and compiles nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxfit._src import errors
from jaxfit._src.core import accumulate, hyperparams, inference_steps
from jaxfit._src.core import precision as precision_lib
from jaxfit._src.core import step as step_lib
from jaxfit._src.core.inference_steps import make_eval_step
from jaxfit._src.core.placement import Placement
from jaxfit._src.core.state import TrainState, strong
from jaxfit._src.data import checks


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The jitted blocks for one key, and what the loop and checks read of them."""

    log_names: list[str]
    # One program each for any number of batches up to the block's slots (the
    # trip count is read from the mask: see core.step.make_block).
    train_block: Any  # (state, totals, block) -> (state, totals, batch_logs)
    eval_block: Any  # (state, totals, block) -> (rng, totals, batch_logs)
    empty_totals: Any  # () -> zeroed totals, made on device (no transfer)
    state_shardings: Any = None  # of the state these blocks take (and return)
    accumulate_steps: int = 1  # > 1: the optimizer is core.accumulate's
    fuse: bool = True  # whether several steps may share one compiled call
    objective: Any = None  # the resolved losses and metrics (label checks read it)
    y_pred: Any = None  # the model output's shapes, as traced
    # > 0: a population's blocks (the state, totals and logs carry a member
    # axis of this size: see jaxfit._src.population)
    members: int = 0


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a cache key
class Spec:
    """What the compiled steps are built from, besides the data: one per
    ``Trainer`` construction or ``compile`` call."""

    apply: Callable[..., Any]  # the normalized apply (core.apply.normalize)
    policy: precision_lib.Policy
    placement: Placement
    optimizer: optax.GradientTransformation | None
    loss: Any
    metrics: Any = None
    weighted_metrics: Any = None
    loss_weights: Any = None


def optimizer_for(
    spec: Spec, state: TrainState, accumulate_steps: int, batch_size: int
) -> optax.GradientTransformation | None:
    """The optimizer a fit runs on ``state`` (the trainer's): the user's, inside
    ``hyperparams.control`` when its scheduled rate is controlled, inside
    ``accumulate.accumulate`` to accumulate (``None`` for a trainer that only
    evaluates)."""
    optimizer = hyperparams.matching(spec.optimizer, state.opt_state)
    if accumulate_steps == 1 or optimizer is None:
        return optimizer
    return accumulate.accumulate(optimizer, accumulate_steps, batch_size)


def accumulating(
    spec: Spec, state: TrainState, accumulate_steps: int, members: int = 0
) -> TrainState:
    """``state`` with its optimizer state inside empty accumulators for a fit
    with ``accumulate_steps`` > 1 (``members`` > 0: a population's state, each
    member with its own)."""
    if accumulate_steps == 1:
        return state
    make = lambda params: accumulate.around(params, None)  # noqa: E731
    around = strong(jax.vmap(make)(state.params) if members else make(state.params))
    return state.replace(opt_state=around._replace(inner_opt_state=state.opt_state))


def accumulated(state: TrainState) -> TrainState:
    """Back to the plain optimizer state after a fit that accumulated (a group
    left partial when the fit ends is dropped: only when groups ran on across
    epochs, see ``core.accumulate``)."""
    if isinstance(state.opt_state, accumulate.AccumulateState):
        return state.replace(opt_state=state.opt_state.inner_opt_state)
    return state


class Compiler:
    """Builds and caches ``Compiled`` blocks (see the module docstring);
    ``builder`` makes them (a population's builds member-vmapped ones)."""

    def __init__(self, builder: Callable[..., Compiled] | None = None) -> None:
        self._cache: dict[Any, Compiled] = {}
        self._builder = builder or _build

    def clear(self) -> None:
        self._cache.clear()

    def prepare(
        self,
        spec: Spec,
        state: TrainState,
        shardings: Any,
        x: Any,
        y: Any,
        batch_size: int,
        accumulate_steps: int = 1,
        argname: str = "",
    ) -> Compiled:
        """Checks ``y``'s labels, then returns the blocks for this data's shapes.

        The model and the loss are traced at the user's ``batch_size`` (before
        padding to the data axis, so errors quote the user's shapes); errors name
        ``argname`` + ``x`` / ``y`` (``"validation_data."``, ``"dataset batch 0:
        "``). ``x`` and ``y`` are whole arrays or one batch: their labels are
        checked on every call, cached or not.
        """
        x_spec, y_spec = batch_spec(x, batch_size), batch_spec(y, batch_size)
        key = (
            spec,
            jax.tree.structure(x_spec),
            _features(x_spec),
            jax.tree.structure(y_spec),
            _features(y_spec),
            accumulate_steps,
            jax.tree.structure(state),
            tuple(jax.tree.leaves(shardings)),
        )
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._builder(
                spec, state, shardings, x_spec, y_spec, accumulate_steps, argname
            )
            self._cache[key] = compiled
        checks.check_labels(compiled.objective, y, compiled.y_pred, argname + "y")
        return compiled


def _build(
    spec: Spec,
    state: TrainState,
    shardings: Any,
    x_spec: Any,
    y_spec: Any,
    accumulate_steps: int,
    argname: str,
) -> Compiled:
    batch_size = jax.tree.leaves(x_spec)[0].shape[0]
    optimizer = optimizer_for(spec, state, accumulate_steps, batch_size)
    state = jax.eval_shape(lambda s: accumulating(spec, s, accumulate_steps), state)
    if accumulate_steps > 1:
        shardings = spec.placement.state_shardings(state, optimizer)
    forward, y_pred = trace_forward(spec, state, x_spec, argname)
    objective = resolve_objective(spec, y_spec, y_pred, argname)
    train_step = step_lib.make_train_step(
        spec.apply, objective, optimizer, spec.policy, counts=accumulate_steps > 1
    )
    eval_step = make_eval_step(spec.apply, objective, policy=spec.policy)
    # The train step itself is traced once, by jit, on its first call (before any
    # step runs); tracing it here too would double the model's tracing.
    # XLA:CPU runs convolutions inside a loop (lax.scan) an order of magnitude
    # slower than outside one, and conv nets are compute-bound anyway: on CPU
    # they run one step per compiled call (measured: benchmarks/RESULTS.md).
    fuse = fusable(forward)
    # Shardings are part of the compiled step: state as placed, batches split
    # along the data axis, totals and logs replicated.
    rep, data = spec.placement.replicated, spec.placement.batch_sharding(2)

    # Named for compile logs and jax.monitoring: train_block, eval_block...
    train = jax.jit(
        _named(step_lib.make_block(train_step), "train_block"),
        in_shardings=(shardings, rep, data),
        out_shardings=(shardings, rep, rep),
        donate_argnums=(0, 1),
    )
    evaluate = jax.jit(
        _named(_eval_with_key(eval_step), "eval_block"),
        in_shardings=(shardings, rep, data),
        out_shardings=(rep, rep, rep),
        donate_argnums=(1,),
    )
    names = objective.log_names
    empty = jax.jit(
        _named(lambda: objective.empty_totals(), "empty_totals"),
        out_shardings=rep,
    )
    return Compiled(
        names,
        train,
        evaluate,
        empty,
        shardings,
        accumulate_steps,
        fuse,
        objective,
        y_pred,
    )


def _eval_with_key(eval_step: Callable[..., Any]) -> Callable[..., Any]:
    """The eval block on a fresh key per batch, split off ``state.rng``:
    ``(state, totals, block) -> (advanced rng, totals, batch_logs)``."""
    block = step_lib.make_block(inference_steps.keyed(eval_step))

    def run(state: Any, totals: Any, batches: Any) -> tuple[Any, Any, Any]:
        state, totals, logs = block(state, totals, batches)
        return state.rng, totals, logs

    return run


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    return fn


def trace_forward(spec: Spec, state: Any, x_spec: Any, argname: str) -> tuple[Any, Any]:
    """The model's jaxpr and output shapes; a mismatch names ``x``.

    Traced as the eval step calls the model, on the mesh, so that the eval step's
    trace of a batch of this size reuses it (``apply`` is jitted).
    """
    compute_apply = precision_lib.make_compute_apply(spec.policy, spec.apply)
    rep = spec.placement.replicated
    probe = jax.jit(
        lambda s, xb, mask: compute_apply(
            s.params, s.model_state, xb, train=False, rng=s.rng, mask=mask
        )[0]
    )
    on_mesh = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep)  # noqa: E731
    mask = jax.ShapeDtypeStruct(
        jax.tree.leaves(x_spec)[0].shape[:1], jnp.float32, sharding=rep
    )
    try:
        traced = probe.trace(
            jax.tree.map(on_mesh, state), jax.tree.map(on_mesh, x_spec), mask
        )
    except (TypeError, ValueError) as error:  # shapes of x and params disagree
        raise ValueError(
            f"{argname}x: the model cannot be applied to x of {shapes(x_spec)} with "
            f"params of {shapes(state.params)}: {first_line(error)}. Check x's "
            "feature shape against the model (and validation_data against the "
            "training data)."
        ) from None
    return traced.jaxpr, traced.out_info


def resolve_objective(spec: Spec, y_spec: Any, y_pred: Any, argname: str) -> Any:
    """The resolved losses and metrics, the labels' shapes checked against them
    and the per-sample loss shape checked."""
    objective = step_lib.make_objective(
        spec.loss,
        spec.loss_weights,
        spec.metrics,
        y_spec,
        y_pred,
        spec.weighted_metrics,
    )
    # labels first: what the losses need of y reads better than a shape error
    checks.check_labels(objective, y_spec, y_pred, argname + "y")
    try:
        parts = jax.eval_shape(objective.per_sample, y_spec, y_pred)
    except (TypeError, ValueError) as error:  # y and the outputs disagree
        raise ValueError(
            f"{argname}y: the loss cannot compare y of {shapes(y_spec)} with the "
            f"model's output of {shapes(y_pred)}: {first_line(error)}. Give y the "
            "output's shape (or pick the loss that matches your labels)."
        ) from None
    batch_size = jax.tree.leaves(y_spec)[0].shape[0]
    for name, part in zip(objective.output_names, parts):
        if tuple(part.shape) != (batch_size,):
            raise ValueError(
                errors.expected(
                    "loss",
                    f"a per-sample loss of shape ({batch_size},) for output {name!r}",
                    part,
                    "A loss callable must return one value per sample; "
                    "do not reduce over the batch.",
                )
            )
    return objective


_CONV = "conv_general_dilated"


def fusable(forward: Any) -> bool:
    """Whether several steps of a model of this jaxpr may share one compiled
    call (not convolutions on CPU: see ``_build``)."""
    return not (jax.default_backend() == "cpu" and _uses(forward, _CONV))


def named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` named ``name`` (for compile logs and ``jax.monitoring``)."""
    return _named(fn, name)


def _uses(jaxpr: Any, primitive: str) -> bool:
    """Whether ``primitive`` appears in ``jaxpr`` or any jaxpr nested in it."""
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if (hasattr(sub, "eqns") or hasattr(sub, "jaxpr")) and _uses(
                    sub, primitive
                ):
                    return True
    return False


def _features(tree: Any) -> tuple[Any, ...]:
    """Each leaf's shape without the batch axis, and dtype (part of a cache key)."""
    return tuple((leaf.shape[1:], leaf.dtype) for leaf in jax.tree.leaves(tree))


def batch_spec(tree: Any, batch_size: int) -> Any:
    """Shape structs of ``tree``'s leaves with a batch axis of ``batch_size``."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype), tree
    )


def shapes(tree: Any) -> str:
    """``"shape (32, 5) float32"`` for one array, ``"shapes ['a'] (32, 5) float32,
    ['b'] (32,) int32"`` for a pytree: what error messages quote."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(leaves) == 1 and not leaves[0][0]:
        return "shape " + errors.array_spec(leaves[0][1].shape, leaves[0][1].dtype)
    return "shapes " + ", ".join(
        f"{jax.tree_util.keystr(path)} {errors.array_spec(leaf.shape, leaf.dtype)}"
        for path, leaf in leaves
    )


def first_line(error: BaseException) -> str:
    """The cause, for the end of a jaxfit message: its first line, no final dot."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__
