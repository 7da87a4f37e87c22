"""Built-in models on Flax Linen, trained through ``jaxfit.from_flax``.

``mlp`` (dense layers, optional dropout), ``cnn`` (a small conv net) and
``resnet`` (a ResNet-style CNN with batch norm). Each builder takes its
architecture arguments from ``model.args`` plus ``sample_x``, ``num_outputs`` and
``seed`` from the runner, and returns a ``jaxfit.Model``. Flax is the optional
``flax`` extra (included in ``run``); it is imported when a model is built.

The signatures are the spec of ``model.args``: their annotations (``PositiveInt``,
``Rate``..., from ``schema``) are checked at validate time with the key path,
e.g. ``model.args.hidden[1]: expected a positive integer, got 0 (int)``.

Before a model's parameters are made, their shapes are computed abstractly
(``jax.eval_shape`` of ``init``): a model whose parameters alone would not fit
in the memory of one device (the host's memory on CPU) is a ``ConfigError``
naming the argument behind its largest layer (``model.args.hidden[0]``) and
both sizes, where allocating them would fail later with a raw out-of-memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import jax
import numpy as np

from jaxfit._src.runner.schema import (
    ConfigError,
    NonEmptyWidths,
    PositiveInt,
    Rate,
    Widths,
)

MSG_NO_FLAX = (
    "The built-in models (mlp, cnn, resnet) are Flax modules: pip install flax "
    "(in jaxfit-trainer's run and flax extras)."
)


def _linen() -> Any:
    try:
        import flax.linen as nn
    except ImportError as error:
        raise ImportError(MSG_NO_FLAX) from error
    return nn


# Flax Linen activations that take one array (``mlp``'s ``activation``).
Activation = Literal[
    "relu",
    "relu6",
    "gelu",
    "silu",
    "swish",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "softplus",
    "soft_sign",
    "log_sigmoid",
    "hard_tanh",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
]


def _images(name: str, sample_x: Any) -> None:
    """Conv nets take ``(n, height, width, channels)`` arrays."""
    leaves = jax.tree.leaves(sample_x)
    shape = np.shape(leaves[0]) if len(leaves) == 1 else None
    if shape is None or len(shape) != 4:
        got = (
            f"x of shape {tuple(shape)}"
            if shape is not None
            else f"x with {len(leaves)} arrays"
        )
        raise ConfigError(
            f"model.name: expected data of images (n, height, width, channels) for "
            f"{name!r}, got {got}. For digits set data.args.as_images: true, or use "
            "the mlp."
        )


def _memory_limit() -> tuple[int | None, str]:
    """The bytes one device holds (JAX's ``bytes_limit``), else the host's
    physical memory (CPU), with words for the message."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the memory of one {device.platform} device"
    try:
        return (
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "the host's memory",
        )
    except (AttributeError, ValueError, OSError):
        return None, ""


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} PiB"  # not reached


def _check_size(
    module: Any, sample_x: Any, blame: Callable[[str], tuple[str, Any]]
) -> None:
    """Refuses a model whose variables do not fit in memory, before any is made.

    ``blame(layer)`` names the ``model.args`` key and value behind a top-level
    layer (``"Dense_0"``) of the module.

    Raises:
      ConfigError: naming that key, the largest layer and both sizes.
    """
    limit, where = _memory_limit()
    if limit is None:
        return
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(
        lambda x: module.init({"params": key, "dropout": key}, x), sample_x
    )
    leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
    sizes = [
        (int(np.prod(leaf.shape, dtype=np.float64)) * leaf.dtype.itemsize, path, leaf)
        for path, leaf in leaves
    ]
    total = sum(size for size, _, _ in sizes)
    if total <= limit:
        return
    largest, path, leaf = max(sizes, key=lambda item: item[0])
    names = [str(getattr(entry, "key", entry)) for entry in path]
    layer = names[1] if len(names) > 1 else names[0]  # past "params"
    arg, value = blame(layer)
    count = sum(int(np.prod(leaf.shape, dtype=np.float64)) for _, _, leaf in sizes)
    raise ConfigError(
        f"{arg}: expected a model whose parameters fit in {where} "
        f"({_size(limit)}), got {value!r} ({type(value).__name__}): "
        f"{'/'.join(names[1:])} alone is {tuple(leaf.shape)} ({_size(largest)}), "
        f"the model {count:.3g} parameters ({_size(total)}); make it smaller"
    )


