"""Precision policies: storage and compute dtypes, and dynamic loss scaling.

Synopsis::

    pol = precision.policy("mixed_float16")
    params = precision.cast_for_storage(pol, params)      # once, at init
    apply = precision.make_compute_apply(pol, apply)      # inside the step builders
    loss_scale = precision.initial_loss_scale(pol)        # TrainState.loss_scale

The four policies follow Keras 3's ``DTypePolicy`` names:

- ``"float32"``: no casts, no extra state; the step builders take exactly the
  code path they take without a policy.
- ``"mixed_bfloat16"``: float32 master params and optimizer state; the forward
  and backward pass run in bfloat16. Floating leaves of the params and of ``x``
  are cast to bfloat16 for ``apply``; floating leaves of the model's outputs are
  cast back to float32 before the loss and metrics. Gradients are taken with
  respect to the float32 params through the cast, so they come back float32.
- ``"bfloat16"``: Keras semantics, everything in bfloat16: the params and the
  model state are *stored* in bfloat16 (``cast_for_storage``, called once when
  the state is built), so the optimizer state and updates are bfloat16 too.
  As Keras (whose losses compute in float32), outputs are still cast to float32
  before the loss and metrics.
- ``"mixed_float16"``: as ``"mixed_bfloat16"`` with float16 compute, plus
  dynamic loss scaling as Keras' ``LossScaleOptimizer``: the loss is multiplied
  by ``scale`` before differentiation and the gradients divided by it. A step
  whose gradients are not all finite is skipped: params, optimizer state, model
  state and ``TrainState.step`` are unchanged (Keras: the optimizer's
  ``iterations`` do not advance), ``scale`` is halved (never below 1, as
  TensorFlow's dynamic loss scale) and the count of good steps restarts. The rng
  still advances, so the next step draws a fresh dropout key (Keras' seed
  generator also advances in the forward pass). After ``growth_steps``
  consecutive finite steps ``scale`` doubles. The scale starts at ``2**15`` and
  grows every 2000 steps, Keras' defaults.

Model state (batch-norm statistics and the like) is passed to ``apply`` in its
stored dtype, not cast: float32 under the mixed policies, as Keras, whose
batch-norm statistics are not autocast (``autocast=False``). Cast to bfloat16, a
running average with momentum 0.99 rounds away every update below 0.4% of its
value and stalls far from its target (an average of 1.5 stops at 1.0). An
``apply`` that mixes its bfloat16 activations with float32 statistics computes
those operations in float32 (or casts explicitly under strict dtype promotion).
The new state is cast back to the stored dtypes, so its structure never changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxfit._src import errors

Precision = Literal["float32", "bfloat16", "mixed_bfloat16", "mixed_float16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A resolved precision policy; static configuration of the step builders.

    Attributes:
      name: one of ``PRECISIONS``.
      param_dtype: the dtype floating params and model state are stored in.
      compute_dtype: the dtype ``apply`` runs in.
      loss_scaling: whether the train step applies dynamic loss scaling.
      initial_scale: the loss scale a run starts with. Defaults to `2**15`.
      growth_steps: consecutive finite steps after which the scale doubles.
        Defaults to `2000`.
    """

    name: str
    param_dtype: Any
    compute_dtype: Any
    loss_scaling: bool = False
    initial_scale: float = 2.0**15
    growth_steps: int = 2000

    @property
    def casts(self) -> bool:
        """Whether the policy changes anything compared with plain float32."""
        return not (
            self.param_dtype == jnp.float32
            and self.compute_dtype == jnp.float32
            and not self.loss_scaling
        )


_POLICIES = {
    "float32": Policy("float32", jnp.dtype(jnp.float32), jnp.dtype(jnp.float32)),
    "bfloat16": Policy("bfloat16", jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.bfloat16)),
    "mixed_bfloat16": Policy(
        "mixed_bfloat16", jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
    ),
    "mixed_float16": Policy(
        "mixed_float16", jnp.dtype(jnp.float32), jnp.dtype(jnp.float16), True
    ),
}


def policy(name: str | Policy) -> Policy:
    """Resolves a precision name (a ``Policy`` is returned as is).

    Args:
      name: one of ``"float32"``, ``"bfloat16"``, ``"mixed_bfloat16"``,
        ``"mixed_float16"``, or a ``Policy``.

    Returns:
      The ``Policy``.

    Raises:
      ValueError: an unknown name; the message names ``precision``.
    """
    if isinstance(name, Policy):
        return name
    if not isinstance(name, str) or name not in _POLICIES:
        raise ValueError(
            errors.expected(
                "precision",
                f"one of {', '.join(map(repr, PRECISIONS))}",
                name,
                "Use 'mixed_bfloat16' on TPUs and recent GPUs, 'mixed_float16' on "
                "older GPUs.",
            )
        )
    return _POLICIES[name]


class LossScaleState(NamedTuple):
    """Dynamic loss-scale state, carried in ``TrainState.loss_scale``.

    Attributes:
      scale: the current loss scale, a float32 scalar.
      good_steps: consecutive finite steps since the scale last changed, an
        int32 scalar.
    """

    scale: jax.Array
    good_steps: jax.Array


