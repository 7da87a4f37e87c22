"""In-memory data: checks, the validation split, and pad-and-mask batch blocks.

Everything here is host-side numpy, vectorised over whole index arrays: nothing
in the hot loop does per-sample Python work. Blocks of batches are gathered in
one fancy-indexing call per leaf and moved to the device ahead of use.
"""

from __future__ import annotations

import collections
import collections.abc
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxfit._src import errors
from jaxfit._src.data import checks

# numpy dtype kinds of numbers: bool, signed and unsigned integers, floating
# point, complex (strings, bytes, objects, datetimes and records are refused)
NUMBER_KINDS = "biufc"
REAL_KINDS = "biuf"  # sample weights
# An epoch's index plan is built whole on the host (int64 index + float32 mask per
# slot): at most this many slots, so a steps_per_epoch typo cannot exhaust memory.
MAX_EPOCH_SLOTS = 2**27

MSG_SCALAR_LEAF = (
    "A list, tuple or dict is read as a pytree of arrays (one leaf each); convert "
    "nested lists of numbers with np.asarray."
)
MSG_STREAM = (
    "A stream of batches (a generator, a grain or tf.data dataset) goes to "
    "Trainer.fit_dataset or evaluate_dataset."
)


def to_numpy(tree: Any, argname: str, kinds: str = NUMBER_KINDS) -> Any:
    """Converts every leaf to a numpy array, rejecting non-array leaves.

    Host data stays on the host (batches move to the device one block at a time,
    so a dataset larger than device memory trains); ``jax.Array`` leaves already
    on device are kept there and batches are gathered on device, without a copy
    of the whole array. A leaf whose dtype kind is not in ``kinds`` (strings,
    Python objects...) is refused with a ``TypeError`` naming ``argname``.
    """

    def convert(leaf):
        if isinstance(leaf, jax.Array):  # already on device: used there, no copy
            if leaf.ndim == 0:
                raise ValueError(
                    errors.expected(argname, "arrays with a leading sample axis", leaf)
                )
            return leaf
        array = np.asarray(leaf)
        if array.dtype.kind not in kinds:
            stream = callable(leaf) or (
                hasattr(leaf, "__iter__")
                and array.ndim == 0
                and not isinstance(leaf, (str, bytes))
            )
            raise TypeError(
                errors.expected(
                    argname,
                    "arrays of numbers"
                    if kinds == NUMBER_KINDS
                    else "arrays of real numbers",
                    leaf,
                    MSG_STREAM if stream else "",
                )
            )
        if array.ndim == 0:
            raise ValueError(
                errors.expected(
                    argname,
                    "arrays with a leading sample axis",
                    leaf,
                    MSG_SCALAR_LEAF if _in_container(tree) else "",
                )
            )
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64:
            array = array.astype(np.int32)
        return array

    if tree is None:
        return None
    return jax.tree.map(convert, tree)


