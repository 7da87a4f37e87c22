"""``from_flax``: a Flax Linen module as a ``jaxfit.Model``.

The module's variables are initialised once on a sample input. The ``"params"``
collection is what the optimizer trains; every other collection
(``"batch_stats"``...) is the model state, updated in training steps and left
unchanged in evaluation and prediction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxfit._src import errors
from jaxfit._src.adapters import common
from jaxfit._src.core.model import Model


def _mode_flag(module: Any, train_arg: Any, eval_arg: Any) -> tuple[str, bool] | None:
    """The module's train/eval flag (``common.mode_flag``); a module that takes
    none in ``__call__`` but has a field of a flag's name is refused: its mode is
    fixed when it is built, and jaxfit could not switch it."""
    flag = common.mode_flag(module, train_arg, eval_arg)
    if flag is not None or train_arg is None:
        return flag
    fields = getattr(type(module), "__dataclass_fields__", {})
    fixed = [name for name in common.FLAG_NAMES if name in fields]
    if fixed:
        raise ValueError(
            errors.expected(
                "module",
                "a train/eval flag jaxfit can set: a __call__ parameter",
                errors.Description(
                    f"{type(module).__name__} with the field {fixed[0]!r} "
                    "(fixed when the module is built)"
                ),
                f"Take {fixed[0]!r} as a __call__ argument instead, or pass "
                "train_arg=None to run the module as built in training and "
                "evaluation alike.",
            )
        )
    return None


def from_flax(
    module: Any,
    sample_x: Any,
    *,
    seed: int = 0,
    train_arg: str | None = "auto",
    eval_arg: str | None = None,
) -> Model:
    """Wraps a Flax Linen module as a ``jaxfit.Model`` that ``Trainer`` accepts.

    The train/eval flag is a keyword argument of the module's ``__call__``.
    With ``train_arg="auto"`` jaxfit finds it by name: a parameter named
    ``train``, ``training`` or ``is_training`` receives ``train``; one named
    ``deterministic`` or ``use_running_average`` receives ``not train``. A
    ``__call__`` with several of those is refused (say which with ``train_arg``
    or ``eval_arg``); so is a module with none of them in ``__call__`` but a
    field of such a name (``deterministic: bool = True``), whose mode is fixed
    when it is built. A module with no flag at all (``nn.Dense``) is called the
    same way in training and evaluation: it has nothing to switch. Any other
    name is given with ``train_arg`` (receives ``train``) or ``eval_arg``
    (receives ``not train``). In training, dropout draws from the
    ``"dropout"`` rng stream, fed with the trainer's fresh per-step key (so the
    trainer's ``seed`` controls it), and the state collections are applied as
    ``mutable`` and returned updated. In evaluation and prediction the state is
    returned unchanged. A ``__call__`` that declares ``mask`` receives jaxfit's
    row mask (1 for real rows, 0 for padding): pass it on to
    ``nn.BatchNorm(...)(h, mask=mask[:, None])`` so the batch statistics ignore
    padding rows, whatever the number of devices.

    The returned ``apply_fn`` is ``apply(params, x, *, train, rng, state) ->
    (y_pred, new_state)`` where ``params`` is the ``"params"`` collection and
    ``state`` a dict of the other collections (``{}`` when there are none). A
    trained model is used by hand as ``module.apply({"params": trainer.params,
    **trainer.state.model_state}, x, train=False)``.

    Args:
      module: a ``flax.linen.Module`` taking ``x`` (any pytree, as ``fit``
        passes it) as its one positional argument.
      sample_x: a sample batch with the shapes and dtypes of ``x`` (two rows are
        enough); only used to initialise the variables.
      seed: seeds the ``"params"`` and ``"dropout"`` rngs of ``module.init``.
        Defaults to `0`.
      train_arg: the ``__call__`` keyword that receives ``train`` (``True`` in
        training steps), ``"auto"`` to find the flag by its name as above, or
        ``None`` to pass no flag. Defaults to `"auto"`.
      eval_arg: the ``__call__`` keyword that receives ``not train`` (say
        ``"deterministic"`` or your own ``"inference"``), in place of
        ``train_arg``. Defaults to `None`.

    Returns:
      A ``jaxfit.Model(apply_fn, params, state, init)``: ``init(key)`` runs
      ``module.init`` again with ``jax.random.split(key)`` as the ``"params"``
      and ``"dropout"`` rngs (the variables above are ``init(PRNGKey(seed))``);
      a population re-initialises its members with it.

    Raises:
      ImportError: if flax is not installed (``pip install flax``, in
        jaxfit-trainer's ``flax`` extra).
      TypeError: if ``module`` is not a Linen module (an NNX module goes to
        ``jaxfit.from_nnx``), or ``train_arg`` / ``eval_arg`` is not a name.
      ValueError: a flag ``__call__`` does not take, both ``train_arg`` and
        ``eval_arg``, several flags found, or a flag that is a module field.

    Example:
      >>> import flax.linen as nn, numpy as np, optax, jaxfit
      >>> x = np.ones((8, 3), np.float32); y = np.zeros((8, 1), np.float32)
      >>> model = jaxfit.from_flax(nn.Dense(1), x[:2])
      >>> sorted(model.params), model.state
      (['bias', 'kernel'], {})
      >>> trainer = jaxfit.Trainer(model, optimizer=optax.sgd(0.1), loss="mse")
      >>> trainer.fit(x, y, epochs=2, batch_size=4, verbose=0).epoch
      [0, 1]
    """
    linen = common.need("flax.linen", "from_flax", "flax")
    common.expect_module(
        module,
        linen.Module,
        "a flax.linen.Module",
        "For a flax.nnx.Module use jaxfit.from_nnx(module).",
    )
    errors.seed("seed", seed)
    call = _CallArgs(module, _mode_flag(module, train_arg, eval_arg))
    # one compiled init rather than an eager dispatch (and compile) per op
    init = jax.jit(lambda rngs, x: module.init(rngs, x, **call(x, False, None)))

    def make(key: jax.Array) -> tuple[Any, Any]:
        params_rng, dropout_rng = jax.random.split(key)
        variables = init({"params": params_rng, "dropout": dropout_rng}, sample_x)
        if "params" not in variables:
            raise ValueError(
                errors.expected(
                    "module",
                    "a module with parameters (a 'params' collection after init)",
                    module,
                )
            )
        others = {name: value for name, value in variables.items() if name != "params"}
        return variables["params"], others

    params, state = make(jax.random.PRNGKey(int(seed)))
    collections = sorted(state)

    def apply(params, x, *, train: bool, rng: Any, state: Any, mask: Any = None):
        out = module.apply(
            {"params": params, **state},
            x,
            rngs={"dropout": rng},
            mutable=collections if collections else False,
            **call(x, train, mask),
        )
        if not collections:
            return out, state
        y_pred, updated = out
        if not train:  # evaluation never moves the statistics
            return y_pred, state
        return y_pred, {name: updated.get(name, state[name]) for name in collections}

    return Model(apply, params, state, init=make)


class _CallArgs:
    """The keyword arguments a module's ``__call__`` gets: its train/eval flag (by
    its name) and jaxfit's row mask, when it declares them."""

    def __init__(self, module: Any, flag: tuple[str, bool] | None):
        self.flag = flag
        # jaxfit's (batch,) row mask goes to a user module that declares `mask`;
        # Flax's own layers (nn.BatchNorm(mask=...)) mean another shape by it
        self.takes_mask = "mask" in common.call_parameters(module) and not type(
            module
        ).__module__.startswith("flax.")

    def __call__(self, x: Any, train: bool, mask: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.flag is not None:
            name, receives_train = self.flag
            kwargs[name] = train if receives_train else not train
        if self.takes_mask:
            if mask is None:  # every row is real
                mask = jnp.ones(jax.tree.leaves(x)[0].shape[:1], jnp.float32)
            kwargs["mask"] = mask
        return kwargs
