"""Argument checks for the training calls, all run before anything compiles."""

from __future__ import annotations

import numbers
from typing import Any

from jaxfit._src import errors


def positive_int(argname: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(errors.expected(argname, "a positive integer", value))


def non_negative_int(argname: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(errors.expected(argname, "an integer >= 0", value))


def validation_split(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            errors.expected("validation_split", "a float in [0, 1)", value)
        )


def validation_data(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise ValueError(
            errors.expected(
                "validation_data", "a tuple (x, y) or (x, y, sample_weight)", value
            )
        )


def validation_freq(value: Any) -> None:
    if isinstance(value, (list, tuple, set)):
        for item in value:
            positive_int("validation_freq", item)
        return
    positive_int("validation_freq", value)


def verbose(value: Any) -> None:
    if value not in ("auto", 0, 1, 2) or isinstance(value, bool):
        raise ValueError(errors.expected("verbose", "one of 'auto', 0, 1, 2", value))


def class_weight(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, numbers.Integral) and k >= 0 and isinstance(v, numbers.Real)
        for k, v in value.items()
    ):
        raise ValueError(
            errors.expected(
                "class_weight", "a dict mapping class indices (int >= 0) to weights",
                value,
            )
        )


def epochs(epochs_value: Any, initial_epoch: Any) -> None:
    non_negative_int("epochs", epochs_value)
    non_negative_int("initial_epoch", initial_epoch)