def _is_stream(value: Any) -> bool:
    """A generator (function or object), an iterator or a dataset object: what
    ``fit_dataset`` takes, not an array."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return False
    return (
        isinstance(value, collections.abc.Iterator)
        or hasattr(value, "as_numpy_iterator")
        or callable(value)
    )


def _in_container(tree: Any) -> bool:
    return isinstance(tree, (list, tuple, dict))


def require_arrays(tree: Any, argname: str, what: str) -> None:
    """Raises naming ``argname`` when ``tree`` is a stream of batches (a
    ``TypeError``) or holds no array (``None``, ``{}``, ``()``: a ``ValueError``);
    ``what`` says what was expected."""
    if _is_stream(tree):
        raise TypeError(
            errors.expected(
                argname, f"an array or a pytree of arrays ({what})", tree, MSG_STREAM
            )
        )
    if not jax.tree.leaves(tree):
        raise ValueError(
            errors.expected(argname, f"an array or a pytree of arrays ({what})", tree)
        )


def num_samples(trees: dict[str, Any], head: str = "x, y and sample_weight") -> int:
    """The common leading dimension of every leaf; a clear error (``head``: the
    argument it names) when they differ."""
    counts: dict[str, int] = {}
    for argname, tree in trees.items():
        if tree is None:
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            counts[argname + jax.tree_util.keystr(path)] = int(leaf.shape[0])
    if not counts:
        raise ValueError(errors.expected("x", "at least one array", None))
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise ValueError(
            f"{head}: expected the same number of samples (leading dimension) in "
            f"every array, got {detail}. Pass arrays of equal length."
        )
    return next(iter(counts.values()))


def standardize(
    x: Any, y: Any, sample_weight: Any, argprefix: str = ""
) -> tuple[dict[str, Any], int]:
    """``({"x", "y", "sample_weight"}, n)``: numpy (or device) leaves, one float32
    weight vector per output of ``y`` (ones when none is given).

    ``sample_weight`` is one vector for every output, or one per output
    structured like ``y``. Shared by arrays and by each batch of a stream.
    """
    require_arrays(x, argprefix + "x", "the inputs")
    x = to_numpy(x, argprefix + "x")
    require_arrays(y, argprefix + "y", "the labels (targets)")
    y = to_numpy(y, argprefix + "y")
    sample_weight = to_numpy(sample_weight, argprefix + "sample_weight", REAL_KINDS)
    if argprefix.endswith(": "):  # one batch of a stream: "dataset batch 3: "
        names, head = ("x", "y", "sample_weight"), argprefix[:-2]
    else:  # "" or "validation_data."
        names = (argprefix + "x", argprefix + "y", argprefix + "sample_weight")
        head = argprefix.rstrip(".") or "x, y and sample_weight"
    n = num_samples(dict(zip(names, (x, y, sample_weight))), head)
    num_outputs = len(jax.tree.leaves(y))
    if sample_weight is None:
        weights = [np.ones(n, np.float32)] * num_outputs
    elif len(jax.tree.leaves(sample_weight)) == 1:  # one vector for every output
        weights = [_weight_vector(sample_weight, n, argprefix)] * num_outputs
    else:
        weight_def: Any = jax.tree.structure(sample_weight)  # PyTreeDef: no stubs
        if weight_def != jax.tree.structure(y):
            raise ValueError(
                errors.expected(
                    argprefix + "sample_weight",
                    "one array of shape (n,), or one per output structured like y",
                    sample_weight,
                )
            )
        weights = [
            _weight_vector(w, n, argprefix) for w in jax.tree.leaves(sample_weight)
        ]
    return {"x": x, "y": y, "sample_weight": tuple(weights)}, n


def _weight_vector(weights: Any, n: int, argprefix: str) -> np.ndarray:
    array = np.asarray(jax.tree.leaves(weights)[0], np.float32)
    if array.size != n:
        raise ValueError(
            errors.expected(
                argprefix + "sample_weight",
                f"one weight per sample, shape ({n},)",
                array,
            )
        )
    return array.reshape(n)


def with_class_weight(
    data: dict[str, Any], class_weight: dict[int, float] | None, where: str = "y"
) -> dict[str, Any]:
    """``data`` with every output's weights multiplied by its sample's class
    weight (every class in ``y`` must have one)."""
    if class_weight is None:
        return data
    checks.check_class_weight(class_weight, data["y"], where)
    per_class = class_weights(data["y"], class_weight)
    return {
        **data,
        "sample_weight": tuple(w * per_class for w in data["sample_weight"]),
    }


def take(tree: Any, index: np.ndarray) -> Any:
    """Gathers rows ``index`` (any shape) from every leaf."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def split_last(tree: Any, n: int, fraction: float) -> tuple[Any, Any]:
    """Splits off the last ``fraction`` of samples (Keras/tfjs: floor on train)."""
    split_at = int(math.floor(n * (1.0 - fraction)))
    head = jax.tree.map(lambda leaf: leaf[:split_at], tree)
    tail = jax.tree.map(lambda leaf: leaf[split_at:], tree)
    return head, tail


def class_weights(y: Any, class_weight: dict[int, float]) -> np.ndarray:
    """Per-sample weights from a ``{class: weight}`` dict (Keras; missing -> 1)."""
    leaves = jax.tree.leaves(y)
    if len(leaves) != 1:
        raise ValueError(
            errors.expected(
                "class_weight",
                "a single-output model (y one array)",
                class_weight,
                "Pass sample_weight for multi-output models.",
            )
        )
    labels = leaves[0]
    if labels.ndim > 1 and labels.shape[-1] != 1:
        labels = np.argmax(labels, axis=-1)
    labels = np.round(labels.reshape(labels.shape[0], -1)[:, 0]).astype(np.int64)
    table = np.ones(max(int(labels.max(initial=0)), *class_weight) + 1, np.float32)
    for cls, weight in class_weight.items():
        table[int(cls)] = weight
    return table[labels]


