"""ModelCheckpoint and BackupAndRestore, in process (the SIGKILL tests are in
test_resume.py)."""

import os

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit
from jaxfit.callbacks import BackupAndRestore, Callback, ModelCheckpoint

pytest.importorskip(
    "orbax.checkpoint", reason="checkpoints are the optional ckpt extra"
)

X, Y = regression_data(n=40)


def _trainer(lr=0.05, optimizer=None):
    return jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optimizer or optax.adam(lr),
        loss="mse",
        metrics=["mae"],
    )


def _loaded(path, optimizer=None):
    return jaxfit.Trainer.load(
        path, linear_apply, optimizer=optimizer or optax.adam(0.05), loss="mse"
    )


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class Interrupt(Callback):
    """Raises KeyboardInterrupt after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt


class Params(Callback):
    """Keeps a host copy of the params at each epoch end."""

    def __init__(self):
        super().__init__()
        self.by_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch[epoch] = jax.device_get(self.trainer.params)


# -- ModelCheckpoint ----------------------------------------------------------------


def test_filepath_is_formatted_from_the_epoch_and_logs(tmp_path):
    trainer = _trainer()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}")
    history = trainer.fit(
        X,
        Y,
        batch_size=8,
        epochs=3,
        validation_split=0.25,
        verbose=0,
        callbacks=[ModelCheckpoint(pattern)],
    )
    expected = [
        f"ckpt-{e + 1:02d}-{v:.3f}"
        for e, v in zip(history.epoch, history.history["val_loss"])
    ]
    assert sorted(os.listdir(tmp_path)) == expected
    _equal(_loaded(tmp_path / expected[-1]).state, trainer.state)


@pytest.mark.parametrize("write_in_background", [False, True])
def test_max_to_keep_keeps_the_newest(tmp_path, write_in_background):
    keeper = Params()
    checkpoint = ModelCheckpoint(
        str(tmp_path / "ckpt-{epoch}"),
        max_to_keep=2,
        write_in_background=write_in_background,
    )
    _trainer().fit(
        X, Y, batch_size=8, epochs=5, verbose=0, callbacks=[keeper, checkpoint]
    )
    assert sorted(os.listdir(tmp_path)) == ["ckpt-4", "ckpt-5"]
    assert checkpoint.kept == [str(tmp_path / "ckpt-4"), str(tmp_path / "ckpt-5")]
    _equal(_loaded(tmp_path / "ckpt-4").params, keeper.by_epoch[3])


def test_a_checkpoint_is_complete_when_its_hook_returns(tmp_path):
    seen = []

    class Watched(ModelCheckpoint):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            seen.append(
                [
                    name
                    for name in sorted(os.listdir(tmp_path))
                    if os.path.isfile(tmp_path / name / "metadata.json")
                ]
            )

    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[Watched(str(tmp_path / "ckpt-{epoch}"), max_to_keep=2)],
    )
    assert seen == [["ckpt-1"], ["ckpt-1", "ckpt-2"], ["ckpt-2", "ckpt-3"]]


def _neg_mse(y_true, y_pred):
    """A "higher is better" metric, logged as ``neg`` (to exercise mode="max")."""
    return -((y_true - y_pred) ** 2).mean(axis=-1)


_neg_mse.__name__ = "neg"


@pytest.mark.parametrize(
    "monitor,mode", [("val_loss", "auto"), ("val_mae", "min"), ("val_neg", "max")]
)
def test_save_best_only_keeps_the_best_epoch(tmp_path, monitor, mode):
    keeper = Params()
    # A large learning rate makes the validation values go up and down.
    trainer = jaxfit.Trainer(
        linear_apply,
        linear_params(),
        optimizer=optax.adam(0.9),
        loss="mse",
        metrics=["mae", _neg_mse],
    )
    checkpoint = ModelCheckpoint(
        str(tmp_path / "best"), monitor=monitor, mode=mode, save_best_only=True
    )
    history = trainer.fit(
        X,
        Y,
        batch_size=8,
        epochs=6,
        validation_split=0.25,
        verbose=0,
        callbacks=[keeper, checkpoint],
    )
    series = history.history[monitor]
    best = int(np.argmax(series) if mode == "max" else np.argmin(series))
    assert best != len(series) - 1  # the test needs a best that is not the last
    assert os.listdir(tmp_path) == ["best"]
    _equal(_loaded(tmp_path / "best").params, keeper.by_epoch[best])
    assert checkpoint.best == series[best]


def test_save_freq_in_batches_and_weights_only(tmp_path):
    checkpoint = ModelCheckpoint(
        str(tmp_path / "e{epoch}-b{batch}"), save_freq=3, save_weights_only=True
    )
    trainer = _trainer()
    trainer.fit(
        X,
        Y,
        batch_size=8,
        epochs=2,
        verbose=0,
        yield_every="batch",
        callbacks=[checkpoint],
    )
    # 5 batches per epoch; a save every 3 batches, counted across epochs.
    assert sorted(os.listdir(tmp_path)) == ["e1-b3", "e2-b1", "e2-b4"]
    restored = _trainer()
    restored.restore(tmp_path / "e2-b4")
    assert int(restored.state.step) == 0  # weights only
    reference = _trainer()  # the params after 9 batches
    with pytest.raises(KeyboardInterrupt):
        reference.fit(
            X,
            Y,
            batch_size=8,
            epochs=2,
            verbose=0,
            yield_every="batch",
            callbacks=[Interrupt(1, 3)],
        )
    _equal(restored.params, reference.params)


def test_bad_arguments_and_unknown_format_fields_are_named(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint(str(tmp_path / "c"), save_freq=0)
    with pytest.raises(ValueError, match="max_to_keep"):
        ModelCheckpoint(str(tmp_path / "c"), max_to_keep=0)
    with pytest.raises(ValueError, match="mode"):
        ModelCheckpoint(str(tmp_path / "c"), mode="best")
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(str(tmp_path / "b"), save_freq="batch")
    with pytest.raises(TypeError, match="write_in_background"):
        BackupAndRestore(str(tmp_path / "b"), write_in_background="yes")
    with pytest.raises(TypeError, match="write_in_background"):
        ModelCheckpoint(str(tmp_path / "c"), write_in_background=1)
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"filepath: .*val_loss"):
        trainer.fit(
            X,
            Y,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[ModelCheckpoint(str(tmp_path / "c-{val_loss:.2f}"))],
        )
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("write_in_background", [False, True])
def test_a_failed_write_surfaces_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch, write_in_background
):
    import errno

    import orbax.checkpoint as ocp

    class FullAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.trainer.session.callbacks[-1]._saver.wait()  # epoch 0 is on disk

                def full(self, *args, **kwargs):
                    raise OSError(errno.ENOSPC, "No space left on device")

                monkeypatch.setattr(
                    ocp.StandardCheckpointer, "wait_until_finished", full
                )

    checkpoint = ModelCheckpoint(
        str(tmp_path / "ckpt"), write_in_background=write_in_background
    )
    with pytest.raises(OSError, match="could not write the checkpoint"):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[FullAfterFirstEpoch(), checkpoint],
        )
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert int(_loaded(tmp_path / "ckpt").state.step) == 5  # epoch 1's, whole


@pytest.mark.parametrize(
    "make",
    [
        lambda d: ModelCheckpoint(str(d / "ckpt-{epoch:02d}")),
        lambda d: BackupAndRestore(str(d), delete_checkpoint=False),
    ],
)
def test_terminate_on_nan_keeps_the_last_finite_checkpoint(tmp_path, make):
    x, y = regression_data(n=12)
    trainer = jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.sgd(10.0), loss="mse"
    )
    keeper = Params()
    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=12,
        verbose=0,
        callbacks=[keeper, jaxfit.callbacks.TerminateOnNaN(), make(tmp_path)],
    )
    assert not np.isfinite(history.history["loss"][-1])
    last_finite = max(
        e for e, v in zip(history.epoch, history.history["loss"]) if np.isfinite(v)
    )
    newest = sorted(os.listdir(tmp_path))[-1]
    loaded = _loaded(tmp_path / newest, optax.sgd(10.0))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(loaded.params))
    _equal(loaded.params, keeper.by_epoch[last_finite])


# -- BackupAndRestore ---------------------------------------------------------------


def _fit(trainer, callbacks, fit_kind="arrays", epochs=3):
    if fit_kind == "arrays":
        return trainer.fit(
            X,
            Y,
            batch_size=8,
            epochs=epochs,
            verbose=0,
            validation_split=0.2,
            yield_every="batch",
            callbacks=callbacks,
        )
    batches = [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 40, 8)]
    if fit_kind == "stream":
        return trainer.fit_dataset(
            lambda: iter(batches),
            epochs=epochs,
            verbose=0,
            yield_every="batch",
            callbacks=callbacks,
        )

    def forever():  # one iterator across epochs (steps_per_epoch)
        while True:
            yield from batches[:3]

    return trainer.fit_dataset(
        forever(),
        steps_per_epoch=4,
        epochs=epochs,
        verbose=0,
        yield_every="batch",
        callbacks=callbacks,
    )


@pytest.mark.parametrize("fit_kind", ["arrays", "stream", "continued"])
@pytest.mark.parametrize("save_freq,at", [("epoch", (1, 0)), (2, (1, 2))])
def test_an_interrupted_run_resumes_exactly(
    tmp_path, fit_kind, save_freq, at, compiles
):
    reference = _trainer()
    compiles.reset()
    expected = _fit(reference, [], fit_kind)
    fresh_compiles = compiles.count

    backup = tmp_path / "backup"
    first = _trainer()
    with pytest.raises(KeyboardInterrupt):
        _fit(
            first,
            [Interrupt(*at), BackupAndRestore(backup, save_freq=save_freq)],
            fit_kind,
        )
    assert os.listdir(backup)  # kept: the run did not end normally

    resumed = _trainer()
    compiles.reset()
    history = _fit(resumed, [BackupAndRestore(backup, save_freq=save_freq)], fit_kind)
    assert compiles.count <= fresh_compiles  # restored totals compile nothing new
    assert history.history == expected.history and history.epoch == [0, 1, 2]
    _equal(resumed.state, reference.state)
    assert not os.path.exists(backup)  # deleted after a normal end


class WatchedBackup(BackupAndRestore):
    """Lists the complete backups each time one of its hooks has just returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []  # (where, complete backups), each time the list changes

    def _look(self, where):
        names = os.listdir(self.backup_dir) if os.path.isdir(self.backup_dir) else []
        complete = sorted(
            name
            for name in names
            if os.path.isfile(os.path.join(self.backup_dir, name, "metadata.json"))
        )
        if complete != (self.seen[-1][1] if self.seen else []):
            self.seen.append((where, complete))

    def on_yield(self, epoch, batch, logs=None):
        super().on_yield(epoch, batch, logs)
        self._look((epoch, batch))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._look((epoch, "end"))


