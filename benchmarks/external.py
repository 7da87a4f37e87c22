"""The benchmark in two other frameworks' own idioms: Keras 3 and Flax NNX.

Both build the workload's model (see ``workloads.py``) in their own API and train
it the way each framework's documentation does it, so that their rows compare the
frameworks as people use them, not a JAX loop written in their syntax.

``keras_fit``
    Keras 3 on the JAX backend: a ``keras.Sequential`` MLP or a functional-API
    ResNet, ``compile(jit_compile=True, steps_per_execution=...)`` and
    ``model.fit`` on the numpy arrays. A ``keras.callbacks.Callback`` times each
    epoch (Keras turns the epoch logs into Python floats before
    ``on_epoch_end``, so the epoch's work is finished there). The callbacks
    workload adds a per-batch callback that reads ``logs["loss"]`` as a float,
    with the progress bar on (``verbose=1``, printed to os.devnull).

    With ``stream`` it trains on a stream of the JAX rows' batches instead
    (``epochs(e)``: epoch ``e``'s numpy batches, built by ``impls.py``), the same
    model, compile and callbacks: ``"gen"`` (``keras-gen``) is a Python generator
    yielding the epochs' batches one after another forever, with
    ``steps_per_epoch``; ``"pydataset"`` (``keras-pydataset``, and
    ``keras-pydataset-spe32`` with ``steps_per_execution=32``) is a
    ``keras.utils.PyDataset`` subclass (one thread, no workers: Keras's default)
    whose ``__getitem__(i)`` is batch ``i`` of the current epoch (``fit`` gets
    ``shuffle=False``: by default Keras shuffles a PyDataset's batch indices,
    and warns about a generator). The epoch is
    the ``EpochTimer``'s count of epochs begun (Keras also calls the dataset's
    ``on_epoch_begin``/``on_epoch_end`` while it builds the model, so counting
    those would skip epoch 0's order).

``flax_nnx``
    The hand-written loop of the Flax NNX MNIST tutorial: an ``nnx.Module``,
    ``nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)``, an ``@nnx.jit``
    ``train_step`` with ``nnx.value_and_grad`` and ``optimizer.update``, and an
    ``nnx.metrics.Average`` that accumulates the loss on the device (read once per
    epoch). Batches are numpy slices of a per-epoch permutation. The callbacks
    workload reads the loss as a float every step, which is what a per-batch
    callback costs in a hand-written loop.

Both match the shared JAX model: the MLP has glorot-uniform kernels and zero
biases; the CNN follows ``jaxfit._src.runner.zoo.resnet`` (Flax Linen defaults:
lecun-normal kernels, "SAME" padding, batch norm with momentum 0.9 and epsilon
1e-5). Loss: sparse categorical cross-entropy from logits; Adam(1e-3) (Keras's
epsilon set to optax's 1e-8); float32; seed 0. Keras and Flax are imported inside
the functions: they are optional, and the harness reports an ImportError as a
skipped row.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np

SEED = 0


# --------------------------------------------------------------------- Keras 3


def _keras_model(keras, spec):
    layers = keras.layers
    if spec["model"] == "mlp":
        sizes = spec["sizes"]
        hidden = [layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        # Keras's Dense defaults are already glorot-uniform kernels, zero biases.
        return keras.Sequential(
            [keras.Input((sizes[0],)), *hidden, layers.Dense(sizes[-1])]
        )

    # The ResNet with Flax Linen's defaults, to match zoo.resnet.
    def conv(width, kernel, stride=1):
        return layers.Conv2D(
            width,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="lecun_normal",
        )

    def norm():
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)

    channels = spec["channels"]
    inputs = keras.Input((spec["image"], spec["image"], 3))
    x = layers.ReLU()(norm()(conv(channels[0], 3)(inputs)))
    for stage, width in enumerate(channels):
        stride = 2 if stage > 0 else 1
        y = layers.ReLU()(norm()(conv(width, 3, stride)(x)))
        y = norm()(conv(width, 3)(y))
        if stride != 1 or x.shape[-1] != width:
            x = norm()(conv(width, 1, stride)(x))
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(spec["classes"], kernel_initializer="lecun_normal")(x)
    return keras.Model(inputs, outputs)


def keras_fit(
    spec: dict,
    x: np.ndarray,
    y: np.ndarray,
    timer,
    steps_per_execution: int = 1,
    stream: str | None = None,
    epochs=None,
) -> float:
    """Keras 3 ``model.fit`` (JAX backend) on the arrays, or on a ``stream``
    (``"gen"`` or ``"pydataset"``) of ``epochs(e)``'s batches; returns the last
    epoch's mean loss."""
    import keras

    assert keras.backend.backend() == "jax", "set KERAS_BACKEND=jax before import"
    keras.utils.set_random_seed(SEED)
    model = _keras_model(keras, spec)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
        steps_per_execution=steps_per_execution,
    )

    begun = [-1]  # the epoch being trained (for the PyDataset's order)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun[0] = epoch
            timer.begin()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # already a float: Keras synced for the logs
            timer.end()

    class ReadLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])

    callbacks, verbose = [EpochTimer()], 0
    with contextlib.ExitStack() as stack:
        if spec.get("callbacks"):
            callbacks, verbose = [*callbacks, ReadLoss()], 1
            devnull = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(devnull))
        if stream is None:
            data = {"x": x, "y": y, "batch_size": spec["batch"], "shuffle": True}
        elif stream == "gen":

            def forever():
                for epoch in itertools.count():
                    yield from epochs(epoch)

            data = {"x": forever(), "steps_per_epoch": len(epochs(0))}
        elif stream == "pydataset":
            data = {"x": _py_dataset(keras, epochs, lambda: max(begun[0], 0))}
        else:
            raise ValueError(f"stream: expected 'gen' or 'pydataset', got {stream!r}")
        if stream is not None:
            # The batches come in the epoch's order (fit's default shuffle=True
            # would reorder a PyDataset's batches and warn about a generator).
            data["shuffle"] = False
        history = model.fit(
            **data, epochs=spec["epochs"], verbose=verbose, callbacks=callbacks
        )
    return float(history.history["loss"][-1])


