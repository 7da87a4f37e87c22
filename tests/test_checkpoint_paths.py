"""Where ModelCheckpoint, BackupAndRestore and trainer.save may write, and what
they may delete: refused targets, jaxfit's marker, pruning relative to the
callback's own root. Every deletion test keeps a canary beside it."""

import json
import os
import shutil

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

X, Y = regression_data(n=16)


def _trainer():
    return jaxfit.Trainer(
        linear_apply, linear_params(), optimizer=optax.adam(0.05), loss="mse"
    )


def _canary(directory):
    """A user's file in ``directory``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "canary.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("the user's")
    return path


def _alive(path):
    with open(path, encoding="utf-8") as f:
        return f.read() == "the user's"


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


class Interrupt(Callback):
    """KeyboardInterrupt at the start of epoch ``epoch``."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The working directory is ``tmp_path/work`` (with a canary), home is
    ``tmp_path/home``."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


REFUSED = [
    "",
    ".",
    "./",
    "WORK",  # the working directory, by its absolute path
    "HOME",
    "/",
    "..",  # a parent of the working directory
    "FOREIGN",  # an existing directory holding a file that is not jaxfit's
]


def _resolve(spec, root):
    return {
        "WORK": str(root / "work"),
        "HOME": str(root / "home"),
        "FOREIGN": str(root / "foreign"),
    }.get(spec, spec)


@pytest.mark.parametrize("spec", REFUSED)
def test_backup_and_restore_refuses_what_is_not_its_own(home, spec):
    canaries = [
        _canary(home / "work"),
        _canary(home / "home"),
        _canary(home / "foreign"),
    ]
    with pytest.raises(ValueError, match=r"^backup_dir: ") as error:
        BackupAndRestore(_resolve(spec, home))
    _one_line(error)
    assert all(_alive(c) for c in canaries)
    assert sorted(os.listdir(home / "work")) == ["canary.txt"]


@pytest.mark.parametrize(
    "spec", REFUSED + ["{epoch}", "./{epoch}", "FOREIGN/{epoch}", "WORK/{epoch}"]
)
def test_model_checkpoint_refuses_what_is_not_its_own(home, spec):
    canaries = [
        _canary(home / "work"),
        _canary(home / "home"),
        _canary(home / "foreign"),
    ]
    filepath = spec
    for name in ("WORK", "HOME", "FOREIGN"):
        filepath = filepath.replace(name, _resolve(name, home))
    with pytest.raises(ValueError, match=r"^filepath: ") as error:
        ModelCheckpoint(filepath)
    _one_line(error)
    assert all(_alive(c) for c in canaries)


@pytest.mark.parametrize("spec", REFUSED)
def test_trainer_save_refuses_what_is_not_a_checkpoint(home, spec):
    canaries = [
        _canary(home / "work"),
        _canary(home / "home"),
        _canary(home / "foreign"),
    ]
    with pytest.raises(ValueError, match=r"^path: ") as error:
        _trainer().save(_resolve(spec, home))
    _one_line(error)
    assert all(_alive(c) for c in canaries)
    assert sorted(os.listdir(home / "work")) == ["canary.txt"]


def test_checkpoints_beside_the_users_files_are_allowed_and_marked(home):
    canary = _canary(home / "work")
    checkpoint = ModelCheckpoint("ckpt-{epoch}", monitor="loss", max_to_keep=1)
    backup = BackupAndRestore("runs/backup", delete_checkpoint=False)
    _trainer().fit(
        X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint, backup]
    )
    assert sorted(os.listdir(".")) == ["canary.txt", "ckpt-2", "runs"]
    assert _alive(canary)
    for made in ("ckpt-2", "runs", "runs/backup", "runs/backup/backup-1"):
        assert os.path.isfile(os.path.join(made, ".jaxfit")), made  # jaxfit's marker


