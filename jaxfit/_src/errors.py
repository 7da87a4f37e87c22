"""Error messages and tracebacks: one formatter, one traceback filter.

Every user-facing error names the argument, what was expected, what was given
(described by ``describe``: its value or shape and its type), and, where it
helps, how to fix it (Keras' "Expected X. Received: arg=v" form), e.g.
``batch_size: expected a positive integer, got 0 (int).``

When such an error, or one raised by the user's own code (a callback, the apply
function, a data generator), leaves a public call, ``filter_traceback`` removes
the frames inside the jaxfit package from its traceback, as Keras'
``filter_traceback`` and JAX's ``api_boundary`` do, so the traceback shows the
user's frames only. Set the environment variable ``JAXFIT_TRACEBACK_FILTERING=off``
to see every frame. Standard library only: every layer imports this module.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import re
import types
from collections.abc import Callable
from typing import Any, TypeVar

_MAX_REPR = 80  # a received value's repr is clipped to this many characters
_MAX_CONTAINER = 200  # a container of arrays is described up to this length
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # "<function f at 0x7f...>"


class Description(str):
    """Text that already describes a received value; ``describe`` keeps it as is.

    Example:
      >>> describe(Description("no batches"))
      'no batches'
    """


def array_spec(shape: Any, dtype: Any) -> str:
    """The short form of an array's shape and dtype, ``"(4, 3) float32"``.

    Args:
      shape: the shape (any sequence of ints).
      dtype: the dtype, or its name.

    Returns:
      The shape as a tuple, a space, the dtype's name.
    """
    return f"{tuple(shape)} {getattr(dtype, 'name', dtype)}"


def describe(value: Any) -> str:
    """Describes a received value for an error message, the one way jaxfit does.

    Arrays by their shape and dtype (a scalar array by its value), containers of
    arrays by their structure with each array's shape and dtype, functions and
    classes by their name, anything else by its repr (clipped); each with its
    type. A ``Description`` is already a description and is returned as is.

    Args:
      value: what the user passed (or what jaxfit found in it).

    Returns:
      E.g. ``"0 (int)"``, ``"'adam' (str)"``, ``"None (NoneType)"``, ``"an array
      of shape (4, 3) and dtype float32"``, ``"2 (int32 scalar)"``, ``"a dict
      {'a': (4, 3) float32, 'b': (4,) int32}"``, ``"my_loss (function)"``.

    Example:
      >>> import numpy as np
      >>> describe(0), describe("adam")
      ('0 (int)', "'adam' (str)")
      >>> describe(np.zeros((4, 3), np.float32))
      'an array of shape (4, 3) and dtype float32'
      >>> describe({"x": np.zeros((4, 3), np.float32), "y": np.zeros(4, np.int32)})
      "a dict {'x': (4, 3) float32, 'y': (4,) int32}"
    """
    if isinstance(value, Description):
        return str(value)
    if _is_array(value):
        scalar = _scalar(value)
        if scalar is not None:
            return f"{scalar!r} ({value.dtype} scalar)"
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (dict, list, tuple)) and _holds_arrays(value):
        text = _structure(value)
        if len(text) > _MAX_CONTAINER:
            text = text[: _MAX_CONTAINER - 3] + "..."
        return f"a {type(value).__name__} {text}"
    if isinstance(
        value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
    ):
        return f"{value.__name__} ({type(value).__name__})"
    return f"{_clipped(repr(value))} ({type(value).__name__})"


def _is_array(value: Any) -> bool:
    return (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, type)
    )


def _scalar(value: Any) -> Any:
    """The Python value of a 0-d concrete array, else None (tracers stay abstract)."""
    if tuple(value.shape) != ():
        return None
    try:
        item = value.item()
    except Exception:  # noqa: BLE001 (abstract: a tracer, a ShapeDtypeStruct)
        return None
    return item if isinstance(item, (numbers.Number, bool)) else None


def _holds_arrays(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(
        _is_array(item)
        or isinstance(item, Description)
        or (isinstance(item, (dict, list, tuple)) and _holds_arrays(item))
        for item in items
    )


def _structure(value: Any) -> str:
    """A container with each array as ``array_spec`` (recursively)."""
    if isinstance(value, Description):
        return str(value)
    if _is_array(value):
        return array_spec(value.shape, value.dtype)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{key!r}: {_structure(item)}" for key, item in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_structure(item) for item in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_structure(item) for item in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return _clipped(repr(value))


def _clipped(text: str) -> str:
    """A repr without memory addresses, clipped to ``_MAX_REPR`` characters."""
    text = _ADDRESS.sub("", text)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def expected(argname: str, what: str, got: Any, fix: str = "") -> str:
    """Formats ``"<argname>: expected <what>, got <describe(got)>. <fix>"``.

    Args:
      argname: the argument (or the path into it, ``"validation_data.y"``).
      what: what would have been accepted, in words.
      got: the received value (described by ``describe``; pass a
        ``Description`` for text that already describes it).
      fix: how to fix it. Defaults to `""`.

    Returns:
      The message.

    Example:
      >>> expected("batch_size", "a positive integer", 0)
      'batch_size: expected a positive integer, got 0 (int).'
    """
    message = f"{argname}: expected {what}, got {describe(got)}."
    if fix:
        message += f" {fix}"
    return message


def positive_int(argname: str, value: Any, *, allow_none: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is an int >= 1 (or ``None`` if allowed).

    Args:
      argname: the argument's name, for the message.
      value: the received value (``bool`` is refused).
      allow_none: whether ``None`` passes. Defaults to `False`.

    Raises:
      ValueError: with the message of ``expected``.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(expected(argname, "a positive integer", value))


def non_negative_int(argname: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is an int >= 0 (``bool`` is refused).

    Raises:
      ValueError: with the message of ``expected``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(expected(argname, "an integer >= 0", value))


MAX_SEED = 2**63 - 1  # the largest seed jax.random.PRNGKey takes


def seed(argname: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is an int in ``[0, 2**63)``, the
    seeds ``jax.random.PRNGKey`` takes (``bool`` is refused).

    Raises:
      ValueError: with the message of ``expected``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= int(value) <= MAX_SEED
    ):
        raise ValueError(expected(argname, "an integer in [0, 2**63)", value))


# -- traceback filtering ------------------------------------------------------------

TRACEBACK_FILTERING = "JAXFIT_TRACEBACK_FILTERING"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# Raised by jaxfit's own checks (arguments, data, checkpoints, re-entrance): the
# user's error. Any other type raised inside jaxfit is likely a jaxfit bug, and
# keeps its whole traceback.
_USER_ERRORS = (ValueError, TypeError, RuntimeError, OSError, ImportError)

_F = TypeVar("_F", bound=Callable[..., Any])


def is_traceback_filtering_enabled() -> bool:
    """Whether jaxfit hides its frames from user errors (the default).

    ``JAXFIT_TRACEBACK_FILTERING=off`` (or ``0``, ``false``, ``no``) turns the
    filtering off, for every call from then on.
    """
    value = os.environ.get(TRACEBACK_FILTERING, "on").strip().lower()
    return value not in ("off", "0", "false", "no")


def _is_internal(frame: types.FrameType) -> bool:
    """Whether a frame runs jaxfit's code: a file inside the package, or code
    generated for a jaxfit module (a dataclass ``__init__``, file ``<string>``)."""
    filename = frame.f_code.co_filename
    if filename.startswith("<"):
        return str(frame.f_globals.get("__name__", "")).startswith("jaxfit.")
    return os.path.abspath(filename).startswith(_PACKAGE)


def filter_traceback(fn: _F) -> _F:
    """Decorates a public call: jaxfit's frames leave the traceback of user errors.

    When ``fn`` raises, the error is re-raised with the frames inside the jaxfit
    package removed from its traceback, keeping every other frame (the user's
    callback, apply function or data generator, and JAX's own filtered frames),
    if the error is the user's: raised by code outside jaxfit, or one of the
    errors jaxfit raises for bad arguments and data (``ValueError``,
    ``TypeError``, ``RuntimeError``, ``OSError``, ``ImportError``). The message
    and the chained causes are unchanged. Other errors raised inside jaxfit
    (likely a bug) keep their whole traceback, as every error does with
    ``JAXFIT_TRACEBACK_FILTERING=off``. ``KeyboardInterrupt`` is never touched.

    The re-raise is a bare ``raise`` after ``with_traceback`` (as
    ``jax._src.traceback_util`` does), so the wrapper adds no frame of its own;
    nested decorated calls filter once more, harmlessly.

    Args:
      fn: a function or method, or an ``async def`` one.

    Returns:
      ``fn`` wrapped (``functools.wraps``: same name, docstring, signature).
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # pytest hides this frame
            try:
                return await fn(*args, **kwargs)
            except Exception as error:
                _filter(error)
                raise

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # pytest hides this frame
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            _filter(error)
            raise

    return wrapper  # type: ignore[return-value]


def _filter(error: BaseException) -> None:
    """Replaces ``error.__traceback__`` by its frames outside jaxfit, when the
    error is the user's and filtering is on."""
    tb = error.__traceback__
    if tb is None or not is_traceback_filtering_enabled():
        return
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    raised_inside = _is_internal(frames[-1].tb_frame)
    if raised_inside and not isinstance(error, _USER_ERRORS):
        return  # not the user's error: all the frames help
    filtered = None
    for entry in reversed(frames):
        if not _is_internal(entry.tb_frame):
            filtered = types.TracebackType(
                filtered, entry.tb_frame, entry.tb_lasti, entry.tb_lineno
            )
    error.with_traceback(filtered)
