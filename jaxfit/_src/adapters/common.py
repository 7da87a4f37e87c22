"""What the three adapters share: importing the optional library with a clear
message, checking the module's class, and reading its ``__call__`` parameters."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from jaxfit._src import errors


def need(module_name: str, caller: str, extra: str) -> Any:
    """Imports ``module_name`` (``"flax.linen"``), or raises an ``ImportError``
    naming ``caller``, the package to install and the extra that has it."""
    package = module_name.split(".")[0]
    try:
        importlib.import_module(package)  # the package itself first: it may be absent
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"jaxfit.{caller} needs {package}, which is not installed: "
            f"pip install {package} (in jaxfit-trainer's {extra} extra)."
        ) from error


def expect_module(module: Any, cls: type, what: str, fix: str = "") -> None:
    """A ``TypeError`` naming ``module`` unless it is a ``cls``."""
    if not isinstance(module, cls):
        raise TypeError(errors.expected("module", what, module, fix))


def expect_init(init: Any, what: str) -> None:
    """A ``TypeError`` naming ``init`` unless it is ``None`` or a callable."""
    if init is not None and not callable(init):
        raise TypeError(errors.expected("init", f"None or {what}", init))


def call_parameters(module: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``module.__call__`` (none when they cannot be read)."""
    try:
        return inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):
        return {}


# A ``__call__`` parameter name -> whether it receives ``train`` (True) or
# ``not train`` (False): the names jaxfit recognises as a train/eval flag.
FLAG_NAMES = {
    "train": True,
    "training": True,
    "is_training": True,
    "deterministic": False,
    "use_running_average": False,
}
AUTO = "auto"


def _takes_keywords(parameters: Mapping[str, inspect.Parameter]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _explicit_flag(
    module: Any, argname: str, name: Any, parameters: Mapping[str, inspect.Parameter]
) -> str:
    """``name`` checked as a keyword ``module.__call__`` takes."""
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(errors.expected(argname, "a parameter name (str)", name))
    parameter = parameters.get(name)
    if parameter is None and not _takes_keywords(parameters):
        raise ValueError(
            errors.expected(
                argname,
                f"a parameter of {type(module).__name__}.__call__ "
                f"(it takes {list(parameters)})",
                name,
            )
        )
    if parameter is not None and parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise ValueError(
            errors.expected(argname, "a parameter that can be passed by keyword", name)
        )
    return name


def mode_flag(
    module: Any, train_arg: Any = AUTO, eval_arg: Any = None
) -> tuple[str, bool] | None:
    """The ``__call__`` keyword that switches ``module`` between training and
    evaluation, as ``(name, receives_train)``; ``None`` passes no flag.

    ``train_arg`` names a keyword that receives ``train``, ``eval_arg`` one that
    receives ``not train``. With ``train_arg="auto"`` (and no ``eval_arg``) the
    one parameter of ``FLAG_NAMES`` that ``__call__`` declares is used.

    Raises:
      ValueError: both arguments given; a name ``__call__`` does not take; or
        several recognised flags in the signature (naming them).
      TypeError: an argument that is not a name.
    """
    parameters = call_parameters(module)
    explicit_train = train_arg not in (AUTO, None)
    if explicit_train and eval_arg is not None:
        raise ValueError(
            errors.expected(
                "eval_arg",
                "None when train_arg names the flag (one flag, one direction)",
                eval_arg,
            )
        )
    if eval_arg is not None:
        return _explicit_flag(module, "eval_arg", eval_arg, parameters), False
    if explicit_train:
        return _explicit_flag(module, "train_arg", train_arg, parameters), True
    if train_arg is None:
        return None
    found = [name for name in FLAG_NAMES if name in parameters]
    if len(found) > 1:
        raise ValueError(
            errors.expected(
                "module",
                f"a __call__ with at most one train/eval flag among {list(FLAG_NAMES)}",
                errors.Description(f"{type(module).__name__}.__call__ taking {found}"),
                f"Say which one jaxfit sets: train_arg={found[0]!r} (receives "
                f"train) or eval_arg={found[0]!r} (receives not train).",
            )
        )
    if not found:
        return None
    return found[0], FLAG_NAMES[found[0]]


def user_mode_flag(
    module: Any, library: str, train_arg: Any, eval_arg: Any
) -> tuple[str, bool] | None:
    """``mode_flag`` for the NNX and Equinox adapters: the library's own modules
    (``library``'s, switched by ``module.train()`` or ``inference_mode``) get no
    flag unless one is named; a user module's ``__call__`` flag is found by name."""
    own = type(module).__module__.startswith(library + ".")
    if own and train_arg == AUTO and eval_arg is None:
        return None
    return mode_flag(module, train_arg, eval_arg)


def flag_kwargs(flag: tuple[str, bool] | None, train: bool) -> dict[str, bool]:
    """The keyword arguments that pass ``train`` to a module's flag."""
    if flag is None:
        return {}
    name, receives_train = flag
    return {name: train if receives_train else not train}
