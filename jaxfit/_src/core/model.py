"""Model: a pure apply function with its params and state, as adapters return it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
      init: ``init(key) -> (params, state)``, making the model's variables
        afresh from a key (``from_flax`` sets it; ``from_nnx`` and
        ``from_equinox`` when given their ``init``), or ``None``. A population
        (``Trainer(model, ..., population=N)``) starts member ``i`` from
        ``model.reinit(seed + i)``; without ``init`` every member starts from
        ``params``. A plain ``Trainer`` uses ``params`` as they are. Defaults to
        `None`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> model = jaxfit.Model(lambda params, x: x @ params["w"], {"w": jnp.ones((2, 1))})
      >>> model.state is None
      True
      >>> model = jaxfit.Model(
      ...     lambda params, x: x @ params["w"], {"w": jnp.ones((2, 1))},
      ...     init=lambda key: ({"w": jax.random.normal(key, (2, 1))}, None))
      >>> model.reinit(1).params["w"].shape
      (2, 1)
    """

    apply_fn: Callable[..., Any]
    params: Any
    state: Any = None
    init: Callable[[jax.Array], tuple[Any, Any]] | None = None

    def reinit(self, seed: int) -> Model:
        """This model with its params and state made afresh from ``seed``.

        Args:
          seed: an int; the variables are ``init(init_key(seed))``, the key an
            init function given as ``Trainer``'s ``params`` gets from that seed.

        Returns:
          A new ``Model`` with the same ``apply_fn`` and ``init``.

        Raises:
          ValueError: the model has no ``init``, or ``init`` made variables of
            another structure, shape or dtype than ``params`` and ``state``.
        """
        errors.seed("seed", seed)
        if self.init is None:
            raise ValueError(
                errors.expected(
                    "model",
                    "a jaxfit.Model with an init function to re-initialise from",
                    errors.Description("a Model with init=None"),
                    "from_flax sets one; pass init= to from_nnx / from_equinox.",
                )
            )
        made = self.init(init_key(int(seed)))
        if not isinstance(made, tuple) or len(made) != 2:
            raise ValueError(
                errors.expected("init", "init(key) -> (params, state)", made)
            )
        for name, given, new in (
            ("params", self.params, made[0]),
            ("state", self.state, made[1]),
        ):
            _same_layout(name, given, new)
        return Model(self.apply_fn, made[0], made[1], self.init)


def _layout(tree: Any) -> dict[str, str]:
    """``{path: "float32[2, 1]"}`` for each leaf of ``tree``."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path): f"{jnp.result_type(leaf)}{list(jnp.shape(leaf))}"
        for path, leaf in leaves
    }


def _same_layout(name: str, given: Any, made: Any) -> None:
    """Refuses variables ``init`` made unlike the model's (members are stacked)."""
    want, got = _layout(given), _layout(made)
    if want == got:
        return
    path = next(p for p in [*want, *got] if want.get(p) != got.get(p))
    raise ValueError(
        errors.expected(
            "init",
            f"{name} of the structure, shapes and dtypes of the model's "
            f"({name}{path}: {want.get(path, 'absent')})",
            errors.Description(f"{name}{path}: {got.get(path, 'absent')}"),
        )
    )


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
