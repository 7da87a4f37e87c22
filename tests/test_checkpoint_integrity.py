"""Damaged checkpoints and backups are refused (one line naming the file) or, for
BackupAndRestore, fallen back from; never restored wrong. Background writes end
quietly on Ctrl-C; a preemption request backs up the exact position."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import linear_apply, linear_params, regression_data

import jaxfit
from jaxfit._src.driver import preemption
from jaxfit.callbacks import BackupAndRestore, Callback

pytest.importorskip(
    "orbax.checkpoint", reason="checkpoints are the optional ckpt extra"
)

X, Y = regression_data(n=24)


def _trainer():
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _read(path):
    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
        return json.load(f)


def _write(path, info):
    with open(os.path.join(path, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


# -- the damage done, each a function of (checkpoint, an older checkpoint) ------------


def _array_files(path):
    found = []
    for directory, _, names in os.walk(os.path.join(path, "state")):
        if os.path.basename(directory) == "d":  # ocdbt's data files
            found += [os.path.join(directory, name) for name in names]
    return sorted(found, key=os.path.getsize)


def flip_a_byte(path, older):
    del older
    target = _array_files(path)[-1]
    data = bytearray(pathlib.Path(target).read_bytes())
    data[len(data) // 2] ^= 0x01
    pathlib.Path(target).write_bytes(bytes(data))
    return os.path.relpath(target, path)


def state_from_an_older_checkpoint(path, older):
    shutil.rmtree(os.path.join(path, "state"))
    shutil.copytree(os.path.join(older, "state"), os.path.join(path, "state"))
    return "state"


def position_edited(path, older):
    del older
    info = _read(path)
    info["position"]["epoch"] += 1
    _write(path, info)
    return "metadata.json"


def seed_edited(path, older):
    del older
    info = _read(path)
    info["seed"] += 1
    _write(path, info)
    return "metadata.json"


def step_edited(path, older):
    del older
    info = _read(path)
    info["step"] -= 1
    _write(path, info)
    return "metadata.json"


def metadata_truncated(path, older):
    del older
    meta = pathlib.Path(path) / "metadata.json"
    text = meta.read_bytes()
    meta.write_bytes(text[: len(text) // 2])
    return "metadata.json"


def metadata_garbage(path, older):
    del older
    (pathlib.Path(path) / "metadata.json").write_bytes(b"\x00\xffgarbage")
    return "metadata.json"


def metadata_empty(path, older):
    del older
    (pathlib.Path(path) / "metadata.json").write_bytes(b"")
    return "metadata.json"


def metadata_missing(path, older):
    del older
    os.remove(os.path.join(path, "metadata.json"))
    return "metadata.json"


def metadata_a_list(path, older):
    del older
    _write(path, [1, 2])
    return "metadata.json"


def state_missing(path, older):
    del older
    shutil.rmtree(os.path.join(path, "state"))
    return "state"


def a_file_added(path, older):
    del older
    (pathlib.Path(path) / "state" / "d" / "intruder").write_bytes(b"\x00" * 8)
    return os.path.join("state", "d", "intruder")


def a_file_removed(path, older):
    del older
    target = _array_files(path)[-1]
    os.remove(target)
    return os.path.relpath(target, path)


DAMAGE = [
    flip_a_byte,
    state_from_an_older_checkpoint,
    position_edited,
    seed_edited,
    step_edited,
    metadata_truncated,
    metadata_garbage,
    metadata_empty,
    metadata_missing,
    metadata_a_list,
    state_missing,
    a_file_added,
    a_file_removed,
]


@pytest.fixture
def two_checkpoints(tmp_path):
    trainer = _trainer()
    trainer.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    older = trainer.save(tmp_path / "older")
    trainer.fit(X, Y, batch_size=8, epochs=2, initial_epoch=1, verbose=0)
    return trainer.save(tmp_path / "ckpt"), older


def test_a_checkpoint_records_the_digests_of_its_files_and_metadata(two_checkpoints):
    path, _ = two_checkpoints
    info = _read(path)
    digest = info["digest"]
    assert digest["algorithm"] == "sha256" and len(digest["metadata"]) == 64
    files = digest["files"]
    assert files and all(name.startswith("state/") for name in files)
    assert info["step"] == 6 and os.path.isfile(os.path.join(path, ".jaxfit"))


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_file(
    two_checkpoints, damage
):
    path, older = two_checkpoints
    named = damage(path, older)
    trainer = _trainer()
    before = trainer.state
    with pytest.raises(ValueError) as error:
        trainer.restore(path)
    assert type(error.value).__name__ == "CheckpointCorrupted"
    message = str(error.value)
    assert "\n" not in message and "is damaged" in message, message
    assert os.path.join(path, named) in message, message
    assert trainer.state is before and trainer.seed == 0
    with pytest.raises(ValueError, match="is damaged"):
        jaxfit.Trainer.load(path, linear_apply, optimizer=optax.adam(0.05), loss="mse")
    with pytest.raises(ValueError, match="is damaged"):
        jaxfit.Trainer.load(path, linear_apply)


def test_a_checkpoint_written_before_digests_still_restores(two_checkpoints):
    path, _ = two_checkpoints
    info = _read(path)
    del info["digest"]  # as written before this format had one (not checked)
    _write(path, info)
    os.remove(os.path.join(path, ".jaxfit"))
    trainer = _trainer()
    trainer.restore(path)
    assert int(trainer.state.step) == 6
    loaded = jaxfit.Trainer.load(path, linear_apply)
    _equal(loaded.params, trainer.params)


def test_without_a_digest_a_swapped_state_is_still_caught_by_its_step(two_checkpoints):
    path, older = two_checkpoints
    info = _read(path)
    del info["digest"]
    _write(path, info)
    state_from_an_older_checkpoint(path, older)
    trainer = _trainer()
    before = trainer.state
    with pytest.raises(ValueError, match=r"holds step 3, but metadata\.json records"):
        trainer.restore(path)
    assert trainer.state is before


# -- BackupAndRestore: the previous intact backup --------------------------------------


class Interrupt(Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted():
    trainer = _trainer()
    history = trainer.fit(X, Y, batch_size=8, epochs=4, verbose=0)
    return history.history, jax.device_get(trainer.state)


def _interrupted(backup_dir):
    """A run stopped at the start of epoch 3: backups 1 and 2 are kept."""
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[Interrupt(3), BackupAndRestore(backup_dir)],
        )
    assert sorted(os.listdir(backup_dir)) == [".jaxfit", "backup-1", "backup-2"]
    return os.path.join(backup_dir, "backup-2"), os.path.join(backup_dir, "backup-1")


# The cases of backups resumed wrong or refused raw: each is fallen back
# from, and the resumed run ends exactly as the uninterrupted one (the rest of
# DAMAGE goes through the same verify, tested on trainer.restore above).
BACKUP_DAMAGE = [
    state_from_an_older_checkpoint,
    position_edited,
    seed_edited,
    flip_a_byte,
    metadata_truncated,
    metadata_garbage,
    metadata_missing,
    state_missing,
]


@pytest.mark.parametrize("damage", BACKUP_DAMAGE, ids=lambda f: f.__name__)
def test_a_damaged_newest_backup_falls_back_to_the_previous(
    tmp_path, uninterrupted, damage
):
    expected_history, expected_state = uninterrupted
    newest, previous = _interrupted(tmp_path / "backup")
    named = damage(newest, previous)
    ran = []
    resumed = _trainer()
    with pytest.warns(RuntimeWarning) as warned:
        history = resumed.fit(
            X,
            Y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[
                BackupAndRestore(tmp_path / "backup", delete_checkpoint=False),
                {"on_epoch_begin": lambda epoch, logs: ran.append(epoch)},
            ],
        )
    (warning,) = warned
    message = str(warning.message)
    assert "\n" not in message and os.path.join(newest, named) in message
    assert previous in message
    assert ran == [2, 3]  # from the previous backup, taken after epoch 1
    assert history.history == expected_history
    _equal(resumed.state, expected_state)
    # The damaged backup is pruned once newer ones are in place; two remain.
    assert sorted(os.listdir(tmp_path / "backup")) == [
        ".jaxfit",
        "backup-3",
        "backup-4",
    ]


def test_no_intact_backup_is_one_error_naming_the_newest(tmp_path):
    newest, previous = _interrupted(tmp_path / "backup")
    seed_edited(newest, previous)
    flip_a_byte(previous, None)
    trainer = _trainer()
    before = jax.device_get(trainer.state)
    with (
        pytest.warns(RuntimeWarning, match="resuming from the previous backup"),
        pytest.raises(ValueError) as error,
    ):
        trainer.fit(
            X,
            Y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[BackupAndRestore(tmp_path / "backup")],
        )
    message = str(error.value)
    assert message.startswith("backup_dir: ") and "\n" not in message
    assert os.path.join(newest, "metadata.json") in message and "no older" in message
    _equal(trainer.state, before)
    assert sorted(os.listdir(tmp_path / "backup")) == [
        ".jaxfit",
        "backup-1",
        "backup-2",
    ]


# -- Ctrl-C while background writes are in flight ------------------------------------

_CTRL_C = """
import os, signal, sys, threading, time
sys.path.insert(0, {tests!r})
import optax
import orbax.checkpoint as ocp
from conftest import linear_apply, linear_params, regression_data
import jaxfit
from jaxfit.callbacks import BackupAndRestore, Callback, ModelCheckpoint

