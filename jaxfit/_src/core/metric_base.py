"""The metric object protocol: CLU-style accumulators with ``empty / update / merge /
compute``, and ``MetricState``, the state of a metric that is not a plain mean.

A metric object is an immutable configuration (``name`` and Keras' arguments).
``build(y_true, y_pred)`` reads the shapes of one output (a class count, say) and
returns the configured metric ready to accumulate; ``empty()`` is its zeroed state,
``update(state, y_true, y_pred, sample_weight)`` adds a batch, ``merge`` adds two
states and ``compute(state)`` gives the value. All are pure and jit-able.

Every state is a pytree of sums (weighted counts): the merge of two states is
their leafwise sum, so a state accumulates across the batches of a compiled
block, across blocks and, under data parallelism, across devices (the batch
axis is sharded; the sums over it are reduced by XLA). ``compute`` runs on the
device or on the host: given numpy arrays it computes with numpy, so the
driver turns fetched totals into floats at a yield point with no further
transfer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def xp(*arrays: Any) -> Any:
    """``numpy`` when every array is a host (numpy) array, else ``jax.numpy``."""
    if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays):
        return np
    return jnp


def divide_no_nan(a: Any, b: Any) -> Any:
    """``a / b``, and 0 where ``b`` is 0 (Keras' ``ops.divide_no_nan``)."""
    m = xp(a, b)
    nonzero = b != 0
    return m.where(nonzero, a / m.where(nonzero, b, 1), 0).astype(np.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MetricState:
    """The state of a metric object: named sums, and the metric (static) that
    reads them.

    Attributes:
      sums: float32 arrays of weighted counts, e.g. ``true_positives`` per
        threshold; the merge of two states adds them.
      metric: the built metric object (static pytree data: it is part of the
        tree structure, so the compiled step sees it as a constant).
    """

    sums: dict[str, Any]
    metric: Any = dataclasses.field(metadata=dict(static=True))

    def compute(self) -> Any:
        """The metric's value from these sums (device or host arrays).

        Returns:
          A float32 scalar, or a vector for a per-class / per-threshold result.
        """
        return self.metric.compute(self)


class Metric:
    """Base of jaxfit's metric objects (as ``keras.metrics.Metric``).

    Subclasses set ``name`` and implement ``_config`` (what makes two instances
    equal), ``empty``, ``update`` and ``compute``; ``build`` reads the data's
    shapes when the metric needs them. A metric whose value is a vector of ``n``
    entries sets ``size = n`` in ``build``; its log keys are ``<name>_0`` ...
    ``<name>_<n-1>`` (``History`` holds floats).

    Attributes:
      name: the log key (an output's name is prefixed in multi-output models).
      size: ``None`` for a scalar value, else the length of the value vector.
      direction: ``"up"`` when higher is better, ``"down"`` when lower is, or
        ``None`` (unknown): what ``mode="auto"`` of a monitor reads, as Keras'
        ``_direction``.
    """

    name: str
    size: int | None = None
    direction: str | None = None

    def _config(self) -> tuple[Any, ...]:
        return (self.name, self.size)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash((type(self), self._config()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def build(self, y_true: Any, y_pred: Any) -> Metric:
        """The metric ready for data of these shapes (``self`` if no shape matters).

        Args:
          y_true: the labels of one output (an array or ``jax.ShapeDtypeStruct``,
            batch axis first).
          y_pred: the model's output for it (shapes only are read).

        Returns:
          The built metric; a ``ValueError`` names ``metrics`` on shapes it
          cannot read.
        """
        del y_true, y_pred
        return self

    def empty(self) -> Any:
        """The zeroed state.

        Returns:
          The state before any batch.
        """
        raise NotImplementedError

    def update(self, state: Any, y_true: Any, y_pred: Any, sample_weight: Any) -> Any:
        """``state`` with one batch added.

        Args:
          state: the state so far.
          y_true: the batch's labels.
          y_pred: the batch's predictions.
          sample_weight: per-sample weights, shape ``(batch,)`` (0 for padding).

        Returns:
          The new state.
        """
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        """Two states combined (their sums added).

        Args:
          a: a state.
          b: another state of this metric.

        Returns:
          The state of both.
        """
        return jax.tree.map(lambda u, v: u + v, a, b)

    def compute(self, state: Any) -> Any:
        """The metric's value.

        Args:
          state: the accumulated state (device or host arrays).

        Returns:
          A float32 scalar (or vector, see ``size``).
        """
        raise NotImplementedError

    def _state(self, **sums: Any) -> MetricState:
        return MetricState(
            {k: jnp.asarray(v, jnp.float32) for k, v in sums.items()}, self
        )

    def _zeros(self, shape: tuple[int, ...], *names: str) -> MetricState:
        return self._state(**{n: jnp.zeros(shape, jnp.float32) for n in names})

    def _added(self, state: MetricState, **batch: Any) -> MetricState:
        return MetricState(
            {k: state.sums[k] + jnp.asarray(v, jnp.float32) for k, v in batch.items()},
            state.metric,
        )
