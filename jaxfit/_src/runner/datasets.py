"""Built-in datasets that ship offline: scikit-learn's digits and synthetic sets.

A dataset callable returns a ``Dataset`` (or a mapping with ``x_train``,
``y_train`` and optionally ``x_test``, ``y_test``, ``task``): the runner trains on
the train part (``fit.validation_split`` holds out its last fraction) and reports
the final evaluation on the test part.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import numpy as np

from jaxfit._src.runner.schema import ConfigError


@dataclasses.dataclass(frozen=True)
class Dataset:
    x_train: Any
    y_train: Any
    x_test: Any = None
    y_test: Any = None
    task: Literal["classification", "regression"] = "classification"
    num_outputs: int = 1


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Shuffles once (seeded), then keeps the last ``test_fraction`` for testing."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"data.args.test_fraction: expected a number in [0, 1), got "
                          f"{test_fraction!r}.")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = len(x) - int(round(len(x) * test_fraction))
    if test_fraction == 0.0:
        return x, y, None, None
    return x[:cut], y[:cut], x[cut:], y[cut:]


def digits(test_fraction: float = 0.2, as_images: bool = False, seed: int = 0
           ) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (shipped with it, no download),
    scaled to [0, 1]; ``as_images`` gives ``(n, 8, 8, 1)`` for CNNs."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("The digits dataset needs scikit-learn: pip install "
                          "'jaxfit[run]'.") from error
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    if as_images:
        x = x.reshape(-1, 8, 8, 1)
    y = data.target.astype(np.int32)
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed)
    return Dataset(x_train, y_train, x_test, y_test, "classification", 10)


def synthetic_classification(num_samples: int = 1000, num_features: int = 20,
                             num_classes: int = 3, noise: float = 1.0,
                             test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Gaussian clusters around random class centres (``noise`` is their spread)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, num_features)) * 2.0
    y = rng.integers(0, num_classes, size=num_samples).astype(np.int32)
    x = (centres[y] + noise * rng.normal(size=(num_samples, num_features)))
    x_train, y_train, x_test, y_test = _split(x.astype(np.float32), y, test_fraction,
                                              seed)
    return Dataset(x_train, y_train, x_test, y_test, "classification", num_classes)


def synthetic_regression(num_samples: int = 1000, num_features: int = 8,
                         num_targets: int = 1, noise: float = 0.1,
                         test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``y = sin(x @ w1) @ w2 + noise``: a smooth nonlinear target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype(np.float32)
    w1 = rng.normal(size=(num_features, 16)) / np.sqrt(num_features)
    w2 = rng.normal(size=(16, num_targets)) / 4.0
    y = np.sin(x @ w1) @ w2 + noise * rng.normal(size=(num_samples, num_targets))
    x_train, y_train, x_test, y_test = _split(x, y.astype(np.float32), test_fraction,
                                              seed)
    return Dataset(x_train, y_train, x_test, y_test, "regression", num_targets)


DATASETS = {
    "digits": digits,
    "synthetic_classification": synthetic_classification,
    "synthetic_regression": synthetic_regression,
}


def as_dataset(value: Any, key: str) -> Dataset:
    """A user dataset callable's result as a ``Dataset``."""
    if isinstance(value, Dataset):
        return value
    if isinstance(value, Mapping) and "x_train" in value and "y_train" in value:
        y = np.asarray(value["y_train"])
        task = value.get("task") or ("classification" if np.issubdtype(
            y.dtype, np.integer) else "regression")
        outputs = value.get("num_outputs") or (
            int(y.max()) + 1 if task == "classification" else int(np.prod(y.shape[1:])))
        return Dataset(value["x_train"], value["y_train"], value.get("x_test"),
                       value.get("y_test"), task, outputs)
    raise ConfigError(f"{key}: expected the dataset callable to return a mapping with "
                      f"'x_train' and 'y_train' (and optionally 'x_test', 'y_test', "
                      f"'task'), got {type(value).__name__}.")