out = sys.argv[1]
save, wait = ocp.StandardCheckpointer.save, ocp.StandardCheckpointer.wait_until_finished

def slow_save(self, directory, *args, **kwargs):
    result = save(self, directory, *args, **kwargs)
    name = str(directory)  # the last epoch's writes are slow
    self.slow = 4.0 if "backup-1" in name else 2.0 if "ckpt-2" in name else 0.0
    return result

def slow_wait(self):  # a slow disk: the writes are in flight for a while
    time.sleep(self.__dict__.pop("slow", 0.0))
    return wait(self)

ocp.StandardCheckpointer.save = slow_save
ocp.StandardCheckpointer.wait_until_finished = slow_wait

class CtrlC(Callback):  # Ctrl-C while fit's end waits for the checkpoint's write;
    # the KeyboardInterrupt then skips BackupAndRestore's on_train_end: its
    # write is joined as the interpreter exits.
    def on_train_end(self, logs=None):
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

x, y = regression_data(n=16)
trainer = jaxfit.Trainer(linear_apply, linear_params(), optimizer=optax.adam(0.05),
                         loss="mse")
callbacks = [
    ModelCheckpoint(os.path.join(out, "ckpt-{{epoch}}"), monitor="loss",
                    write_in_background=True),
    BackupAndRestore(os.path.join(out, "backup"), write_in_background=True),
    CtrlC(),
]
try:
    trainer.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_during_background_writes_finishes_them_without_tracebacks(tmp_path):
    script = _CTRL_C.format(tests=os.path.dirname(__file__))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stdout.strip() == "interrupted"
    for bad in ("Traceback", "Exception in thread", "cannot schedule", "Event loop"):
        assert bad not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("finishing the checkpoint write") == 2
    # Both writes completed (the backup's at exit): whole, checked checkpoints.
    assert sorted(os.listdir(tmp_path)) == ["backup", "ckpt-1", "ckpt-2"]
    assert sorted(os.listdir(tmp_path / "backup")) == [
        ".jaxfit",
        "backup-0",
        "backup-1",
    ]
    for path in (tmp_path / "ckpt-2", tmp_path / "backup" / "backup-1"):
        loaded = jaxfit.Trainer.load(path, linear_apply)
        assert int(loaded.state.step) == 4


