"""``from_equinox``: an Equinox module as a ``jaxfit.Model``.

The module's floating-point arrays are the params (``eqx.filter(module,
eqx.is_inexact_array)``, a module-shaped pytree with ``None`` elsewhere); the
rest (activation functions, integer arrays, sizes) is closed over. Equinox
modules are usually written for one example, so by default the apply calls the
module per example under ``jax.vmap``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.adapters import common
from jaxfit._src.core.model import Model


def _takes_key(module: Any) -> bool:
    """Whether ``module.__call__`` accepts a ``key`` keyword (for dropout)."""
    parameters = common.call_parameters(module)
    return "key" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def from_equinox(
    module: Any,
    *,
    state: Any = None,
    vmap: bool = True,
    axis_name: Hashable = "batch",
    train_arg: str | None = "auto",
    eval_arg: str | None = None,
    init: Callable[[jax.Array], Any] | None = None,
) -> Model:
    """Wraps an Equinox module as a ``jaxfit.Model`` that ``Trainer`` accepts.

    The module is called as ``module(x, key=k)``, or ``module(x, state, key=k)``
    returning ``(y, state)`` when ``state`` is given (``key`` only if its
    ``__call__`` takes one). With ``vmap=True`` it is called per example under
    ``jax.vmap(..., axis_name=axis_name)``: each example gets its own dropout key
    split from the step's fresh key, and ``eqx.nn.BatchNorm(...,
    axis_name="batch")`` computes its statistics over the batch. Training mode
    is ``eqx.nn.inference_mode(module, value=False)``, evaluation and prediction
    ``value=True`` (for ``eqx.nn.Dropout`` and ``eqx.nn.BatchNorm`` alike). A
    module of your own whose ``__call__`` takes a flag also gets it, found by
    name as in ``jaxfit.from_flax`` (``train``, ``training``, ``is_training``
    receive ``train``; ``deterministic``, ``use_running_average`` receive ``not
    train``), or named with ``train_arg`` / ``eval_arg``; several such
    parameters are refused. In training the updated state is returned, in
    evaluation the state unchanged.

    The apply is ``apply(params, x, *, train, rng, state) -> (y_pred,
    new_state)``; a module without state carries ``{}``. A trained model is used
    by hand as ``eqx.combine(trainer.params, module)`` (the params pytree has the
    module's shape, so ``combine`` takes the static parts from ``module``).

    Args:
      module: an ``equinox.Module``.
      state: the ``eqx.nn.State`` from ``eqx.nn.make_with_state`` for a module
        with state (``eqx.nn.BatchNorm``...), or ``None``. Defaults to `None`.
      vmap: call the module per example under ``jax.vmap`` (most Equinox
        modules are written for one example); ``False`` passes the whole batch
        and the step's key as they are. Defaults to `True`.
      axis_name: the vmapped axis name, which ``eqx.nn.BatchNorm``'s
        ``axis_name`` must match. Defaults to `"batch"`.
      train_arg: the ``__call__`` keyword that receives ``train``, ``"auto"``
        to find it by name (Equinox's own modules get none: ``inference_mode``
        switches them), or ``None`` for none. Defaults to `"auto"`.
      eval_arg: the ``__call__`` keyword that receives ``not train``, in place
        of ``train_arg``. Defaults to `None`.
      init: ``init(key) -> module`` (``-> (module, state)`` with ``state``),
        building the module afresh from a key (``lambda key: eqx.nn.MLP(...,
        key=key)``), for a population to start each member from its seed
        (``Model.reinit``); ``None``: every member starts from ``module``.
        Defaults to `None`.

    Returns:
      A ``jaxfit.Model(apply_fn, params, state, init)``.

    Raises:
      ImportError: if equinox is not installed (``pip install equinox``, in
        jaxfit-trainer's ``equinox`` extra).
      TypeError: if ``module`` is not an ``equinox.Module`` or ``state`` not an
        ``eqx.nn.State``.
      ValueError: a flag ``__call__`` does not take, or several flags found.

    Example:
      >>> import equinox as eqx, jax, numpy as np, optax, jaxfit
      >>> mlp = eqx.nn.MLP(3, 1, width_size=4, depth=1, key=jax.random.PRNGKey(0))
      >>> model = jaxfit.from_equinox(mlp)
      >>> x = np.ones((8, 3), np.float32); y = np.zeros((8, 1), np.float32)
      >>> trainer = jaxfit.Trainer(model, optimizer=optax.sgd(0.1), loss="mse")
      >>> trainer.fit(x, y, epochs=2, batch_size=4, verbose=0).epoch
      [0, 1]
      >>> trained = eqx.combine(trainer.params, mlp)
      >>> jax.vmap(trained)(x).shape
      (8, 1)
    """
    eqx = common.need("equinox", "from_equinox", "equinox")
    common.expect_module(module, eqx.Module, "an equinox.Module")
    if state is not None and not isinstance(state, eqx.nn.State):
        raise TypeError(
            errors.expected(
                "state",
                "an eqx.nn.State or None",
                state,
                "Get both from `module, state = eqx.nn.make_with_state(Cls)(...)`.",
            )
        )
    params, static = eqx.partition(module, eqx.is_inexact_array)
    stateful = state is not None
    remake = _remake(eqx, init, stateful)
    takes_key = _takes_key(module)
    flag = common.user_mode_flag(module, "equinox", train_arg, eval_arg)

    def apply(params, x, *, train: bool, rng: Any, state: Any):
        model = eqx.nn.inference_mode(eqx.combine(params, static), value=not train)

        def call(x, model_state, key):
            kwargs = {"key": key} if takes_key else {}
            kwargs.update(common.flag_kwargs(flag, train))
            if stateful:
                return model(x, model_state, **kwargs)
            return model(x, **kwargs), model_state

        if vmap:
            keys = jax.random.split(rng, jax.tree.leaves(x)[0].shape[0])
            per_example = jax.vmap(
                call, in_axes=(0, None, 0), out_axes=(0, None), axis_name=axis_name
            )
            y_pred, new_state = per_example(x, state, keys)
        else:
            y_pred, new_state = call(x, state, rng)
        return y_pred, (new_state if train else state)

    return Model(apply, params, state if stateful else {}, init=remake)


def _remake(eqx: Any, init: Any, stateful: bool) -> Any:
    """``Model.init`` from the user's ``init(key) -> module`` (``-> (module,
    state)`` with state): ``key -> (params, state)``; ``None`` without one."""
    common.expect_init(
        init, "init(key) -> an equinox.Module" + (" and its state" if stateful else "")
    )
    if init is None:
        return None

    def make(key: jax.Array) -> tuple[Any, Any]:
        made = init(key)
        made_module, made_state = made if stateful else (made, {})
        common.expect_module(
            made_module, eqx.Module, "init(key) to make an equinox.Module"
        )
        return eqx.partition(made_module, eqx.is_inexact_array)[0], made_state

    return make
