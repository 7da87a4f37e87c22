"""One of two processes saving and restoring checkpoints, for
test_multiprocess_checkpoint.py (run in a subprocess; not a test module).

    python ckpt_worker.py PORT RANK OUT

Two processes with two CPU devices each train a model whose params are split
between the processes (each process holds, and writes, only its half), under a
BackupAndRestore that records what is on disk the moment its hook returns and a
ModelCheckpoint writing in the background, then save with ``trainer.save`` and
load the checkpoint back. Checkpoints go to ``OUT/ckpts``; the process writes
``OUT/result-RANK.json``.
"""

import json
import os
import sys
import traceback

os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

import jaxfit


def apply(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def placement():
    # "model" spans the processes: model shard j lives on process j's two devices.
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2).T, ("data", "model"))
    rules = {
        "w1": PartitionSpec(None, "model"),
        "b1": PartitionSpec("model"),
        "w2": PartitionSpec("model", None),
    }
    return {"mesh": mesh, "param_sharding": rules}


def trainer():
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(3, 8)).astype(np.float32) * 0.5,
        "b1": np.zeros((8,), np.float32),
        "w2": rng.normal(size=(8, 1)).astype(np.float32) * 0.5,
    }
    return jaxfit.Trainer(
        apply, params, optimizer=optax.adam(0.05), loss="mse", seed=0, **placement()
    )


def listing(directory):
    """The directory's entries but jaxfit's marker file."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if name != ".jaxfit")


class Backup(jaxfit.callbacks.BackupAndRestore):
    """Records the backup directory the moment the backup hook returns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        complete = os.path.isfile(
            os.path.join(self.backup_dir, f"backup-{epoch}", "metadata.json")
        )
        self.seen.append([listing(self.backup_dir), complete])


def shards(tree):
    """This process's shards of every leaf, as host arrays."""
    return [
        np.asarray(shard.data)
        for leaf in jax.tree.leaves(tree)
        for shard in sorted(leaf.addressable_shards, key=lambda s: str(s.index))
    ]


def main(port, rank, out):
    jaxfit.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=int(rank)
    )
    assert jax.process_count() == 2 and jax.device_count() == 4
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)

    t = trainer()
    w1 = t.params["w1"]
    assert not w1.is_fully_addressable and len(w1.addressable_shards) == 2
    ckpts = os.path.join(out, "ckpts")
    backup = Backup(os.path.join(ckpts, "backup"), delete_checkpoint=False)
    checkpoint = jaxfit.callbacks.ModelCheckpoint(
        os.path.join(ckpts, "mc-{epoch}"), max_to_keep=1, write_in_background=True
    )
    history = t.fit(
        x, y, batch_size=8, epochs=3, verbose=0, callbacks=[backup, checkpoint]
    )
    trained = listing(ckpts)  # fit has waited for the background write

    path = os.path.join(ckpts, "ckpt")
    t.save(path)
    saved = listing(ckpts)  # the moment save returned, on this process

    loaded = jaxfit.Trainer.load(
        path, apply, optimizer=optax.adam(0.05), loss="mse", **placement()
    )
    same = all(
        np.array_equal(a, b)
        for a, b in zip(shards(t.state), shards(loaded.state), strict=True)
    )
    background = jaxfit.Trainer.load(
        os.path.join(ckpts, "mc-3"),
        apply,
        optimizer=optax.adam(0.05),
        loss="mse",
        **placement(),
    )
    result = {
        "history": history.history,
        "backups": backup.seen,
        "saved": saved,
        "trained": trained,
        "background_step": int(background.state.step.addressable_data(0)),
        "save_complete": os.path.isfile(os.path.join(path, "metadata.json")),
        "restored_equal": same,
        "step": int(loaded.state.step.addressable_data(0)),
    }
    with open(os.path.join(out, f"result-{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except BaseException:  # noqa: BLE001 - exit now: jax.distributed's shutdown would wait for
        traceback.print_exc()  # the other process, itself waiting at a barrier
        sys.stderr.flush()
        os._exit(1)
