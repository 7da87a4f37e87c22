"""Error messages: one formatter so every message reads the same way.

Every user-facing error names the argument, what was expected, what was given
(with its type), and, where it helps, how to fix it (Keras' "Expected X.
Received: arg=v" form).
"""

from __future__ import annotations

import numbers
from typing import Any


def describe(value: Any) -> str:
    """A short description of a received value: its repr (clipped) and type."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"an array of shape {tuple(shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def expected(argname: str, what: str, got: Any, fix: str = "") -> str:
    """Formats ``"<argname>: expected <what>, got <got> (<type>). <fix>"``."""
    message = f"{argname}: expected {what}, got {describe(got)}."
    if fix:
        message += f" {fix}"
    return message


def positive_int(argname: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(expected(argname, "a positive integer", value))


def non_negative_int(argname: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(expected(argname, "an integer >= 0", value))