def initial_loss_scale(pol: Policy) -> LossScaleState | None:
    """The loss-scale state a run starts with; ``None`` without loss scaling.

    Args:
      pol: the policy.

    Returns:
      ``LossScaleState(initial_scale, 0)`` for a loss-scaling policy, else
      ``None`` (an empty pytree node: no extra leaves in the ``TrainState``).
    """
    if not pol.loss_scaling:
        return None
    return LossScaleState(
        jnp.asarray(pol.initial_scale, jnp.float32), jnp.zeros((), jnp.int32)
    )


def check_loss_scale(pol: Policy, loss_scale: Any) -> None:
    """Raises unless ``loss_scale`` is a ``LossScaleState`` (checked at trace time).

    Raises:
      TypeError: naming ``state.loss_scale`` and how to build it.
    """
    if not isinstance(loss_scale, LossScaleState):
        raise TypeError(
            errors.expected(
                "state.loss_scale",
                f"a precision.LossScaleState under precision={pol.name!r}",
                loss_scale,
                "Build the state with loss_scale=precision.initial_loss_scale(policy).",
            )
        )


def _is_floating(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Casts the floating leaves of ``tree`` to ``dtype``.

    Integer, boolean and PRNG-key leaves, and leaves without a dtype, are left
    as they are; so are leaves already of ``dtype``.

    Args:
      tree: any pytree.
      dtype: the target floating dtype.

    Returns:
      ``tree`` with its floating leaves of ``dtype``.
    """
    return jax.tree.map(
        lambda a: a.astype(dtype) if _is_floating(a) and a.dtype != dtype else a, tree
    )


def cast_like(tree: Any, reference: Any) -> Any:
    """Casts each floating leaf of ``tree`` to the dtype of ``reference``'s leaf.

    Args:
      tree: a pytree.
      reference: a pytree of the same structure (arrays or shape structs).

    Returns:
      ``tree`` with floating leaves in ``reference``'s dtypes.
    """

    def cast(a: Any, ref: Any) -> Any:
        dtype = getattr(ref, "dtype", None)
        if _is_floating(a) and dtype is not None and a.dtype != dtype:
            return a.astype(dtype)
        return a

    return jax.tree.map(cast, tree, reference)


def cast_for_storage(pol: Policy, tree: Any) -> Any:
    """Casts floating leaves of params (or model state) to the storage dtype.

    Args:
      pol: the policy.
      tree: params or model state.

    Returns:
      ``tree`` itself under ``"float32"`` (no casts at all), else ``tree`` with
      its floating leaves in ``pol.param_dtype``.
    """
    if not pol.casts:
        return tree
    return cast_floating(tree, pol.param_dtype)


def make_compute_apply(pol: Policy, apply: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a normalized ``apply`` to run in the policy's compute dtype.

    Args:
      pol: the policy.
      apply: ``apply(params, model_state, x, *, train, rng, mask=None) ->
        (y_pred, new_model_state)``, as ``apply.normalize`` returns.

    Returns:
      ``apply`` itself when the policy casts nothing; else the same signature,
      with params and ``x`` cast to ``pol.compute_dtype``, the model state
      passed as stored (see the module docstring), the floating outputs cast to
      float32 and the new model state cast back to the stored dtypes.
    """
    if not pol.casts:
        return apply
    dtype = pol.compute_dtype

    def compute_apply(params, model_state, x, *, train, rng, mask=None):
        y_pred, new_state = apply(
            cast_floating(params, dtype),
            model_state,
            cast_floating(x, dtype),
            train=train,
            rng=rng,
            mask=mask,
        )
        return cast_floating(y_pred, jnp.float32), cast_like(new_state, model_state)

    return compute_apply


def scale_loss(loss_scale: LossScaleState, loss: jax.Array) -> jax.Array:
    """``loss * scale`` (differentiate this one)."""
    return loss * loss_scale.scale.astype(loss.dtype)


def unscale(loss_scale: LossScaleState, grads: Any) -> Any:
    """Divides every floating gradient leaf by the loss scale."""
    return jax.tree.map(
        lambda g: g / loss_scale.scale.astype(g.dtype) if _is_floating(g) else g, grads
    )


def all_finite(tree: Any) -> jax.Array:
    """A boolean scalar: whether every floating leaf of ``tree`` is finite."""
    leaves = [a for a in jax.tree.leaves(tree) if _is_floating(a)]
    checks = [jnp.all(jnp.isfinite(a)) for a in leaves]
    if not checks:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(checks))


def update_loss_scale(
    pol: Policy, loss_scale: LossScaleState, finite: jax.Array
) -> LossScaleState:
    """The next loss-scale state after a step (Keras' ``LossScaleOptimizer``).

    Args:
      pol: the policy (its ``growth_steps``).
      loss_scale: the state before the step.
      finite: whether the step's gradients were all finite.

    Returns:
      Non-finite: the scale halved (not below 1) and ``good_steps`` 0. Finite:
      ``good_steps + 1``, or, when that reaches ``growth_steps``, the scale
      doubled and ``good_steps`` 0.
    """
    good = loss_scale.good_steps + 1
    grow = good >= pol.growth_steps
    finite_scale = jnp.where(grow, loss_scale.scale * 2.0, loss_scale.scale)
    finite_good = jnp.where(grow, jnp.zeros_like(good), good)
    shrunk = jnp.maximum(loss_scale.scale * 0.5, 1.0)
    return LossScaleState(
        scale=jnp.where(finite, finite_scale, shrunk).astype(jnp.float32),
        good_steps=jnp.where(finite, finite_good, jnp.zeros_like(good)),
    )
