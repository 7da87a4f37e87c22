"""A stream of input batches for ``predict_dataset``, read as ``fit_dataset``
reads its streams.

The stream is normalised by ``iterables.Stream`` (generator functions, iterables,
grain, tf.data) and each batch's ``x`` is taken as Keras 3 does for ``predict``
on a dataset: a tuple or list of one to three items is ``(x[, y[,
sample_weight]])`` and only ``x`` is used; a dict with ``"xs"`` is a
``fit_dataset`` batch (``"ys"`` and ``"sample_weight"`` ignored); anything else
is ``x`` itself (an array, or a dict of arrays for a model with named inputs).
A multi-input ``x`` given as a tuple must therefore be wrapped, ``((a, b),)``.
Each ``x`` is paired with an empty label array of shape ``(n, 0)`` so that
``sources.StreamSource`` (its batcher, feeder thread, shape buckets, padding,
masks and device placement) serves it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import iterables


def x_of(batch: Any, index: int, argname: str) -> Any:
    """The ``x`` of one batch of a prediction stream (see the module docstring)."""
    if isinstance(batch, dict) and "xs" in batch:
        extra = set(batch) - {"xs", "ys", "sample_weight"}
        if extra:
            raise ValueError(
                errors.expected(
                    f"{argname} batch {index}",
                    "a dict with keys 'xs' and optionally 'ys', 'sample_weight' "
                    "(or a dict of inputs without 'xs')",
                    batch,
                )
            )
        return batch["xs"]
    if isinstance(batch, (tuple, list)):
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                errors.expected(
                    f"{argname} batch {index}",
                    "x, or a tuple (x,), (x, y) or (x, y, sample_weight)",
                    batch,
                    "Wrap a multi-input x as ((a, b),).",
                )
            )
        return batch[0]
    return batch


def _paired(items: Iterator[Any], argname: str) -> Iterator[Any]:
    """``(x, empty labels)`` for each batch of ``items``."""
    for index, batch in enumerate(items):
        x = x_of(batch, index, argname)
        leaves = jax.tree.leaves(x)
        rows = int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 0
        yield x, np.zeros((rows, 0), np.float32)


def paired_stream(dataset: Any, argname: str = "dataset") -> Iterator[Any]:
    """One pass over ``dataset`` as ``(x, empty labels)`` batches: what a
    ``StreamSource`` reads (the dataset is checked as ``fit_dataset`` checks
    its own, before anything is read)."""
    return _paired(iterables.Stream(dataset, argname).iterator(0), argname)


def is_stream(x: Any) -> bool:
    """Whether ``predict``'s ``x`` is a stream of batches rather than arrays:
    not an array, list, tuple or dict, and iterable (a generator, a grain
    dataset, tf.data) or a generator function."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return False
    if isinstance(x, (list, tuple, dict, str, bytes)):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "as_numpy_iterator") or callable(x)