@pytest.mark.parametrize(
    "save_freq,expected",
    [
        (
            "epoch",
            [
                ((0, "end"), ["backup-0"]),
                ((1, "end"), ["backup-0", "backup-1"]),
                ((2, "end"), ["backup-1", "backup-2"]),
            ],
        ),
        # 4 batches an epoch (validation_split=0.2): backups after 3, 6, 9, 12
        (
            3,
            [
                ((0, 2), ["backup-0"]),
                ((1, 1), ["backup-0", "backup-1"]),
                ((2, 0), ["backup-1", "backup-2"]),
                ((2, 3), ["backup-2", "backup-3"]),
            ],
        ),
    ],
)
def test_a_backup_is_complete_when_its_hook_returns(tmp_path, save_freq, expected):
    # Each backup is in place, and the one before the previous pruned (the two
    # newest are kept: the previous is the fallback for a damaged newest), the
    # moment the hook that took it returns: a kill right after loses nothing
    # (test_resume kills there).
    backup = WatchedBackup(tmp_path, save_freq=save_freq, delete_checkpoint=False)
    _fit(_trainer(), [backup], epochs=3)
    assert backup.seen == expected


@pytest.mark.parametrize("save_freq,at", [("epoch", (2, 1)), (2, (1, 2))])
def test_background_backups_resume_exactly(tmp_path, save_freq, at):
    reference = _trainer()
    expected = _fit(reference, [], epochs=4)
    with pytest.raises(KeyboardInterrupt):  # fit waits for the write in flight
        _fit(
            _trainer(),
            [
                Interrupt(*at),
                BackupAndRestore(
                    tmp_path, save_freq=save_freq, write_in_background=True
                ),
            ],
            epochs=4,
        )
    ran = []
    resumed = _trainer()
    history = _fit(
        resumed,
        [
            BackupAndRestore(tmp_path, save_freq=save_freq, write_in_background=True),
            {"on_epoch_begin": lambda epoch, logs: ran.append(epoch)},
        ],
        epochs=4,
    )
    assert ran[0] == at[0]  # resumed from the backup the interrupted run took last
    assert history.history == expected.history and history.epoch == [0, 1, 2, 3]
    _equal(resumed.state, reference.state)
    assert os.listdir(tmp_path) == []  # its backups deleted; the directory was pytest's


