"""Streams of batches: generators, iterables, grain and tf.data, as batches.

A source is normalised once into a ``Stream`` that hands out one iterator per epoch
(a generator function is called afresh, an iterable re-iterated, a ``tf.data``
dataset duck-typed through ``as_numpy_iterator()``). Each batch is
``{"xs", "ys"[, "sample_weight"]}`` or ``(x, y[, sample_weight])``; nested pytrees
are allowed inside.

Shapes: every batch is padded (and masked) to the **largest batch size seen so
far** in the stream, so a stream of equal batches with a short last one has one
shape (its *bucket*); a batch larger than all before it opens another. A batch
whose structure, feature shapes or dtypes differ from the first batch's is
rejected with its index before it reaches jit.

Reading them on a background thread, grouping them into fused blocks and the
waits for the producer are ``data.feeder``'s.
"""

from __future__ import annotations

import collections.abc
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import arrays, checks

MSG_ONE_SHOT = (
    "Pass the generator function itself (it is called afresh each epoch), an "
    "iterable such as a list or a grain dataset{more}."
)
# MSG_ONE_SHOT's ending for the training stream (validation starts afresh each time)
MORE_STEPS = ", or set steps_per_epoch so that one iterator continues across epochs"


def one_shot_message(argname: str, epoch: int) -> str:
    """Refuses a one-shot iterator as ``argname`` (``"dataset"``,
    ``"validation_data"``) when epoch ``epoch`` needs another pass over it."""
    more = MORE_STEPS if argname == "dataset" else ""
    return errors.expected(
        argname,
        f"an iterable of batches that can be iterated again for epoch {epoch}",
        errors.Description("a one-shot iterator (such as a generator object)"),
        MSG_ONE_SHOT.format(more=more),
    )


