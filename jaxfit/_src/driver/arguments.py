"""One argument contract: a training call's arguments as a frozen, validated value.

``Trainer.fit`` and ``Trainer.fit_dataset`` (and their async twins) bind their
keyword arguments into ``FitArgs`` / ``StreamFitArgs``, which check every value
once, at construction, before anything is read or compiled. The YAML runner's
``fit`` section is derived from these fields (names, types, defaults), so there
is no second list of names or allowed values anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

from jaxfit._src.driver import validate, yield_policy

YieldEvery = Literal["auto", "batch", "epoch", "never"] | float
Verbose = Literal["auto", 0, 1, 2]


@dataclasses.dataclass(frozen=True)
class FitArgs:
    """``Trainer.fit``'s arguments beyond ``x`` and ``y`` (see ``Trainer.fit``)."""

    batch_size: int = 32
    epochs: int = 1
    verbose: Verbose = "auto"
    callbacks: Any = None
    validation_split: float = 0.0
    validation_data: Any = None
    shuffle: bool = True
    class_weight: dict[int, float] | None = None
    sample_weight: Any = None
    initial_epoch: int = 0
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    validation_batch_size: int | None = None
    validation_freq: int | list[int] = 1
    yield_every: YieldEvery = "auto"
    accumulate_steps: int = 1
    now: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        validate.positive_int("batch_size", self.batch_size)
        _common(self)
        validate.validation_split(self.validation_split)
        validate.validation_data(self.validation_data)
        for name in ("validation_steps", "validation_batch_size"):
            validate.positive_int(name, getattr(self, name), allow_none=True)
        validate.validation_freq(self.validation_freq)
        validate.positive_int("accumulate_steps", self.accumulate_steps)
        if self.validation_data is None and self.validation_split == 0:
            validate.unused_without_validation(
                self,
                "validation_steps",
                "validation_batch_size",
                "validation_freq",
                needs="validation_data or validation_split",
            )


@dataclasses.dataclass(frozen=True)
class StreamFitArgs:
    """``Trainer.fit_dataset``'s arguments beyond the dataset (see there)."""

    epochs: int = 1
    verbose: Verbose = "auto"
    callbacks: Any = None
    validation_data: Any = None
    validation_batches: int | None = None
    class_weight: dict[int, float] | None = None
    initial_epoch: int = 0
    steps_per_epoch: int | None = None
    yield_every: YieldEvery = "auto"
    producer_timeout: float | None = None
    now: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        _common(self)
        validate.positive_int(
            "validation_batches", self.validation_batches, allow_none=True
        )
        validate.producer_timeout(self.producer_timeout)
        if self.validation_data is None:
            validate.unused_without_validation(
                self,
                "validation_batches",
                needs="validation_data",
            )


def _common(args: FitArgs | StreamFitArgs) -> None:
    """The checks both calls share."""
    validate.epochs(args.epochs, args.initial_epoch)
    validate.verbose(args.verbose)
    validate.class_weight(args.class_weight)
    validate.positive_int("steps_per_epoch", args.steps_per_epoch, allow_none=True)
    yield_policy.parse(args.yield_every, args.now)  # raises for a bad value


def bind(kind: type[Any], scope: dict[str, Any]) -> Any:
    """A ``FitArgs`` / ``StreamFitArgs`` from a call's parameters (its fields)."""
    return kind(**{name: scope[name] for name in kind.__dataclass_fields__})
