"""Built-in models on Flax Linen, trained through ``jaxfit.from_flax``.

``mlp`` (dense layers, optional dropout), ``cnn`` (a small conv net) and
``resnet`` (a ResNet-style CNN with batch norm). Each builder takes its
architecture arguments from ``model.args`` plus ``sample_x``, ``num_outputs`` and
``seed`` from the runner, and returns a ``jaxfit.Model``. Flax is the optional
``flax`` extra (included in ``run``); it is imported when a model is built.

The signatures are the spec of ``model.args``: their annotations (``PositiveInt``,
``Rate``..., from ``schema``) are checked at validate time with the key path,
e.g. ``model.args.hidden[1]: expected a positive integer, got 0 (int)``.
"""

from __future__ import annotations

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
    "The built-in models (mlp, cnn, resnet) are Flax modules: pip install "
    "'jaxfit[run]' (or 'jaxfit[flax]')."
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


def _adapt(module: Any, sample_x: Any, seed: int) -> Any:
    from jaxfit._src.adapters.flax_linen import from_flax

    return from_flax(module, sample_x, seed=seed)


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

    return _adapt(MLP(), sample_x, seed)


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

    return _adapt(CNN(), sample_x, seed)


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

    return _adapt(ResNet(), sample_x, seed)


MODELS: dict[str, Callable[..., Any]] = {"mlp": mlp, "cnn": cnn, "resnet": resnet}
