"""``from_arrays``: in-memory arrays as a grain pipeline of batches (fit's data path)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import arrays

MSG_NO_GRAIN = (
    "jaxfit.data.from_arrays needs grain: pip install grain "
    "(in jaxfit-trainer's data extra)."
)


class _Batches:
    """A random-access grain source of whole batches: batch ``i`` is one
    fancy-indexing gather per leaf (no per-sample ``__getitem__``)."""

    def __init__(self, tree: dict[str, Any], order: np.ndarray, batch_size: int):
        self._tree, self._order, self._batch_size = tree, order, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self._batch_size)

    def __getitem__(self, index: int) -> Any:
        rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        return jax.tree.map(lambda leaf: leaf[rows], self._tree)

    def chunked(self, chunk: int) -> Iterator[Any]:
        """Every batch in order, ``chunk`` batches gathered at once."""
        size = self._batch_size
        for first in range(0, len(self._order), chunk * size):
            rows = self._order[first : first + chunk * size]
            gathered = jax.tree.map(lambda leaf: leaf[rows], self._tree)  # noqa: B023
            leaves, treedef = jax.tree.flatten(gathered)
            for start in range(0, len(rows), size):
                yield jax.tree.unflatten(
                    treedef, [leaf[start : start + size] for leaf in leaves]
                )


class ArrayDataset:
    """Batches of in-memory arrays through grain, reshuffled at each iteration.

    Each ``iter()`` (each epoch of ``fit_dataset``) builds a grain ``MapDataset``
    whose items are whole batches, each gathered in one vectorised indexing call
    per leaf. With ``shuffle`` the order of epoch ``e`` is the permutation
    ``fit(shuffle=True)`` draws for its pass ``e`` from the same seed, so
    ``fit_dataset(from_arrays(x, y, seed=s))`` trains exactly as
    ``Trainer(..., seed=s).fit(x, y)``.

    Attributes:
      epoch: how many times the dataset has been iterated.
    """

    def __init__(
        self, tree: dict[str, Any], n: int, batch_size: int, shuffle: bool, seed: int
    ):
        self._tree, self._n = tree, n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self._n / self.batch_size)

    def batches(self, epoch: int) -> _Batches:
        """The random-access batches of ``epoch`` (shuffled from ``(seed, epoch)``)."""
        order = (
            np.random.default_rng([self.seed, epoch]).permutation(self._n)
            if self.shuffle
            else np.arange(self._n)
        )
        return _Batches(self._tree, order, self.batch_size)

    def grain_dataset(self, epoch: int) -> Any:
        """The grain ``MapDataset`` of batches for ``epoch`` (to add grain
        transformations: ``.map``, ``.filter``, ``.to_iter_dataset``...)."""
        import grain  # optional extra

        return grain.MapDataset.source(self.batches(epoch))

    def __iter__(self) -> Iterator[Any]:
        """The next epoch's batches: the same batches, in the same order, as the
        source ``grain_dataset`` wraps, gathered up to 64 batches (1 MiB) at a
        time (one fancy-indexing call per leaf) and handed out as views; grain's own
        iterator would add a thread pool and per-element statistics, tens of
        microseconds a batch, that in-memory batches do not need."""
        batches = self.batches(self.epoch)
        self.epoch += 1
        row_bytes = sum(
            leaf.nbytes // max(len(leaf), 1) for leaf in jax.tree.leaves(self._tree)
        )
        most = _CHUNK_BYTES // max(row_bytes * self.batch_size, 1)
        return batches.chunked(max(1, min(_CHUNK, most)))


# ArrayDataset.__iter__ gathers this many batches per indexing call, at most this
# many bytes (a gather that stays in cache: larger ones slowed the mlp workload)
_CHUNK, _CHUNK_BYTES = 64, 1 << 20


def from_arrays(
    x: Any,
    y: Any,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    sample_weight: Any = None,
) -> ArrayDataset:
    """Builds a grain pipeline of ``{"xs", "ys"[, "sample_weight"]}`` batches.

    Args:
      x, y: arrays or pytrees of arrays with a common leading sample axis.
      batch_size: samples per batch; the last batch may be smaller. Defaults to `32`.
      shuffle: a fresh order at each iteration (epoch). Defaults to `True`.
      seed: seeds the shuffling. Defaults to `0`.
      sample_weight: per-sample weights. Defaults to `None`.

    Returns:
      An iterable for ``Trainer.fit_dataset``; ``len()`` is the number of batches.

    Raises:
      ImportError: when grain is not installed. ValueError: mismatched lengths.
    """
    try:
        import grain  # noqa: F401
    except ImportError as error:
        raise ImportError(MSG_NO_GRAIN) from error
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(
            errors.expected("batch_size", "a positive integer", batch_size)
        )
    tree = {"xs": arrays.to_numpy(x, "x"), "ys": arrays.to_numpy(y, "y")}
    if sample_weight is not None:
        tree["sample_weight"] = np.asarray(sample_weight, np.float32)
    n = arrays.num_samples(
        {"x": tree["xs"], "y": tree["ys"], "sample_weight": tree.get("sample_weight")}
    )
    return ArrayDataset(tree, n, batch_size, bool(shuffle), int(seed))