# -- preemption ------------------------------------------------------------------------


class Preempt(Callback):
    """Requests preemption (as SIGTERM would) after batch ``batch`` of ``epoch``."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        if (self.trainer.session.position.epoch, batch) == self.at:
            preemption.request()


class Watch(Callback):
    """After BackupAndRestore's on_yield (both run last, in order): the complete
    backups' positions the moment it returned."""

    runs_last = True

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = backup_dir
        self.seen = []

    def on_yield(self, epoch, batch, logs=None):
        if preemption.requested() is None:
            return
        positions = []
        for name in sorted(os.listdir(self.backup_dir)):
            meta = os.path.join(self.backup_dir, name, "metadata.json")
            if name.startswith("backup-") and os.path.isfile(meta):
                position = _read(os.path.dirname(meta))["position"]
                positions.append((position["epoch"], position["batch"]))
        self.seen.append(((epoch, batch + 1), positions))


def test_a_preemption_request_backs_up_the_exact_position(tmp_path):
    reference = _trainer()
    expected = reference.fit(
        X, Y, batch_size=8, epochs=4, verbose=0, yield_every="batch"
    )
    backup_dir = tmp_path / "backup"
    watch = Watch(backup_dir)
    try:
        with pytest.raises(SystemExit):  # Preempted, once the loop stops
            _trainer().fit(
                X,
                Y,
                batch_size=8,
                epochs=4,
                verbose=0,
                yield_every="batch",
                callbacks=[
                    Preempt(1, 0),
                    BackupAndRestore(backup_dir, write_in_background=True),
                    watch,
                ],
            )
    finally:
        preemption.clear()
    # At every yield point after the request, a backup of exactly that position
    # was complete on disk when BackupAndRestore's on_yield returned.
    assert watch.seen
    for (epoch, done), positions in watch.seen:
        assert (epoch, done) in positions
    stopped = watch.seen[-1][0]
    ran = []
    resumed = _trainer()
    history = resumed.fit(
        X,
        Y,
        batch_size=8,
        epochs=4,
        verbose=0,
        yield_every="batch",
        callbacks=[
            BackupAndRestore(backup_dir),
            {"on_train_batch_end": lambda batch, logs: ran.append(batch)},
        ],
    )
    assert ran[0] == stopped[1]  # resumed right after the last batch run
    assert history.history == expected.history
    _equal(resumed.state, reference.state)
