"""Model: a pure apply function with its params and state, as adapters return it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from jaxfit._src import errors


@dataclasses.dataclass(frozen=True)
class Model:
    """What ``Trainer`` accepts in place of ``(apply_fn, params)``.

    ``jaxfit.from_flax``, ``jaxfit.from_nnx`` and ``jaxfit.from_equinox`` return
    one; you can also build it yourself. ``Trainer(model, optimizer=..., loss=...)``
    is ``Trainer(model.apply_fn, model.params, state=model.state, ...)``.

    Attributes:
      apply_fn: ``apply(params, x, *, train=..., rng=..., state=...)`` as
        ``Trainer`` documents it (keyword-only arguments optional; with ``state``
        it returns ``(y_pred, new_state)``).
      params: the trainable parameters (any pytree of arrays).
      state: the non-trainable model state (batch-norm statistics...), or
        ``None``. Defaults to `None`.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> model = jaxfit.Model(lambda params, x: x @ params["w"], {"w": jnp.ones((2, 1))})
      >>> model.state is None
      True
    """

    apply_fn: Callable[..., Any]
    params: Any
    state: Any = None


def unpack(apply_fn: Any, params: Any, state: Any) -> tuple[Any, Any, Any]:
    """``(apply_fn, params, state)`` from a ``jaxfit.Model`` or as given."""
    if isinstance(apply_fn, Model):  # from an adapter: (apply, params, state)
        for name, value in (("params", params), ("state", state)):
            if value is not None:
                raise TypeError(
                    errors.expected(
                        name,
                        f"None when apply_fn is a jaxfit.Model (it holds the {name})",
                        value,
                    )
                )
        return apply_fn.apply_fn, apply_fn.params, apply_fn.state
    if params is None:
        raise TypeError(
            errors.expected(
                "params",
                "the model's parameters (a pytree of arrays), or a "
                "jaxfit.Model as the first argument",
                params,
            )
        )
    return apply_fn, params, state


INIT_TAG = 0x696E6974  # "init": the init key's stream, apart from the training rng's


def init_key(seed: int) -> jax.Array:
    """The key an init function given as ``params`` is called with:
    ``jax.random.fold_in(jax.random.PRNGKey(seed), 0x696E6974)``. Folded apart from
    ``PRNGKey(seed)``, the training rng the dropout keys are split from, so no
    init key is also a dropout key."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), INIT_TAG)


def initialized(params: Any, seed: int) -> Any:
    """``params`` as given, or ``params(init_key(seed))`` when it is an init
    function (a callable that is not a pytree holding arrays, such as an Equinox
    module)."""
    if not callable(params) or jax.tree.leaves(params) != [params]:
        return params
    made = params(init_key(seed))
    if made is None or (callable(made) and jax.tree.leaves(made) == [made]):
        raise TypeError(
            errors.expected(
                "params",
                "an init function returning the parameters (a pytree of arrays)",
                made,
            )
        )
    return made
