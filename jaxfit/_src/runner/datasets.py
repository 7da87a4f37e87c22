"""Built-in datasets that ship offline, and the two forms a dataset callable returns.

Arrays (the built-ins): a ``Dataset``, or a mapping ``{"x_train", "y_train"[,
"x_test", "y_test", "task", "num_outputs", "preprocess"]}``. The runner calls
``Trainer.fit`` (``fit.validation_split`` holds out the last fraction of the
train part) and ``Trainer.evaluate`` on the test part.

Streams: a ``StreamDataset``, or a mapping ``{"train"[, "validation", "test",
"task", "num_outputs", "preprocess"]}`` whose streams are anything
``Trainer.fit_dataset`` takes: a generator function (called afresh each epoch),
a list or other iterable of batches, a grain dataset. A batch is ``{"xs", "ys"[,
"sample_weight"]}`` or ``(x, y[, sample_weight])``. The runner calls
``Trainer.fit_dataset`` with the validation stream as ``validation_data`` and
``Trainer.evaluate_dataset`` on the test stream. ``num_outputs`` is required for
classification streams (one batch does not tell the number of classes).

``task`` defaults from the labels' dtype: integers are ``"classification"``.

``preprocess`` (optional) is part of the model, as Keras' preprocessing layers
are: a pure, jittable function of a batch of inputs ``x`` (any pytree, as the
dataset gives it) returning the model's inputs. The model is built on
``preprocess(sample_x)``, and the runner trains ``preprocess`` followed by the
model, inside the compiled steps (no host work per batch), so the trained model,
its checkpoint and ``jaxfit.load_run`` take the dataset's raw inputs. The
built-in ``digits`` gives raw pixels (0..16) with ``preprocess`` scaling them to
[0, 1] (and reshaping them to images with ``as_images``).

The synthetic datasets refuse sizes whose arrays would not fit in the host's
memory (a ``ConfigError`` naming the larger of ``num_samples`` and
``num_features`` / ``num_targets``) before numpy tries to allocate them.

The built-ins' signatures are the spec of ``data.args``: their annotations
(``PositiveInt``, ``Rate``..., from ``schema``) are checked at validate time with
the key path; what depends on two arguments (a split that leaves a side empty) is
checked when the data is made, which ``jaxfit validate`` does too.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import iterables
from jaxfit._src.runner.schema import (
    Bounds,
    ConfigError,
    NonNegativeFloat,
    PositiveInt,
    Rate,
)

ARRAY_KEYS = (
    "x_train",
    "y_train",
    "x_test",
    "y_test",
    "task",
    "num_outputs",
    "preprocess",
)
STREAM_KEYS = ("train", "validation", "test", "task", "num_outputs", "preprocess")
TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays for ``Trainer.fit``: the train part and an optional test part.
    ``preprocess`` (a pure, jittable function of a batch of inputs, or ``None``)
    is part of the model: see the module docstring."""

    x_train: Any
    y_train: Any
    x_test: Any = None
    y_test: Any = None
    task: Literal["classification", "regression"] = "classification"
    num_outputs: int = 1
    preprocess: Callable[[Any], Any] | None = None

    @property
    def sample_x(self) -> Any:
        """Two training samples, to build the model."""
        return jax.tree.map(lambda a: np.asarray(a[:2]), self.x_train)