def test_a_formatted_path_that_is_not_a_checkpoint_is_refused_at_save(tmp_path):
    canary = _canary(tmp_path / "ckpt-2")  # the user's directory, in the way
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"^filepath: .*ckpt-2") as error:
        trainer.fit(
            X,
            Y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[ModelCheckpoint(str(tmp_path / "ckpt-{epoch}"), monitor="loss")],
        )
    _one_line(error)
    assert _alive(canary) and os.listdir(tmp_path / "ckpt-2") == ["canary.txt"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1", "ckpt-2"]  # nothing else


def test_a_foreign_staging_sibling_is_never_deleted(tmp_path):
    canary = _canary(tmp_path / ".ckpt.saving")
    with pytest.raises(ValueError, match=r"^path: .*did not write"):
        _trainer().save(tmp_path / "ckpt")
    assert _alive(canary) and not os.path.exists(tmp_path / "ckpt")


def test_an_existing_checkpoint_is_replaced_and_an_old_one_without_marker_too(
    tmp_path,
):
    trainer = _trainer()
    path = trainer.save(tmp_path / "ckpt")
    os.remove(os.path.join(path, ".jaxfit"))  # as written before the marker
    trainer.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    trainer.save(path)  # its jaxfit metadata.json is the proof
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    other = _trainer()
    other.restore(path)
    assert int(other.state.step) == 2


# -- what BackupAndRestore deletes at the end -----------------------------------------


def test_the_backup_dir_it_created_is_removed_at_a_normal_end(tmp_path):
    canary = _canary(tmp_path)
    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path / "made" / "backup")],
    )
    assert not os.path.exists(tmp_path / "made" / "backup")
    assert _alive(canary)


def test_a_backup_dir_the_user_made_is_emptied_not_removed(tmp_path):
    (tmp_path / "backup").mkdir()
    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[BackupAndRestore(tmp_path / "backup")],
    )
    assert os.listdir(tmp_path / "backup") == []


def test_a_file_the_user_puts_in_the_backup_dir_survives_the_end(tmp_path):
    backup_dir = tmp_path / "backup"

    class Drop(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # into the directory jaxfit made at epoch 0
                _canary(backup_dir)

    canary_path = backup_dir / "canary.txt"
    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[Drop(), BackupAndRestore(backup_dir)],
    )
    assert _alive(canary_path)
    assert sorted(os.listdir(backup_dir)) == [
        ".jaxfit",
        "canary.txt",
    ]  # kept: not empty


# -- max_to_keep: relative to the callback's root ------------------------------------


def _run_dir_callbacks(root, **kwargs):
    return [
        ModelCheckpoint(
            str(root / "ckpts" / "ckpt-{epoch}"), monitor="loss", max_to_keep=2
        ),
        BackupAndRestore(root / "backup", **kwargs),
    ]


def test_resuming_a_copied_run_leaves_the_original_checkpoints(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=6,
            verbose=0,
            callbacks=[Interrupt(3), *_run_dir_callbacks(original)],
        )
    before = sorted(os.listdir(original / "ckpts"))
    assert before == [".jaxfit", "ckpt-2", "ckpt-3"]
    shutil.copytree(original, copy)
    canary = _canary(original / "ckpts")

    history = _trainer().fit(
        X, Y, batch_size=8, epochs=6, verbose=0, callbacks=_run_dir_callbacks(copy)
    )
    assert history.epoch == list(range(6))
    assert sorted(os.listdir(original / "ckpts")) == sorted(before + ["canary.txt"])
    assert sorted(os.listdir(copy / "ckpts")) == [".jaxfit", "ckpt-5", "ckpt-6"]
    assert _alive(canary)


def _checkpoint_like(directory):
    """A directory that even looks like a jaxfit checkpoint (marker and all)."""
    os.makedirs(directory)
    with open(os.path.join(directory, ".jaxfit"), "w", encoding="utf-8") as f:
        f.write("{}")
    return _canary(directory)


