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
    naming ``caller`` and the extra that installs it."""
    package = module_name.split(".")[0]
    try:
        importlib.import_module(package)  # the package itself first: it may be absent
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"jaxfit.{caller} needs {package}, which is not installed. Install it with "
            f"`pip install 'jaxfit[{extra}]'` (or `pip install {package}`)."
        ) from error


def expect_module(module: Any, cls: type, what: str, fix: str = "") -> None:
    """A ``TypeError`` naming ``module`` unless it is a ``cls``."""
    if not isinstance(module, cls):
        raise TypeError(errors.expected("module", what, module, fix))


def call_parameters(module: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``module.__call__`` (none when they cannot be read)."""
    try:
        return inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):
        return {}