def parse_batch(batch: Any, index: int, argname: str) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight or None)`` from a batch dict or tuple."""
    if isinstance(batch, dict) and "xs" in batch and "ys" in batch:
        extra = set(batch) - {"xs", "ys", "sample_weight"}
        if extra:
            raise ValueError(
                errors.expected(
                    f"{argname} batch {index}",
                    "a dict with keys 'xs', 'ys' and optionally 'sample_weight'",
                    batch,
                )
            )
        return batch["xs"], batch["ys"], batch.get("sample_weight")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    fix = ""
    if hasattr(batch, "shape") and hasattr(batch, "dtype"):  # arrays, not batches
        fix = (
            "For in-memory validation arrays pass a tuple (x, y[, sample_weight])."
            if argname == "validation_data"
            else "A stream yields whole batches; for in-memory arrays use "
            "Trainer.fit(x, y) (or pass a list of (x, y) batches)."
        )
    raise ValueError(
        errors.expected(
            f"{argname} batch {index}",
            "{'xs': x, 'ys': y[, 'sample_weight': w]} or a tuple (x, y[, w])",
            batch,
            fix,
        )
    )


def _not_a_stream(source: Any, argname: str) -> TypeError:
    fix = {
        dict: "A dict is one batch: pass a list of batches ([batch]) or a "
        "generator function.",
        str: "",
        bytes: "",
    }
    kind = next(k for k in fix if isinstance(source, k))
    return TypeError(
        errors.expected(
            argname,
            "an iterable of batches, a generator function, a grain dataset or a "
            "tf.data.Dataset",
            source,
            fix[kind],
        )
    )


class Stream:
    """One iterator per epoch over a source of batches."""

    def __init__(self, source: Any, argname: str = "dataset"):
        self.argname = argname
        self.one_shot = False
        self._source = source
        self._called = False  # whether ``_factory`` is the user's own function
        if isinstance(source, (str, bytes, dict)):  # iterable, but not of batches
            raise _not_a_stream(source, argname)
        if hasattr(source, "as_numpy_iterator"):  # tf.data, never imported
            self._factory: Callable[[], Iterable[Any]] = source.as_numpy_iterator
        elif hasattr(source, "__iter__"):
            # An iterator (a generator object, iter(list)) can be walked only once.
            self.one_shot = isinstance(source, collections.abc.Iterator)
            self._factory = lambda: source
        elif callable(source):  # a generator function, called afresh each epoch
            _check_no_arguments(source, argname)
            self._factory, self._called = source, True
        else:
            raise TypeError(
                errors.expected(
                    argname,
                    "an iterable of batches, a generator function, a grain dataset or a "
                    "tf.data.Dataset",
                    source,
                )
            )
        self._iterations = 0

    def iterator(self, epoch: int) -> Iterator[Any]:
        if self.one_shot and self._iterations > 0:
            raise ValueError(one_shot_message(self.argname, epoch))
        self._iterations += 1
        items = self._factory()
        if self._called and not hasattr(items, "__iter__"):
            raise TypeError(
                errors.expected(
                    self.argname,
                    "a generator function, or a function returning an iterable of "
                    "batches",
                    errors.Description(
                        f"{errors.describe(self._source)}, which returned "
                        f"{errors.describe(items)}"
                    ),
                )
            )
        return iter(items)


def _check_no_arguments(fn: Callable[..., Any], argname: str) -> None:
    """A generator function is called without arguments: refuse one that needs
    some before it is called (Python's own error would not name ``argname``)."""
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise TypeError(
            errors.expected(
                argname,
                "a generator function that takes no arguments (it is called afresh "
                "each epoch)",
                fn,
                "Bind its arguments first, e.g. functools.partial(gen, n) or "
                "lambda: gen(n).",
            )
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass


class Batch:
    """One prepared (checked, converted, unpadded) batch of a stream."""

    __slots__ = ("index", "leaves", "n", "size", "weights")

    def __init__(
        self,
        leaves: list[Any],
        weights: tuple[np.ndarray, ...],
        n: int,
        index: int,
        size: int,
    ):
        self.leaves, self.weights, self.n, self.index = leaves, weights, n, index
        self.size = size  # the padded batch size (its shape bucket)


class Batcher:
    """Turns raw batches into prepared ``Batch``es, and groups of them into padded,
    masked host blocks.

    The first batch fixes the structure, feature shapes and dtypes; a later batch
    that matches them (numpy leaves, ``(x, y[, w])`` or ``{"xs", "ys"}``) takes a
    fast path of a few attribute checks; any other goes through
    ``arrays.standardize`` and the signature check, which converts it or raises
    naming its index. Every batch is padded to the largest batch size seen so far
    (a multiple of ``multiple``): that size is its shape bucket.
    """

    def __init__(
        self, argname: str, class_weight: dict[int, float] | None, multiple: int = 1
    ):
        self.argname = argname
        self.class_weight = class_weight
        self.multiple = multiple  # pad to a multiple of the devices feeding on it
        self.signature: Any = None
        self.size = 0
        self._treedef: Any = None  # of (x, y), from the first batch
        self._pair = False  # whether x and y are one array each
        self._specs: list[tuple[tuple[int, ...], np.dtype]] = []
        self._outputs = 0
        self._ones: dict[int, tuple[np.ndarray, ...]] = {}
        # (y, where) -> None, raising for labels the losses cannot take; set once
        # the model's output shapes are known
        self.check: Callable[[Any, str], None] | None = None

    def __call__(self, raw: Any, index: int) -> Batch:
        prepared = self._quick(raw)
        if prepared is None:
            prepared = self._standard(raw, index)
        leaves, weights, n = prepared
        self.size = max(self.size, -(-n // self.multiple) * self.multiple)
        return Batch(leaves, weights, n, index, self.size)

    def _quick(self, raw: Any) -> tuple[list[Any], tuple[np.ndarray, ...], int] | None:
        """A batch shaped like the first one, without the general conversion."""
        if self._treedef is None:
            return None
        weight = None
        if type(raw) is tuple and len(raw) in (2, 3):
            x, y = raw[0], raw[1]
            weight = raw[2] if len(raw) == 3 else None
        elif type(raw) is dict and len(raw) == 2 and "xs" in raw and "ys" in raw:
            x, y = raw["xs"], raw["ys"]
        else:
            return None
        if self._pair and type(x) is np.ndarray and type(y) is np.ndarray:
            leaves = [x, y]  # the common case, without flattening
        else:
            leaves, treedef = jax.tree_util.tree_flatten((x, y))
            if treedef != self._treedef:
                return None
        n = -1
        for i, (leaf, (shape, dtype)) in enumerate(zip(leaves, self._specs)):
            if type(leaf) is not np.ndarray or leaf.shape[1:] != shape:
                return None
            if leaf.dtype != dtype:
                if not (
                    (leaf.dtype == np.float64 and dtype == np.float32)
                    or (leaf.dtype == np.int64 and dtype == np.int32)
                ):
                    return None
                leaves[i] = leaf.astype(dtype)
            if n < 0:
                n = leaf.shape[0]
            elif leaf.shape[0] != n:
                return None
        if n <= 0:
            return None
        if weight is None:
            weights = self._ones.get(n)
            if weights is None:
                weights = self._ones[n] = (np.ones(n, np.float32),) * self._outputs
        elif (
            type(weight) is np.ndarray
            and weight.shape == (n,)
            and weight.dtype.kind in arrays.REAL_KINDS
        ):
            weights = (weight.astype(np.float32, copy=False),) * self._outputs
        else:
            return None
        return leaves, weights, n

    def _standard(
        self, raw: Any, index: int
    ) -> tuple[list[Any], tuple[np.ndarray, ...], int]:
        x, y, sample_weight = parse_batch(raw, index, self.argname)
        prefix = f"{self.argname} batch {index}: "
        data, n = arrays.standardize(x, y, sample_weight, prefix)
        x, y = data["x"], data["y"]
        signature = jax.tree.map(lambda a: (a.shape[1:], a.dtype.name), (x, y))
        structure = jax.tree.structure((x, y))
        if self.signature is None:
            self.signature = (structure, signature)
            leaves, self._treedef = jax.tree_util.tree_flatten((x, y))
            self._pair = self._treedef == jax.tree.structure((0, 0))
            self._specs = [(a.shape[1:], a.dtype) for a in leaves]
            self._outputs = len(jax.tree.leaves(y))
        elif (structure, signature) != self.signature:
            raise ValueError(
                f"{self.argname}: batch {index} has structure/shapes "
                f"{_describe(structure, signature)}, but batch 0 had "
                f"{_describe(*self.signature)} (feature shapes and dtypes, without the "
                "batch axis). Every batch must have the same structure, feature shapes "
                "and dtypes; only the batch size may vary."
            )
        leaves = [np.asarray(a) for a in jax.tree.leaves((x, y))]
        return leaves, tuple(data["sample_weight"]), n

    def check_group(self, group: list[Batch]) -> None:
        """Labels and class weights of a group of batches, checked at once; an
        error names the first batch that has the problem."""
        if self.check is None and self.class_weight is None:
            return
        try:
            self._check(group, "")
        except ValueError:
            for batch in group:  # find the batch to name (and its own message)
                self._check([batch], f"{self.argname} batch {batch.index}: ")
            raise

    def _check(self, group: list[Batch], prefix: str) -> None:
        y = self._y(group)
        if self.check is not None:
            self.check(y, prefix + "y")
        if self.class_weight is not None:
            checks.check_class_weight(self.class_weight, y, prefix + "y")

    def _y(self, group: list[Batch]) -> Any:
        """The labels of the group's batches, concatenated (no padding rows)."""
        leaves = [
            np.concatenate([b.leaves[i] for b in group])
            if len(group) > 1
            else group[0].leaves[i]
            for i in range(len(self._specs))
        ]
        return jax.tree.unflatten(self._treedef, leaves)[1]

    def block(self, group: list[Batch], slots: int = 0) -> dict[str, Any]:
        """The group's batches stacked into one padded, masked host block of
        ``slots`` batches (at least the group's; the extra ones all padding)."""
        size, slots = group[0].size, max(slots, len(group))
        leaves = [
            _stack([b.leaves[i] for b in group], slots, size)
            for i in range(len(self._specs))
        ]
        x, y = jax.tree.unflatten(self._treedef, leaves)
        full = slots == len(group) and all(batch.n == size for batch in group)
        if full and all(b.weights is self._ones.get(size) for b in group):
            ones = np.ones((slots, size), np.float32)  # no sample weights given
            weights: tuple[np.ndarray, ...] = (ones,) * self._outputs
        else:
            weights = tuple(
                _stack([b.weights[o] for b in group], slots, size, zeros=True)
                for o in range(self._outputs)
            )
        if self.class_weight is not None:
            per_class = _stack(
                [
                    arrays.class_weights(
                        jax.tree.unflatten(self._treedef, b.leaves)[1],
                        self.class_weight,
                    )
                    for b in group
                ],
                slots,
                size,
                zeros=True,
            )
            weights = tuple(w * per_class for w in weights)
        if full:
            mask = np.ones((slots, size), np.float32)
        else:
            mask = np.zeros((slots, size), np.float32)
            for i, batch in enumerate(group):
                mask[i, : batch.n] = 1.0
        return {"x": x, "y": y, "sample_weight": weights, "mask": mask}


def _stack(
    arrays_: list[np.ndarray], slots: int, size: int, zeros: bool = False
) -> np.ndarray:
    """``[n_i, ...]`` arrays as one ``[slots, size, ...]`` array: the rows past
    each batch's own are zeros (they are computed, then masked: they must be
    finite); the slots past the arrays' are left unset (the compiled block's
    loop never reaches them, see ``arrays._gather``), or zeros with ``zeros``
    (weights: the host multiplies them)."""
    first, count = arrays_[0], len(arrays_)
    make = np.zeros if zeros else np.empty
    if all(a.shape[0] == size for a in arrays_):
        if count == slots:
            return np.stack(arrays_)
        out = make((slots, size, *first.shape[1:]), first.dtype)
        np.stack(arrays_, out=out[:count])
        return out
    out = make((slots, size, *first.shape[1:]), first.dtype)
    for i, a in enumerate(arrays_):
        out[i, : a.shape[0]] = a
        out[i, a.shape[0] :] = 0
    return out


def _describe(structure: Any, signature: Any) -> str:
    """A batch's ``(x, y)`` by ``errors.describe``: each leaf's feature shape and
    dtype (without the batch axis), in the batch's structure."""
    leaves = jax.tree.leaves(
        signature,
        is_leaf=lambda v: (
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str)
        ),
    )
    return errors.describe(
        jax.tree.unflatten(
            structure,
            [
                errors.Description(errors.array_spec(shape, dtype))
                for shape, dtype in leaves
            ],
        )
    )