def test_a_run_that_had_stopped_early_stays_stopped(tmp_path):
    class DieAfterBackup(Callback):
        runs_last = True  # after BackupAndRestore has backed the epoch up

        def on_epoch_end(self, epoch, logs=None):
            if self.trainer.stop_training:
                raise KeyboardInterrupt

    stop = jaxfit.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    expected = _fit(
        _trainer(),
        [jaxfit.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)],
        epochs=6,
    )
    assert len(expected.epoch) < 6
    with pytest.raises(KeyboardInterrupt):
        _fit(_trainer(), [stop, BackupAndRestore(tmp_path), DieAfterBackup()], epochs=6)
    ran = []
    history = _fit(
        _trainer(),
        [
            jaxfit.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0),
            BackupAndRestore(tmp_path),
            {"on_epoch_begin": lambda epoch, logs: ran.append(epoch)},
        ],
        epochs=6,
    )
    assert ran == [] and history.history == expected.history


def test_a_backup_of_another_model_is_refused_before_training(tmp_path):
    wide = jaxfit.Trainer(
        linear_apply, linear_params(n_in=5), optimizer=optax.adam(0.05), loss="mse"
    )
    x5, _ = regression_data(n=40, n_in=5)
    with pytest.raises(KeyboardInterrupt):
        wide.fit(
            x5,
            Y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[Interrupt(1, 0), BackupAndRestore(tmp_path)],
        )
    trainer = _trainer()
    before = jax.device_get(trainer.state)
    with pytest.raises(ValueError, match="'params/w'"):
        trainer.fit(
            X,
            Y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[BackupAndRestore(tmp_path)],
        )
    _equal(trainer.state, before)
    assert os.listdir(tmp_path)  # the backup is left as it was
