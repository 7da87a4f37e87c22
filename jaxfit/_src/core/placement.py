"""Placement: the device mesh, where the state lives, how batches are split.

Data parallelism is part of the compiled step (``jax.jit`` with shardings), not
hand-written collectives. Every trainer has a mesh: ``mesh="auto"`` is a 1-D
mesh over all devices (``jax.devices()``: every local device in one process,
every device of every process under ``jax.distributed``), ``mesh=None`` a mesh of
one device, or the user's ``jax.sharding.Mesh``. Params and optimizer state are
replicated, or sharded by ``param_sharding`` rules; batches are split along the
mesh's data axis; everything else (step, rng, totals, logs) is replicated. The
loss is the same global sample-weighted mean on any number of devices.

A batch is padded (and masked) to a multiple of the data-axis size, so any batch
size works. Each process feeds only its own rows of each global batch
(``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import math
from typing import Any, cast

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxfit._src import errors

ParamSharding = Any  # None | pytree of PartitionSpec | (path, leaf) -> PartitionSpec


def make_mesh(mesh: Any, data_axis: str) -> Mesh:
    """Resolves ``Trainer(mesh=...)``."""
    if not isinstance(data_axis, str):
        raise TypeError(
            errors.expected("data_axis", "a mesh axis name (str)", data_axis)
        )
    if isinstance(mesh, Mesh):
        if data_axis not in mesh.axis_names:
            raise ValueError(
                errors.expected(
                    "data_axis",
                    f"one of the mesh's axis names {mesh.axis_names}",
                    data_axis,
                )
            )
        return mesh
    if mesh == "auto":
        return Mesh(np.array(jax.devices()), (data_axis,))
    if mesh is None:
        return Mesh(np.array(jax.devices()[:1]), (data_axis,))
    raise ValueError(
        errors.expected(
            "mesh",
            "'auto' (all devices), None (one device) or a jax.sharding.Mesh",
            mesh,
        )
    )


class Placement:
    """Shardings of the state and of batches, for one mesh."""

    def __init__(
        self,
        mesh: Any = "auto",
        data_axis: str = "data",
        param_sharding: ParamSharding = None,
    ):
        self.mesh = make_mesh(mesh, data_axis)
        self.data_axis = data_axis
        self.param_sharding = param_sharding
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.num_shards = int(self.mesh.shape[data_axis])
        # a streamed batch is one process's rows: padded to its share of the axis
        self.local_multiple = max(1, self.num_shards // jax.process_count())
        self.multiprocess = jax.process_count() > 1

    # -- state -------------------------------------------------------------------
    def param_specs(self, params: Any) -> Any:
        """A PartitionSpec per params leaf (replicated unless the rules say more)."""
        rules = self.param_sharding
        if rules is None:
            return jax.tree.map(lambda _: PartitionSpec(), params)
        if callable(rules) and not isinstance(rules, PartitionSpec):

            def spec(path, leaf):
                result = rules(path, leaf)
                return PartitionSpec() if result is None else result

            specs = jax.tree_util.tree_map_with_path(spec, params)
        else:
            try:
                specs = jax.tree.map(
                    lambda _, s: s,
                    params,
                    rules,
                    is_leaf=lambda s: isinstance(s, PartitionSpec),
                )
            except ValueError:
                raise ValueError(
                    errors.expected(
                        "param_sharding",
                        "a pytree of PartitionSpec structured like the "
                        "params, or a function (path, leaf) -> PartitionSpec",
                        rules,
                    )
                ) from None
        for leaf in jax.tree.leaves(
            specs, is_leaf=lambda s: isinstance(s, PartitionSpec)
        ):
            if not isinstance(leaf, PartitionSpec):
                raise TypeError(
                    errors.expected("param_sharding", "PartitionSpec values", leaf)
                )
        return specs

    def state_shardings(
        self, state: Any, optimizer: optax.GradientTransformation | None
    ) -> Any:
        """Shardings for a whole TrainState: params by the rules, the optimizer's
        param-shaped leaves like their params, the rest replicated."""
        specs = self.param_specs(state.params)
        is_spec = lambda s: isinstance(s, PartitionSpec)  # noqa: E731
        try:
            if optimizer is None:  # a trainer for inference: no optimizer state
                raise ValueError
            opt_specs = optax.tree_map_params(
                optimizer,
                lambda _, spec: spec,
                state.opt_state,
                specs,
                transform_non_params=lambda _: PartitionSpec(),
                is_leaf=is_spec,
            )
        except (ValueError, TypeError):  # an optimizer state optax cannot walk
            opt_specs = jax.tree.map(lambda _: PartitionSpec(), state.opt_state)
        named = lambda s: NamedSharding(self.mesh, s)  # noqa: E731
        shardings = jax.tree.map(lambda _: self.replicated, state)
        return shardings.replace(
            params=jax.tree.map(named, specs, is_leaf=is_spec),
            opt_state=jax.tree.map(named, opt_specs, is_leaf=is_spec),
        )

    def place(self, tree: Any, shardings: Any) -> Any:
        """A copy of ``tree`` on ``shardings`` (a copy: donation never consumes the
        caller's arrays). Host arrays are put; device arrays are resharded."""
        if not self.multiprocess:
            return jax.tree.map(
                lambda a, s: jax.device_put(a, s, may_alias=False), tree, shardings
            )

        def put(leaf, sharding):  # every process holds the same full value
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                return jax.device_put(leaf, sharding, may_alias=False)
            host = np.asarray(leaf)
            return jax.make_array_from_callback(
                host.shape, sharding, lambda index: host[index]
            )

        return jax.tree.map(put, tree, shardings)

    # -- batches -------------------------------------------------------------------
    def padded(self, batch_size: int) -> int:
        """The global batch size rounded up to a multiple of the data-axis size."""
        return math.ceil(batch_size / self.num_shards) * self.num_shards

    def batch_sharding(self, ndim_prefix: int = 1) -> NamedSharding:
        """Split along the batch axis, after ``ndim_prefix - 1`` leading axes."""
        return NamedSharding(
            self.mesh, PartitionSpec(*([None] * (ndim_prefix - 1)), self.data_axis)
        )

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process feeds."""
        if not self.multiprocess:
            return slice(0, batch_size)
        indices = cast(
            "dict[Any, tuple[slice, ...]]",  # every device holds rows
            self.batch_sharding().addressable_devices_indices_map((batch_size,)),
        )
        starts = [index[0].start or 0 for index in indices.values()]
        stops = [
            batch_size if index[0].stop is None else index[0].stop
            for index in indices.values()
        ]
        return slice(min(starts), max(stops))

    def put_block(self, block: Any, global_batch: int) -> Any:
        """A host block ``[K, rows, ...]`` (this process's rows) onto the mesh."""
        return self._put(block, global_batch, leading=1)

    def put_batch(self, batch: Any, global_batch: int) -> Any:
        """A host batch ``[rows, ...]`` (this process's rows) onto the mesh."""
        return self._put(batch, global_batch, leading=0)

    def _put(self, tree: Any, global_batch: int, leading: int) -> Any:
        """Split along the batch axis, after ``leading`` axes; each process's
        rows make the global batch of ``global_batch`` rows."""
        sharding = self.batch_sharding(leading + 1)
        if not self.multiprocess:
            return jax.device_put(tree, sharding)
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(
                sharding, a, (*a.shape[:leading], global_batch, *a.shape[leading + 1 :])
            ),
            tree,
        )


def fetch(tree: Any) -> Any:
    """Host numpy values of replicated (or fully addressable) arrays."""

    def host(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))  # replicated: any shard
        return np.asarray(leaf)

    return jax.tree.map(host, jax.device_get(tree) if not _any_global(tree) else tree)


def _any_global(tree: Any) -> bool:
    return any(
        isinstance(a, jax.Array) and not a.is_fully_addressable
        for a in jax.tree.leaves(tree)
    )


def agree(flag: bool) -> bool:
    """Process 0's value of ``flag`` on every process (stop_training)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def gather(tree: Any) -> Any:
    """Full host values of batch-sharded outputs (predict), on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
