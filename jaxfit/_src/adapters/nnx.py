"""``from_nnx``: a Flax NNX module as a ``jaxfit.Model``.

The module is split once into its graph definition (static structure), its
``nnx.Param`` variables (trained), its RNG streams and every other variable
(``nnx.BatchStat``...: the model state). Params and state are plain nested dicts
of arrays (``nnx.to_pure_dict``), which optax, orbax and ``nnx.update`` accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxfit._src.adapters import common
from jaxfit._src.core.model import Model


def _fresh_rng_state(template: Any, rng: Any) -> Any:
    """The module's RNG streams reseeded from ``rng``: one key per stream, count 0.

    ``template`` is the pure dict of the streams' ``key`` and ``count`` variables
    (as shape structs); each key gets ``fold_in(rng, i)`` (split to the key's shape
    for streams built for vmapped modules), so the streams differ from each other
    and from step to step.
    """
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    leaves, treedef = jax.tree.flatten(template)
    fresh = []
    for index, leaf in enumerate(leaves):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            key = jax.random.fold_in(rng, index)
            fresh.append(jax.random.split(key, leaf.shape) if leaf.shape else key)
        else:  # the stream's counter
            fresh.append(jnp.zeros(leaf.shape, leaf.dtype))
    return jax.tree.unflatten(treedef, fresh)


def from_nnx(
    module: Any,
    *,
    train_arg: str | None = "auto",
    eval_arg: str | None = None,
    init: Callable[[jax.Array], Any] | None = None,
) -> Model:
    """Wraps a Flax NNX module as a ``jaxfit.Model`` that ``Trainer`` accepts.

    ``params`` are the module's ``nnx.Param`` variables and ``state`` every other
    variable except its RNG streams (``nnx.BatchStat``... ; ``{}`` when there are
    none), both as nested dicts of arrays. The apply merges them back into a
    fresh copy of the module (yours is never mutated), switches it to training
    mode with ``module.train()`` or to evaluation mode with ``module.eval()``
    (which set ``deterministic`` and ``use_running_average`` on every
    ``nnx.Dropout``, ``nnx.BatchNorm`` and any submodule with those attributes),
    and calls ``module(x)``. In training it returns the updated state, in
    evaluation and prediction the state unchanged. A module of your own whose
    ``__call__`` takes a flag also gets it, found by name as in
    ``jaxfit.from_flax`` (``train``, ``training``, ``is_training`` receive
    ``train``; ``deterministic``, ``use_running_average`` receive ``not
    train``), or named with ``train_arg`` / ``eval_arg``; several such
    parameters are refused. A flag kept as an attribute of your own name
    (``self.is_training``) is not switched: ``module.train()`` sets only
    ``deterministic`` and ``use_running_average``.

    Randomness comes from the trainer, not from the ``nnx.Rngs`` the module was
    built with: every step reseeds all the module's RNG streams from the step's
    fresh key, so the trainer's ``seed`` controls dropout, and the apply stays
    pure (the streams are not part of the trained or saved state).

    A trained model is used by hand with ``nnx.update(module, trainer.params,
    trainer.state.model_state)`` then ``module.eval(); module(x)``.

    Args:
      module: a constructed ``flax.nnx.Module`` called as ``module(x)``, ``x``
        any pytree as ``fit`` passes it.
      train_arg: the ``__call__`` keyword that receives ``train``, ``"auto"``
        to find it by name (a Flax module's own gets none), or ``None`` for
        none. Defaults to `"auto"`.
      eval_arg: the ``__call__`` keyword that receives ``not train``, in place
        of ``train_arg``. Defaults to `None`.
      init: ``init(key) -> module``, building the module afresh from a key
        (``lambda key: MyModule(rngs=nnx.Rngs(key))``), for a population to
        start each member from its seed (``Model.reinit``); ``None``: every
        member starts from ``module``'s variables. Defaults to `None`.

    Returns:
      A ``jaxfit.Model(apply_fn, params, state, init)`` whose ``apply_fn`` is
      ``apply(params, x, *, train, rng, state) -> (y_pred, new_state)``.

    Raises:
      ImportError: if flax is not installed (``pip install flax``, in
        jaxfit-trainer's ``flax`` extra).
      TypeError: if ``module`` is not an NNX module (a Linen module goes to
        ``jaxfit.from_flax``).
      ValueError: a flag ``__call__`` does not take, or several flags found.

    Example:
      >>> from flax import nnx
      >>> import numpy as np, optax, jaxfit
      >>> model = jaxfit.from_nnx(nnx.Linear(3, 1, rngs=nnx.Rngs(0)))
      >>> sorted(model.params), model.state
      (['bias', 'kernel'], {})
      >>> x = np.ones((8, 3), np.float32); y = np.zeros((8, 1), np.float32)
      >>> trainer = jaxfit.Trainer(model, optimizer=optax.sgd(0.1), loss="mse")
      >>> trainer.fit(x, y, epochs=2, batch_size=4, verbose=0).epoch
      [0, 1]
    """
    nnx = common.need("flax.nnx", "from_nnx", "flax")
    common.expect_module(
        module,
        nnx.Module,
        "a flax.nnx.Module, constructed with its nnx.Rngs",
        "For a flax.linen.Module use jaxfit.from_flax(module, sample_x).",
    )
    flag = common.user_mode_flag(module, "flax", train_arg, eval_arg)
    common.expect_init(init, "init(key) -> an nnx.Module like module")
    graphdef, params, rng_state, state = nnx.split(module, nnx.Param, nnx.RngState, ...)
    params = nnx.to_pure_dict(params)
    state = nnx.to_pure_dict(state)

    def make(key: jax.Array) -> tuple[Any, Any]:
        assert init is not None
        made = init(key)
        common.expect_module(made, nnx.Module, "init(key) to return an nnx.Module")
        _, made_params, _, made_state = nnx.split(made, nnx.Param, nnx.RngState, ...)
        return nnx.to_pure_dict(made_params), nnx.to_pure_dict(made_state)

    rng_template = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nnx.to_pure_dict(rng_state)
    )

    def apply(params, x, *, train: bool, rng: Any, state: Any):
        copy = nnx.merge(graphdef, params, _fresh_rng_state(rng_template, rng), state)
        if train:
            copy.train()
        else:
            copy.eval()
        y_pred = copy(x, **common.flag_kwargs(flag, train))
        if not train:  # evaluation never moves the statistics
            return y_pred, state
        _, _, _, new_state = nnx.split(copy, nnx.Param, nnx.RngState, ...)
        return y_pred, nnx.to_pure_dict(new_state)

    return Model(apply, params, state, init=None if init is None else make)
