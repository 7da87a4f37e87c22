"""Normalises a user's ``apply`` function to one pure calling convention.

The user's function may declare keyword-only ``train``, ``rng``, ``state`` and
``mask`` parameters; jaxfit passes exactly those it declares. ``mask`` is a float32
vector over the batch, 1 for real rows and 0 for the padding rows jaxfit adds (to a
ragged last batch, and to a multiple of the devices): a model whose computation
looks across the batch (batch statistics) excludes them with it, so its results do
not depend on the padding, or on the number of devices. The normalised form is
``apply(params, model_state, x, *, train, rng, mask=None) -> (y_pred,
new_model_state)``; ``mask=None`` means every row is real.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxfit._src import errors

_OPTIONAL = ("train", "rng", "state", "mask")

Normalized = Callable[..., tuple[Any, Any]]


def accepted_keywords(apply_fn: Callable[..., Any]) -> frozenset[str]:
    """The subset of ``train``, ``rng``, ``state``, ``mask`` that ``apply_fn``
    accepts (all of them with ``**kwargs``)."""
    if not callable(apply_fn):
        raise TypeError(
            errors.expected("apply_fn", "a callable apply(params, x, ...)", apply_fn)
        )
    try:
        signature = inspect.signature(apply_fn)
    except (TypeError, ValueError):  # builtins, some C callables
        return frozenset()
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return frozenset(_OPTIONAL)
    return frozenset(name for name in _OPTIONAL if name in parameters)


def normalize(apply_fn: Callable[..., Any]) -> tuple[Normalized, bool]:
    """Returns ``(normalized_apply, has_state)``; inspects the signature once.

    The normalized apply is a ``jax.jit`` of the call (``train`` static): a
    model is traced once per input shape and mode, however many compiled steps
    call it.
    """
    keywords = accepted_keywords(apply_fn)
    has_state = "state" in keywords

    def normalized(params, model_state, x, *, train, rng, mask=None):
        kwargs: dict[str, Any] = {}
        if "train" in keywords:
            kwargs["train"] = train
        if "rng" in keywords:
            kwargs["rng"] = rng
        if "mask" in keywords:
            if mask is None:  # every row is real
                mask = jnp.ones(jax.tree.leaves(x)[0].shape[:1], jnp.float32)
            kwargs["mask"] = mask
        if has_state:
            kwargs["state"] = model_state
            out = apply_fn(params, x, **kwargs)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    errors.expected(
                        "apply_fn",
                        "a (y_pred, new_state) pair from an apply_fn that "
                        "declares `state`",
                        out,
                    )
                )
            return out
        return apply_fn(params, x, **kwargs), model_state

    # jitted (inlined into every compiled step), so that the model is traced
    # once per input shape and ``train`` flag: the shape check, the train step
    # and its partial-block twin, the eval steps all reuse that trace.
    return jax.jit(normalized, static_argnames=("train",)), has_state