def _adapt(
    module: Any,
    sample_x: Any,
    seed: int,
    blame: Callable[[str], tuple[str, Any]],
) -> Any:
    from jaxfit._src.adapters.flax_linen import from_flax

    _check_size(module, sample_x, blame)
    return from_flax(module, sample_x, seed=seed)


def _by_index(
    prefix: str, key: str, values: Any, others: dict[str, tuple[str, Any]]
) -> Callable[[str], tuple[str, Any]]:
    """``blame`` for layers ``<prefix>_<i>`` made from ``values[i]`` (the
    ``model.args`` key ``key``); ``others`` names the rest."""

    def blame(layer: str) -> tuple[str, Any]:
        name, _, index = layer.rpartition("_")
        if name == prefix and index.isdigit() and int(index) < len(values):
            return f"{key}[{index}]", values[int(index)]
        return others.get(layer, (key, list(values)))

    return blame


def mlp(
    *,
    sample_x: Any,
    num_outputs: int,
    seed: int = 0,
    hidden: Widths = (128,),
    dropout: Rate = 0.0,
    activation: Activation = "relu",
) -> Any:
    """Dense layers of sizes ``hidden`` (inputs flattened), ``dropout`` after each."""
    nn: Any = _linen()
    act = getattr(nn, activation)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = x.reshape((x.shape[0], -1))
            for size in hidden:
                x = act(nn.Dense(size)(x))
                if dropout:
                    x = nn.Dropout(dropout, deterministic=not train)(x)
            return nn.Dense(num_outputs)(x)

    return _adapt(
        MLP(), sample_x, seed, _by_index("Dense", "model.args.hidden", hidden, {})
    )


def cnn(
    *,
    sample_x: Any,
    num_outputs: int,
    seed: int = 0,
    channels: Widths = (16, 32),
    dense: PositiveInt = 64,
    dropout: Rate = 0.0,
) -> Any:
    """3x3 conv + ReLU + 2x2 average pool per entry of ``channels``, then dense."""
    _images("cnn", sample_x)
    nn: Any = _linen()

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            for width in channels:
                x = nn.relu(nn.Conv(width, (3, 3))(x))
                if x.shape[1] >= 2 and x.shape[2] >= 2:
                    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = x.reshape((x.shape[0], -1))
            x = nn.relu(nn.Dense(dense)(x))
            if dropout:
                x = nn.Dropout(dropout, deterministic=not train)(x)
            return nn.Dense(num_outputs)(x)

    others = {"Dense_0": ("model.args.dense", dense)}
    blame = _by_index("Conv", "model.args.channels", channels, others)
    return _adapt(CNN(), sample_x, seed, blame)


def resnet(
    *,
    sample_x: Any,
    num_outputs: int,
    seed: int = 0,
    stage_channels: NonEmptyWidths = (16, 32, 64),
    blocks_per_stage: PositiveInt = 1,
) -> Any:
    """A ResNet-style CNN: a conv stem, then per stage ``blocks_per_stage``
    residual blocks (conv-BN-ReLU-conv-BN + shortcut; stride 2 from the second
    stage), global average pooling and a dense head. Batch-norm statistics are
    model state."""
    _images("resnet", sample_x)
    nn: Any = _linen()

    class Block(nn.Module):
        width: int
        stride: int

        @nn.compact
        def __call__(self, x, train: bool):
            def norm():
                return nn.BatchNorm(use_running_average=not train, momentum=0.9)

            y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), use_bias=False)(
                x
            )
            y = nn.relu(norm()(y))
            y = norm()(nn.Conv(self.width, (3, 3), use_bias=False)(y))
            if x.shape != y.shape:
                x = nn.Conv(
                    self.width, (1, 1), (self.stride, self.stride), use_bias=False
                )(x)
                x = norm()(x)
            return nn.relu(x + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(stage_channels[0], (3, 3), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            for stage, width in enumerate(stage_channels):
                for block in range(blocks_per_stage):
                    stride = 2 if stage > 0 and block == 0 else 1
                    x = Block(width, stride)(x, train)
            x = x.mean(axis=(1, 2))
            return nn.Dense(num_outputs)(x)

    def blame(layer: str) -> tuple[str, Any]:
        del layer  # every layer's width is one of stage_channels
        return "model.args.stage_channels", list(stage_channels)

    return _adapt(ResNet(), sample_x, seed, blame)


MODELS: dict[str, Callable[..., Any]] = {"mlp": mlp, "cnn": cnn, "resnet": resnet}
