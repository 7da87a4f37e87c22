"""``load_run`` and ``evaluate_run``: a finished run directory, used afterwards.

``load_run(run_dir)`` rebuilds what ``jaxfit run`` trained from the run's
config.yaml (checked as ``--resume`` checks it): the data section as the run made
it (same ``seed`` and ``data.args``: the sample shapes, ``num_outputs``, the
dataset's ``preprocess`` and the test split), the model (built-in or
``module:callable``, with the preprocessing in front of it), and the Trainer with
the run's optimizer, loss, metrics, ``loss_weights``, ``precision`` and ``seed``;
then it restores checkpoint/ into it (``Trainer.restore``: the whole TrainState,
so it can ``predict``, ``evaluate`` and even ``fit`` on). Its weights are those
the run ended with: EarlyStopping's restored best ones, or the last epoch's
(metrics.json's ``weights_epoch``). A ``module:callable`` in the config is
imported from ``sys.path`` as it is; the ``jaxfit`` command puts the working
directory and the directory of the YAML file the run came from on it.

Of a population run (``population:``) both take ``member``: the member to load
as a plain Trainer (``PopulationTrainer.member(i)``), by default the best one
(metrics.json's ``best_member``, whose ``test`` is metrics.json's ``test``).

``evaluate_run`` evaluates that trainer on the run's test split (or its train
part, or another dataset) as the run's own test line did: ``Trainer.evaluate``
with ``fit.batch_size`` on arrays, ``Trainer.evaluate_dataset`` on streams.

Both refuse with a one-line ``ConfigError`` naming ``run_dir``, before anything
is built: a path that is not a directory, one without config.yaml, one jaxfit
did not make (no ``.jaxfit`` marker), a run that is not complete (no
metrics.json), a missing checkpoint. A damaged checkpoint raises the restore's
own error, which names the file. Nothing in the run directory is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from jaxfit._src import errors, paths
from jaxfit._src.driver.trainer import Trainer
from jaxfit._src.runner import build, checks, population, show
from jaxfit._src.runner.rundir import COMPLETE, _marker
from jaxfit._src.runner.schema import ConfigError, RunConfig

SPLITS = ("test", "train")
_RESUME = "resume it first: jaxfit run --resume RUN_DIR"


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
    member: int | None = None,
) -> Trainer:
    """The Trainer a finished ``jaxfit run`` trained, rebuilt from its directory.

    Args:
      run_dir: a complete run directory (``RunResult.run_dir``; it has
        metrics.json).
      checkpoint: another checkpoint directory inside ``run_dir`` to restore
        (a ``ModelCheckpoint``'s, relative to ``run_dir``), instead of
        checkpoint/. Defaults to `None`.
      member: of a population run (``population:``), the member to load as a
        plain Trainer (``PopulationTrainer.member``: its seed, hyperparameters
        and state); refused for a run without a population. Defaults to
        `None`: the best member (metrics.json's ``best_member``).

    Returns:
      The Trainer with the run's model (its dataset's preprocessing in front:
      it takes the dataset's raw inputs), optimizer, loss and metrics, and the
      checkpoint's whole TrainState.

    Raises:
      ConfigError: ``run_dir`` is not a complete run directory of jaxfit's,
        its checkpoint is missing, ``checkpoint`` leaves ``run_dir``, its
        config no longer builds (naming the key), or ``member`` is not a
        member's index of its population.
      ValueError: a damaged checkpoint (naming the file), or one that does not
        match the model.
    """
    return _loaded(run_dir, checkpoint, member)[2]


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data: str | None = None,
    split: Literal["test", "train"] = "test",
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | None = None,
    member: int | None = None,
) -> dict[str, float]:
    """Evaluates a finished run's trainer (``load_run``), as its test line did.

    Args:
      run_dir: a complete run directory.
      data: another dataset to evaluate on (a ``data.name``: a built-in or
        ``module:callable``), called with ``data.args`` from ``overrides`` only
        and the run's seed; its inputs go through the run's preprocessing (the
        model's). Defaults to `None`: the run's own dataset.
      split: ``"test"`` (the test part) or ``"train"`` (the whole train part,
        ``fit.validation_split``'s held-out samples included). Defaults to
        `"test"`.
      overrides: ``data.KEY=VALUE`` strings (the CLI's ``--set``) for the data
        to evaluate on; keys outside ``data`` are refused. Defaults to `()`.
      checkpoint: as ``load_run``'s. Defaults to `None`.
      member: as ``load_run``'s (a population run's member; the best one by
        default). Defaults to `None`.

    Returns:
      The metrics, ``{name: value}`` (``loss`` first), as metrics.json's
      ``test``.

    Raises:
      ConfigError: as ``load_run``; or a key outside ``data`` in ``overrides``,
        a ``split`` that is not one of ``SPLITS`` or that the dataset does not
        have, or data the model does not take.
    """
    return _evaluate(run_dir, data, split, overrides, checkpoint, "split", member)


def _evaluate(
    run_dir: Any,
    data: str | None,
    split: str,
    overrides: Sequence[str],
    checkpoint: str | None,
    split_name: str,
    member: int | None = None,
) -> dict[str, float]:
    """``evaluate_run``, naming ``split`` as ``split_name`` (``--split``)."""
    if split not in SPLITS:
        raise ConfigError(errors.expected(split_name, f"one of {list(SPLITS)}", split))
    overrides = _data_overrides(data, overrides)
    path = os.path.join(_checked(run_dir, checkpoint)[0], "config.yaml")
    other = checks._load(path, overrides) if overrides else None  # before building
    config, dataset, trainer = _loaded(run_dir, checkpoint, member)
    if other is not None:
        config, dataset = _other_data(config, dataset, other)
    return _evaluated(config, dataset, trainer, split, split_name)


def _data_overrides(data: str | None, overrides: Iterable[str]) -> list[str]:
    """``--data NAME`` (a new ``data.name``, its ``data.args`` emptied) and the
    ``data.*`` overrides."""
    overrides = list(overrides)
    for item in overrides:
        key = str(item).partition("=")[0]
        if key.split(".")[0] != "data":
            raise ConfigError(
                errors.expected(
                    "--set",
                    "data.KEY=VALUE (evaluate changes the data only; the "
                    "model, optimizer and loss are the run's)",
                    item,
                )
            )
    if data is None:
        return overrides
    if not isinstance(data, str) or not data:
        raise ConfigError(errors.expected("data", "a dataset name (data.name)", data))
    return [f"data.name={data}", "data.args={}", *overrides]


def _loaded(
    run_dir: Any, checkpoint: str | None, member: int | None = None
) -> tuple[RunConfig, Any, Trainer]:
    """The run's checked config, its data and the restored trainer (every
    ``run_dir`` check first); of a population run, member ``member``'s."""
    run_dir, path = _checked(run_dir, checkpoint)
    config, locate = checks._load(os.path.join(run_dir, "config.yaml"))
    index = _member(run_dir, config, member)
    with checks._located(locate):
        data = build._data(config)
        trainer = build._trainer(config, data)
    trainer.restore(path)
    if index is not None:
        trainer = trainer.member(index)  # type: ignore[attr-defined]
    return config, data, trainer


def _member(run_dir: str, config: RunConfig, member: Any) -> int | None:
    """The population member to load (``member``, else the best one), or
    ``None`` for a run without a population."""
    if config.population is None:
        if member is not None:
            raise ConfigError(
                errors.expected(
                    "member",
                    "None for a run without a population section",
                    member,
                )
            )
        return None
    count = len(population.members(config))
    if member is None:
        metrics, _ = show._read_json(os.path.join(run_dir, COMPLETE))
        best = metrics.get("best_member") if isinstance(metrics, dict) else None
        return int(best["member"]) if isinstance(best, dict) else 0
    if (
        isinstance(member, bool)
        or not isinstance(member, int)
        or not (0 <= member < count)
    ):
        raise ConfigError(
            errors.expected(
                "member",
                f"a member index in 0..{count - 1} (the run has {count})",
                member,
            )
        )
    return member


def _checked(run_dir: Any, checkpoint: str | None) -> tuple[str, str]:
    """``(run_dir, checkpoint directory)``, absolute, once ``run_dir`` is a
    complete run directory of jaxfit's with that checkpoint in it."""
    if not isinstance(run_dir, (str, os.PathLike)) or not os.fspath(run_dir):
        raise ConfigError(errors.expected("run_dir", "a run directory's path", run_dir))
    path = os.path.abspath(os.fspath(run_dir))
    expected = "a run directory made by jaxfit run"
    refusals = (
        (os.path.isdir(path), "It is not a directory"),
        (os.path.isfile(os.path.join(path, "config.yaml")), "It has no config.yaml"),
        (_marker(path) is not None, f"It has no run marker ({paths.MARKER})"),
    )
    for ok, why in refusals:
        if not ok:
            raise ConfigError(errors.expected("run_dir", expected, path, f"{why}."))
    if not os.path.isfile(os.path.join(path, COMPLETE)):
        raise ConfigError(
            errors.expected(
                "run_dir",
                "a complete run (it has metrics.json)",
                path,
                f"The run did not finish; {_RESUME}.",
            )
        )
    return path, _checkpoint_dir(path, checkpoint)


def _checkpoint_dir(run_dir: str, checkpoint: str | None) -> str:
    """The checkpoint directory to restore: checkpoint/, or ``checkpoint``
    inside ``run_dir``."""
    if checkpoint is None:
        found = os.path.join(run_dir, "checkpoint")
        if not os.path.isdir(found):
            raise ConfigError(
                errors.expected(
                    "run_dir",
                    "a complete run with its final checkpoint (checkpoint/)",
                    run_dir,
                    "It has none: it was removed or never written.",
                )
            )
        return found
    inside = paths.within(run_dir, os.fspath(checkpoint))
    if inside is None:
        raise ConfigError(
            errors.expected(
                "checkpoint",
                f"a checkpoint directory inside run_dir ({run_dir}), relative to it",
                checkpoint,
            )
        )
    if not os.path.isdir(inside):
        raise ConfigError(
            errors.expected(
                "checkpoint",
                f"a checkpoint directory in run_dir ({run_dir})",
                checkpoint,
                "There is no such directory.",
            )
        )
    return inside


def _other_data(
    config: RunConfig, run_data: Any, loaded: tuple[RunConfig, Any]
) -> tuple[RunConfig, Any]:
    """The config with the data overrides (``loaded``: it and its ``locate``) and
    its data, refused if its preprocessing is not the run's (the model applies
    the run's)."""
    other, locate = loaded
    with checks._located(locate):
        data = build._data(other)
    if not _same_function(data.preprocess, run_data.preprocess):
        raise ConfigError(
            errors.expected(
                "data.name",
                f"a dataset without a 'preprocess' of its own, or with the run's "
                f"({config.data.name!r}'s: the loaded model applies it to raw "
                f"inputs), from {other.data.name!r}",
                data.preprocess,
            )
        )
    return other, data


def _same_function(a: Any, b: Any) -> bool:
    """Whether ``a`` is ``b``, ``None``, or the same code (a nested function
    made anew by each call of its dataset callable)."""
    if a is None or a is b:
        return True
    code = getattr(a, "__code__", None)
    return code is not None and code is getattr(b, "__code__", None)


def _evaluated(
    config: RunConfig, data: Any, trainer: Trainer, split: str, split_name: str
) -> dict[str, float]:
    """``trainer``'s metrics on ``split`` of ``data``."""
    streaming = checks._streaming(data)
    if streaming:
        source = data.test if split == "test" else data.train
    else:
        source = data.x_test if split == "test" else data.x_train
    if source is None:
        raise ConfigError(
            errors.expected(
                split_name,
                f"a split that the data of {config.data.name!r} has",
                split,
                "It has no test part; use train, or a test_fraction above 0.",
            )
        )
    try:
        if streaming:
            return trainer.evaluate_dataset(source)
        y = data.y_test if split == "test" else data.y_train
        return trainer.evaluate(source, y, batch_size=config.fit.batch_size)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(
            f"data.name: expected data from {config.data.name!r} that the run's "
            f"model and loss take, got: {checks._first_line(error)}"
        ) from None