@dataclasses.dataclass(frozen=True)
class StreamDataset:
    """Streams of batches for ``Trainer.fit_dataset``. ``sample_x`` (two samples
    of the first training batch) builds the model; ``as_dataset`` fills it in.
    ``preprocess`` as ``Dataset``'s."""

    train: Any
    validation: Any = None
    test: Any = None
    task: Literal["classification", "regression"] = "classification"
    num_outputs: int = 1
    sample_x: Any = None
    preprocess: Callable[[Any], Any] | None = None


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Shuffles once (seeded), then keeps the last ``test_fraction`` for testing."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(
            f"data.args.test_fraction: expected a number in [0, 1), got "
            f"{test_fraction!r} ({type(test_fraction).__name__})"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = len(x) - int(round(len(x) * test_fraction))
    if test_fraction == 0.0:
        return x, y, None, None
    if cut == 0 or cut == len(x):
        raise ConfigError(
            f"data.args.test_fraction: expected a fraction that leaves samples for "
            f"both training and testing of the {len(x)} samples, got {test_fraction!r} "
            f"({type(test_fraction).__name__}) ({len(x) - cut} test samples)"
        )
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _host_memory() -> int | None:
    """The host's physical memory in bytes, where the platform tells it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _fits(rows: tuple[str, int], width: tuple[str, int], columns: int) -> None:
    """Refuses a synthetic dataset whose float64 array of ``rows`` times
    ``columns`` numbers does not fit in the host's memory, naming the larger of
    the two arguments ``rows`` and ``width`` (``(name, value)`` each).

    Raises:
      ConfigError: naming ``data.args.<argument>`` and both sizes.
    """
    limit = _host_memory()
    needed = float(rows[1]) * float(columns) * 8
    if limit is None or needed <= limit:
        return
    name, value = rows if rows[1] >= width[1] else width
    raise ConfigError(
        f"data.args.{name}: expected a dataset that fits in the host's memory "
        f"({limit / 2**30:.3g} GiB), got {value!r} ({type(value).__name__}): "
        f"{rows[1]} {rows[0].removeprefix('num_')} of {width[1]} "
        f"{width[0].removeprefix('num_')} need {needed / 2**30:.3g} GiB as float64"
    )


MSG_NO_SKLEARN = (
    "The digits dataset needs scikit-learn: pip install scikit-learn (in "
    "jaxfit-trainer's run extra)."
)


def _scale_digits(x: Any) -> Any:
    """``digits``' preprocessing: raw pixels (0..16) scaled to [0, 1]."""
    return x / 16.0


def _digit_images(x: Any) -> Any:
    """``digits(as_images=True)``'s preprocessing: scaled, as ``(n, 8, 8, 1)``."""
    return (x / 16.0).reshape(-1, 8, 8, 1)


def digits(
    test_fraction: Rate = 0.2, as_images: bool = False, seed: int = 0
) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (shipped with it, no download).

    The inputs are the raw pixel values, ``load_digits().data`` as float32: 0..16,
    shape ``(n, 64)``. The dataset's ``preprocess`` (part of the model) scales
    them to [0, 1] and, with ``as_images``, reshapes them to ``(n, 8, 8, 1)`` for
    CNNs; a loaded run (``jaxfit.load_run``) takes raw pixels too.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(MSG_NO_SKLEARN) from error
    data = load_digits()
    x = data.data.astype(np.float32)  # 0..16: exact, as is x / 16
    y = data.target.astype(np.int32)
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed)
    preprocess = _digit_images if as_images else _scale_digits
    return Dataset(x_train, y_train, x_test, y_test, "classification", 10, preprocess)


def synthetic_classification(
    num_samples: PositiveInt = 1000,
    num_features: PositiveInt = 20,
    num_classes: Annotated[int, Bounds(2)] = 3,
    noise: NonNegativeFloat = 1.0,
    test_fraction: Rate = 0.2,
    seed: int = 0,
) -> Dataset:
    """Gaussian clusters around random class centres (``noise`` is their spread)."""
    features = ("num_features", num_features)
    _fits(("num_classes", num_classes), features, num_features)  # the centres
    _fits(("num_samples", num_samples), features, 2 * num_features + 1)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, num_features)) * 2.0
    y = rng.integers(0, num_classes, size=num_samples).astype(np.int32)
    x = centres[y] + noise * rng.normal(size=(num_samples, num_features))
    x_train, y_train, x_test, y_test = _split(
        x.astype(np.float32), y, test_fraction, seed
    )
    return Dataset(x_train, y_train, x_test, y_test, "classification", num_classes)


def synthetic_regression(
    num_samples: PositiveInt = 1000,
    num_features: PositiveInt = 8,
    num_targets: PositiveInt = 1,
    noise: NonNegativeFloat = 0.1,
    test_fraction: Rate = 0.2,
    seed: int = 0,
) -> Dataset:
    """``y = sin(x @ w1) @ w2 + noise``: a smooth nonlinear target."""
    samples = ("num_samples", num_samples)
    _fits(samples, ("num_features", num_features), num_features + 16)
    _fits(samples, ("num_targets", num_targets), 3 * num_targets + 16)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype(np.float32)
    w1 = rng.normal(size=(num_features, 16)) / np.sqrt(num_features)
    w2 = rng.normal(size=(16, num_targets)) / 4.0
    y = np.sin(x @ w1) @ w2 + noise * rng.normal(size=(num_samples, num_targets))
    x_train, y_train, x_test, y_test = _split(
        x, y.astype(np.float32), test_fraction, seed
    )
    return Dataset(x_train, y_train, x_test, y_test, "regression", num_targets)


