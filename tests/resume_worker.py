"""A training run for the resume tests, run in a subprocess (not a test module).

    python resume_worker.py OUT BACKUP_DIR SAVE_FREQ KILL [WRITE]

trains a model with every kind of state a resume must carry (dropout keys, a
batch-norm-like running mean, an optimizer with a schedule and an injected
learning rate, ReduceLROnPlateau, EarlyStopping with restore_best_weights,
validation) under BackupAndRestore, and writes the final state and History to OUT.
KILL is "none", "epoch:E" (SIGKILL at the start of epoch E, once a backup taken at
the end of epoch E-1 is on disk) or "batch:E:B:DONE" (SIGKILL after batch B of epoch
E, once a backup taken after DONE batches of epoch E is on disk) or "backup:E"
(SIGKILL the moment BackupAndRestore's ``on_epoch_end`` of epoch E returns, without
waiting for anything). WRITE is "sync" (the default) or "background", for
BackupAndRestore's ``write_in_background``.
"""

import json
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit


def apply(params, x, *, train, rng, state):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    if train:
        mean = jnp.mean(h, axis=0)
        state = {"mean": 0.9 * state["mean"] + 0.1 * mean}
        keep = jax.random.bernoulli(rng, 0.8, h.shape)
        h = jnp.where(keep, h / 0.8, 0.0) - mean
    else:
        h = h - state["mean"]
    return h @ params["w2"], state


def make_trainer():
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 8)) * 0.5, jnp.float32),
        "b1": jnp.zeros((8,), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(8, 1)) * 0.5, jnp.float32),
    }
    optimizer = optax.chain(
        optax.scale_by_schedule(optax.exponential_decay(1.0, 10, 0.9)),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.05),
    )
    return jaxfit.Trainer(
        apply,
        params,
        optimizer=optimizer,
        loss="mse",
        metrics=["mae"],
        state={"mean": jnp.zeros((8,), jnp.float32)},
        seed=3,
    )


def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    return x, np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)


def _backup_at(backup_dir, epoch, batch):
    """True once a complete backup taken at (epoch, batch) is on disk."""
    if not os.path.isdir(backup_dir):
        return False
    for name in os.listdir(backup_dir):
        meta = os.path.join(backup_dir, name, "metadata.json")
        if name.startswith("backup-") and os.path.isfile(meta):
            with open(meta, encoding="utf-8") as f:
                position = json.load(f)["position"]
            if (position["epoch"], position["batch"]) == (epoch, batch):
                return True
    return False


class Killer(jaxfit.callbacks.Callback):
    def __init__(self, spec, backup_dir):
        super().__init__()
        self.spec = spec.split(":")
        self.backup_dir = backup_dir

    def _die_once(self, epoch, batch):
        deadline = time.monotonic() + 60
        while not _backup_at(self.backup_dir, epoch, batch):
            if time.monotonic() > deadline:
                raise RuntimeError("no backup appeared")
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        if self.spec[0] == "epoch" and epoch == int(self.spec[1]):
            self._die_once(epoch, 0)

    def on_train_batch_end(self, batch, logs=None):
        if self.spec[0] == "batch":
            epoch, at, done = map(int, self.spec[1:])
            if self.trainer.session.position.epoch == epoch and batch == at:
                self._die_once(epoch, done)


class KillAfterBackup(jaxfit.callbacks.BackupAndRestore):
    """SIGKILL as soon as the backup hook of epoch ``kill_epoch`` returns."""

    def __init__(self, *args, kill_epoch, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_epoch = kill_epoch

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == self.kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class Recorder(jaxfit.callbacks.Callback):
    """What this process ran: the epochs it began and the first batch it saw."""

    def __init__(self):
        super().__init__()
        self.epochs, self.first_batch = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.first_batch is None:
            self.first_batch = batch


def main(out, backup_dir, save_freq, kill, write="sync"):
    save_freq = save_freq if save_freq == "epoch" else int(save_freq)
    trainer = make_trainer()
    recorder = Recorder()
    backup = {"save_freq": save_freq, "write_in_background": write == "background"}
    if kill.startswith("backup:"):
        backup = KillAfterBackup(backup_dir, kill_epoch=int(kill[7:]), **backup)
        kill = "none"
    else:
        backup = jaxfit.callbacks.BackupAndRestore(backup_dir, **backup)
    callbacks = [
        recorder,
        backup,
        jaxfit.callbacks.EarlyStopping(
            monitor="val_loss", patience=50, restore_best_weights=True
        ),
        jaxfit.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=0.5, patience=1, min_delta=0.05
        ),
    ]
    if kill != "none":
        callbacks.append(Killer(kill, backup_dir))
    x, y = data()
    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=4,
        validation_split=0.2,
        callbacks=callbacks,
        verbose=0,
        yield_every="batch",
    )
    os.makedirs(out, exist_ok=True)
    leaves = {
        str(i): np.asarray(leaf)
        for i, leaf in enumerate(jax.tree.leaves(trainer.state))
    }
    np.savez(os.path.join(out, "state.npz"), **leaves)
    with open(os.path.join(out, "run.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "history": history.history,
                "epoch": history.epoch,
                "ran": recorder.epochs,
                "first_batch": recorder.first_batch,
                "backup_left": os.path.exists(backup_dir),
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