class Batches:
    """Index plans for one data set: batches of ``batch_size``, padded and masked.

    ``epoch_indices(epoch)`` returns ``(index, mask)`` of shape
    ``[num_batches, batch_size]``; with ``shuffle`` each pass uses a fresh
    permutation drawn from ``(seed, pass)``, so the same seed gives the same order.
    With ``steps_per_epoch`` the passes form one stream continued across epochs.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        steps_per_epoch: int | None = None,
        pad_to: Callable[[int], int] = lambda size: size,
    ):
        self.n = n
        self.batch_size = min(batch_size, n)
        # each batch padded (masked) to a multiple of the devices along the data axis
        self.padded_size = pad_to(self.batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.batches_per_pass = math.ceil(n / self.batch_size)
        self.steps_per_epoch = steps_per_epoch or self.batches_per_pass
        if self.steps_per_epoch * self.padded_size > MAX_EPOCH_SLOTS:
            most = MAX_EPOCH_SLOTS // self.padded_size
            raise ValueError(
                errors.expected(
                    "steps_per_epoch",
                    f"at most {most} batches of {self.padded_size} for one epoch of "
                    "arrays (its index plan is built on the host)",
                    steps_per_epoch,
                    "Use more epochs of fewer steps.",
                )
            )

    def _pass(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, index]).permutation(self.n)
        else:
            order = np.arange(self.n)
        padded = self.batches_per_pass * self.batch_size
        mask = np.zeros(padded, np.float32)
        mask[: self.n] = 1.0
        order = np.concatenate([order, np.zeros(padded - self.n, order.dtype)])
        shape = (self.batches_per_pass, self.batch_size)
        order, mask = order.reshape(shape), mask.reshape(shape)
        extra = self.padded_size - self.batch_size
        if extra:
            order = np.pad(order, ((0, 0), (0, extra)))
            mask = np.pad(mask, ((0, 0), (0, extra)))
        return order, mask

    def epoch_indices(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        start = epoch * self.steps_per_epoch
        stop = start + self.steps_per_epoch
        first, last = (
            start // self.batches_per_pass,
            (stop - 1) // self.batches_per_pass,
        )
        parts = [self._pass(p) for p in range(first, last + 1)]
        index = np.concatenate([p[0] for p in parts])
        mask = np.concatenate([p[1] for p in parts])
        offset = first * self.batches_per_pass
        return index[start - offset : stop - offset], mask[
            start - offset : stop - offset
        ]


def blocks(
    data: dict[str, Any],
    index: np.ndarray,
    mask: np.ndarray,
    capacity: int,
    steps: Callable[[], int],
) -> Iterator[tuple[dict[str, Any], int]]:
    """Yields ``(host_block, num_real_batches)``: each block has ``capacity``
    slots, its first ``steps()`` (asked for each block; at most what is left)
    real and the rest padding (mask 0, contents unset), which the compiled
    block skips."""
    num_steps, start = index.shape[0], 0
    while start < num_steps:
        real = max(1, min(steps(), capacity, num_steps - start))
        idx, msk = index[start : start + real], mask[start : start + real]
        start += real
        pad = capacity - real
        block = {
            "x": _gather(data["x"], idx, pad),
            "y": _gather(data["y"], idx, pad),
            "sample_weight": tuple(_gather(w, idx, pad) for w in data["sample_weight"]),
            "mask": np.concatenate([msk, np.zeros((pad, msk.shape[1]), msk.dtype)])
            if pad
            else msk,
        }
        yield block, real


def _gather(tree: Any, index: np.ndarray, pad: int) -> Any:
    """Rows ``index`` (``[slots, batch]``) of every leaf, then ``pad`` padding
    slots. Host leaves gather the real slots only, into a buffer whose padding
    slots are left as they are (the compiled block never reads them: its loop
    stops at the last real slot, which the mask says); writing zeros there and
    copying them cost 4x the transfer itself (8 MiB blocks of 3 real slots on
    CPU: 11.9 ms, 2.7 ms without). Device leaves gather a full block (row 0 in
    the padding) so that their gather has one shape."""

    def one(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array):
            return leaf[
                np.concatenate([index, np.zeros((pad, index.shape[1]), index.dtype)])
            ]
        if not pad:
            return leaf[index]
        real = index.shape[0]
        out = np.empty((real + pad, *index.shape[1:], *leaf.shape[1:]), leaf.dtype)
        np.take(leaf, index, axis=0, out=out[:real])
        return out

    return jax.tree.map(one, tree)


def prefetch(
    iterator: Iterator[tuple[Any, int]], put: Callable[[Any], Any], size: int = 2
) -> Iterator[tuple[Any, int]]:
    """Moves items to the device ``size`` ahead of use with ``put`` (async);
    yields ``(device block, real batches)``."""
    queue: collections.deque = collections.deque()
    for block, real in iterator:
        queue.append((put(block), real))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