def test_set_state_drops_kept_paths_that_leave_the_root(tmp_path):
    victims = [
        _checkpoint_like(tmp_path / "outside"),
        _checkpoint_like(tmp_path / "run" / "sibling"),
    ]
    checkpoint = ModelCheckpoint(
        str(tmp_path / "run" / "ckpts" / "ckpt-{epoch}"), monitor="loss", max_to_keep=1
    )
    checkpoint.set_state(
        {
            "best": None,
            "kept": [
                str(tmp_path / "outside"),  # absolute
                "../../outside",
                "../sibling",
                "ckpt-1/../../sibling",
                "",
                ".",
            ],
            "since": 0,
        }
    )
    assert checkpoint.kept == []
    _trainer().fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint])
    assert all(_alive(v) for v in victims)
    assert sorted(os.listdir(tmp_path / "run" / "ckpts")) == [".jaxfit", "ckpt-2"]


def test_a_crafted_backup_deletes_nothing_outside_the_run(tmp_path):
    run = tmp_path / "run"
    victim = _checkpoint_like(tmp_path / "victim")
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=4,
            verbose=0,
            callbacks=[Interrupt(2), *_run_dir_callbacks(run)],
        )
    # Craft the newest backup as an old-format one (no digest: not checked), its
    # ModelCheckpoint state naming a directory outside the run.
    newest = sorted(os.listdir(run / "backup"))[-1]
    meta_path = run / "backup" / newest / "metadata.json"
    info = json.loads(meta_path.read_text(encoding="utf-8"))
    del info["digest"]
    info["callbacks"]["ModelCheckpoint"]["kept"] = [
        str(tmp_path / "victim"),
        "../../victim",
        "../../../victim",
    ]
    meta_path.write_text(json.dumps(info), encoding="utf-8")
    _trainer().fit(
        X, Y, batch_size=8, epochs=4, verbose=0, callbacks=_run_dir_callbacks(run)
    )
    assert _alive(victim)
    assert os.path.isfile(tmp_path / "victim" / ".jaxfit")


def test_kept_is_stored_relative_to_the_root(tmp_path):
    checkpoint = ModelCheckpoint(
        str(tmp_path / "ckpts" / "ckpt-{epoch}"), monitor="loss", max_to_keep=3
    )
    _trainer().fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[checkpoint])
    assert checkpoint.get_state()["kept"] == ["ckpt-1", "ckpt-2"]
    assert checkpoint.kept == [
        str(tmp_path / "ckpts" / n) for n in ("ckpt-1", "ckpt-2")
    ]
    params = jax.device_get(
        jaxfit.Trainer.load(
            checkpoint.kept[-1], linear_apply, optimizer=optax.adam(0.05), loss="mse"
        ).params
    )
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_a_staging_directory_left_by_a_kill_is_cleaned_at_the_end(tmp_path):
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[Interrupt(1), BackupAndRestore(backup_dir)],
        )
    (backup_dir / ".backup-7.saving").mkdir()  # killed before its marker was written
    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[BackupAndRestore(backup_dir)],
    )
    assert not os.path.exists(backup_dir)


def test_a_foreign_directory_named_like_staging_survives_the_end(tmp_path):
    backup_dir = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            X,
            Y,
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[Interrupt(1), BackupAndRestore(backup_dir)],
        )
    canary = _canary(backup_dir / ".backup-7.saving")  # not what a save writes
    _trainer().fit(
        X,
        Y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[BackupAndRestore(backup_dir)],
    )
    assert _alive(canary)
    assert sorted(os.listdir(backup_dir)) == [".backup-7.saving", ".jaxfit"]


@pytest.mark.parametrize("marked", [True, False])
def test_a_save_interrupted_inside_orbax_is_cleaned_by_the_next_save(tmp_path, marked):
    # what a kill inside orbax's write (or inside the removal of that staging
    # directory, which removes the marker last) leaves: orbax's temporary item
    # directory, with or without the marker
    trainer = _trainer()
    staging = tmp_path / ".ckpt.saving"
    (staging / "state.orbax-checkpoint-tmp-1733").mkdir(parents=True)
    (staging / "state.orbax-checkpoint-tmp-1733" / "d").write_bytes(b"\0" * 8)
    if marked:
        (staging / ".jaxfit").write_text("{}")
    path = trainer.save(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert int(_trainer().restore(path)["step"]) == 0