DATASETS: dict[str, Callable[..., Any]] = {
    "digits": digits,
    "synthetic_classification": synthetic_classification,
    "synthetic_regression": synthetic_regression,
}


def _task(
    value: Mapping[str, Any], y: Any, key: str
) -> Literal["classification", "regression"]:
    task = value.get("task")
    if task is None:
        leaf = np.asarray(jax.tree.leaves(y)[0])
        return (
            "classification"
            if np.issubdtype(leaf.dtype, np.integer)
            else ("regression")
        )
    if task not in TASKS:
        raise ConfigError(
            f"{key}: expected the dataset's 'task' to be one of "
            f"{list(TASKS)}, got {task!r}."
        )
    return task


def _check_keys(value: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{key}: the dataset callable returned unknown keys "
            f"{unknown}; expected {list(allowed)}."
        )


def _first_batch(source: Any, key: str) -> tuple[Any, Any]:
    """The first batch of a training stream, and the stream to train on (a one-shot
    iterator gets its first batch back in front)."""
    if isinstance(source, collections.abc.Iterator):
        first = next(source, None)
        source = itertools.chain([] if first is None else [first], source)
    else:
        try:
            first = next(iter(iterables.Stream(source, key).iterator(0)), None)
        except TypeError as error:
            raise ConfigError(f"{key}: the dataset's 'train' stream: {error}") from None
    if first is None:
        raise ConfigError(f"{key}: the dataset's 'train' stream has no batches.")
    return first, source


def _streams(value: Mapping[str, Any], key: str) -> StreamDataset:
    _check_keys(value, STREAM_KEYS, key)
    first, train = _first_batch(value["train"], key)
    try:
        x, y, _ = iterables.parse_batch(first, 0, f"{key} 'train'")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    task = _task(value, y, key)
    outputs = value.get("num_outputs")
    if outputs is None:
        if task == "classification":
            raise ConfigError(
                f"{key}: a classification dataset of streams must give "
                "'num_outputs' (the number of classes): one batch does "
                "not tell it."
            )
        outputs = int(np.prod(np.shape(jax.tree.leaves(y)[0])[1:]))
    sample_x = jax.tree.map(lambda a: np.asarray(a[:2]), x)
    return StreamDataset(
        train,
        value.get("validation"),
        value.get("test"),
        task,
        int(outputs),
        sample_x,
        _preprocess(value, key),
    )


def _preprocess(value: Mapping[str, Any], key: str) -> Callable[[Any], Any] | None:
    """The dataset's ``preprocess``: ``None`` or a callable."""
    preprocess = value.get("preprocess")
    if preprocess is not None and not callable(preprocess):
        raise ConfigError(
            errors.expected(
                f"{key}: the dataset's 'preprocess'",
                "a pure, jittable function of a batch of inputs x returning the "
                "model's inputs (it runs inside the compiled steps, as part of "
                "the model), or None",
                preprocess,
            )
        )
    return preprocess


def as_dataset(value: Any, key: str) -> Dataset | StreamDataset:
    """A user dataset callable's result as a ``Dataset`` (arrays) or a
    ``StreamDataset`` (streams); see the module docstring for the two forms."""
    if isinstance(value, StreamDataset):
        if value.sample_x is not None:
            _preprocess({"preprocess": value.preprocess}, key)
            return value
        return _streams({k: getattr(value, k) for k in STREAM_KEYS}, key)
    if isinstance(value, Dataset):
        _preprocess({"preprocess": value.preprocess}, key)
        return value
    if isinstance(value, Mapping) and "train" in value and "x_train" not in value:
        return _streams(value, key)
    if isinstance(value, Mapping) and "x_train" in value and "y_train" in value:
        _check_keys(value, ARRAY_KEYS, key)
        y = np.asarray(value["y_train"])
        task = _task(value, y, key)
        outputs = value.get("num_outputs") or (
            int(y.max()) + 1 if task == "classification" else int(np.prod(y.shape[1:]))
        )
        return Dataset(
            value["x_train"],
            value["y_train"],
            value.get("x_test"),
            value.get("y_test"),
            task,
            outputs,
            _preprocess(value, key),
        )
    raise ConfigError(
        f"{key}: expected the dataset callable to return arrays "
        "{'x_train', 'y_train'[, 'x_test', 'y_test', 'task', "
        "'num_outputs', 'preprocess']} or streams {'train'[, 'validation', "
        f"'test', 'task', 'num_outputs', 'preprocess']}}, got {_kind(value)}."
    )


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a mapping with keys {sorted(str(k) for k in value)}"
    return type(value).__name__