def _py_dataset(keras, epochs, current_epoch):
    """A ``keras.utils.PyDataset`` of ``epochs(current_epoch())``'s batches."""

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()  # workers=1, no multiprocessing: Keras's default

        def __len__(self):
            return len(epochs(0))

        def __getitem__(self, index):
            return epochs(current_epoch())[index]

    return EpochBatches()


# ------------------------------------------------------------------- Flax NNX


def _nnx_model(nnx, spec):
    rngs = nnx.Rngs(SEED)
    if spec["model"] == "mlp":

        class MLP(nnx.Module):
            def __init__(self, sizes, rngs):
                init = nnx.initializers.glorot_uniform()
                self.layers = nnx.List(
                    [
                        nnx.Linear(a, b, kernel_init=init, rngs=rngs)
                        for a, b in itertools.pairwise(sizes)
                    ]
                )

            def __call__(self, x):
                for layer in self.layers[:-1]:
                    x = nnx.relu(layer(x))
                return self.layers[-1](x)

        return MLP(spec["sizes"], rngs)

    def conv(cin, cout, kernel, stride=1):
        return nnx.Conv(
            cin, cout, (kernel, kernel), strides=stride, use_bias=False, rngs=rngs
        )

    def norm(width):
        return nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs)

    class Block(nnx.Module):
        def __init__(self, cin, width, stride):
            self.conv1, self.bn1 = conv(cin, width, 3, stride), norm(width)
            self.conv2, self.bn2 = conv(width, width, 3), norm(width)
            # A 1x1 conv + batch norm on the shortcut when the shape changes.
            reshape = stride != 1 or cin != width
            self.shortcut = (
                nnx.Sequential(conv(cin, width, 1, stride), norm(width))
                if reshape
                else None
            )

        def __call__(self, x):
            y = nnx.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.shortcut is not None:
                x = self.shortcut(x)
            return nnx.relu(x + y)

    class ResNet(nnx.Module):
        def __init__(self, channels, classes):
            self.stem, self.stem_bn = conv(3, channels[0], 3), norm(channels[0])
            widths = [channels[0], *channels]
            self.blocks = nnx.List(
                [
                    Block(cin, width, 2 if stage > 0 else 1)
                    for stage, (cin, width) in enumerate(itertools.pairwise(widths))
                ]
            )
            self.head = nnx.Linear(channels[-1], classes, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.stem_bn(self.stem(x)))
            for block in self.blocks:
                x = block(x)
            return self.head(x.mean(axis=(1, 2)))

    return ResNet(spec["channels"], spec["classes"])


def flax_nnx(spec: dict, x: np.ndarray, y: np.ndarray, timer) -> float:
    """The Flax NNX tutorial loop; returns the last epoch's mean loss."""
    import optax
    from flax import nnx

    model = _nnx_model(nnx, spec)
    model.train()  # batch norm uses (and updates) batch statistics
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    metrics = nnx.metrics.Average("loss")

    def loss_fn(model, images, labels):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @nnx.jit
    def train_step(model, optimizer, metrics, images, labels):
        loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
        optimizer.update(model, grads)
        metrics.update(loss=loss)
        return loss

    rng = np.random.default_rng(SEED)
    batch, n = spec["batch"], len(x)
    sync_every_step = bool(spec.get("callbacks"))
    loss = float("nan")
    for _ in range(spec["epochs"]):
        timer.begin()
        perm = rng.permutation(n)
        xs, ys = x[perm], y[perm]
        metrics.reset()
        # The last ragged batch is dropped, as the tutorial's
        # `batch(..., drop_remainder=True)` does (no workload has one).
        for start in range(0, n - batch + 1, batch):
            step_loss = train_step(
                model,
                optimizer,
                metrics,
                xs[start : start + batch],
                ys[start : start + batch],
            )
            if sync_every_step:
                float(step_loss)
        loss = float(metrics.compute())  # the one device -> host read per epoch
        timer.end()
    return loss
