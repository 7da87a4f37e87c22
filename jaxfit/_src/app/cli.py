"""The ``jaxfit`` command: ``run``, ``validate``, ``show``, ``evaluate``,
``compare`` and ``configs`` (also ``python -m jaxfit``).

    jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
               [--compilation-cache DIR|off]
    jaxfit run --resume RUN_DIR [--compilation-cache DIR|off]
    jaxfit validate CONFIG [--set key.path=value ...]
    jaxfit show RUN_DIR
    jaxfit evaluate RUN_DIR [--data NAME] [--set data.KEY=VALUE ...]
                    [--split test|train] [--checkpoint DIR] [--member I]
    jaxfit compare RUN_DIR... [--metric M] [--mode auto|min|max] [--out PNG]
    jaxfit configs [DIR]

CONFIG is a YAML file or the name of a shipped config (``digits_mlp``);
``jaxfit configs`` lists the shipped ones and ``jaxfit configs DIR`` copies them
into DIR to edit. ``jaxfit evaluate`` rebuilds a finished run's trainer
(``jaxfit.load_run``) and prints its metrics on the run's test split (or its
train part with ``--split train``, or another dataset: ``--data NAME`` replaces
``data.name`` and empties ``data.args``, which ``--set data.args.K=V`` fills),
one ``name: value`` line each (4 decimals, as the run's test line) and nothing
else on stdout (``jaxfit.evaluate_run``); of a population run, the best
member's, or member I's with ``--member I``. ``jaxfit compare`` prints a
table of the runs' final metrics (a sweep directory stands for its trials;
``runner.compare``) and with ``--out`` draws their learning curves.

Imports: ``module:callable`` names in a config are imported as ``python -m``
would find them, with the ``jaxfit`` console script too: while the command
runs, the directory of the YAML file (``run CONFIG``, ``validate CONFIG``; for
``run --resume RUN_DIR`` and ``evaluate RUN_DIR``, the directory of the file the
run came from, config.yaml's ``environment.config_file``, if it still exists)
and then the working directory are put at the front of ``sys.path`` (each only
if not there already); ``sys.path`` is restored when ``main`` returns.

Exit status: 0, 2 for a refused config or command (one line on stderr), 130
when Ctrl-C stopped a run and 143 (128 + SIGTERM) when a preemption did; both
print one line saying where the run stopped and the command that resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from jaxfit._src.driver import preemption
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import load as load_lib
from jaxfit._src.runner import run as runner
from jaxfit._src.runner import yaml_reader
from jaxfit._src.runner.schema import ConfigError

_CONFIG_HELP = "a YAML file, or a shipped config's name (see jaxfit configs)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxfit", description="Keras-style fit() for JAX: run YAML experiments."
    )
    parser.add_argument("--version", action="version", version=f"jaxfit {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train from a YAML config")
    run.add_argument("config", nargs="?", help=_CONFIG_HELP)
    _add_set(run)
    run.add_argument("--workdir", default="runs", help="where run directories go")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    run.add_argument(
        "--compilation-cache",
        metavar="DIR|off",
        type=_cache_dir,
        help="JAX's persistent compilation cache directory, or off "
        "(default: the config's compilation_cache, "
        "WORKDIR/.jax_cache)",
    )
    validate = commands.add_parser(
        "validate", help="check a config and its data against it, train nothing"
    )
    validate.add_argument("config", help=_CONFIG_HELP)
    _add_set(validate)
    show = commands.add_parser(
        "show", help="summarise a run directory, or a sweep directory's trials"
    )
    show.add_argument("run_dir")
    _evaluate_parser(commands)
    _compare_parser(commands)
    _sweep_parser(commands)
    _configs_parser(commands)
    return parser


def _add_set(
    parser: Any, metavar: str = "KEY.PATH=VALUE", text: str = "override a config value"
) -> None:
    """A command's repeatable ``--set`` (into ``args.overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar=metavar,
        help=text,
    )


def _sweep_parser(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run a config's sweep: section on Optuna (trials packed into populations)",
        description="Run, join or resume the sweep of a config's sweep: section: "
        "its trials as run directories in WORKDIR/<name>/trials, sweep.json, "
        "best.yaml, sweep.png.",
    )
    sweep.add_argument("config", nargs="?", help=_CONFIG_HELP)
    _add_set(sweep)
    sweep.add_argument("--workdir", default="sweeps", help="where the sweep goes")
    sweep.add_argument("--trials", type=int, help="the number of trials in all")
    sweep.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna storage URL shared by every worker (default: "
        "sqlite:///SWEEP_DIR/study.db)",
    )
    sweep.add_argument(
        "--resume", metavar="SWEEP_DIR", help="take up a killed worker's trials"
    )


def _sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``jaxfit sweep``."""
    from jaxfit._src.sweep import driver

    if (args.config is None) == (args.resume is None):
        parser.error("sweep: give a CONFIG or --resume SWEEP_DIR (not both)")
    driver.sweep(
        args.config,
        args.workdir,
        overrides=args.overrides,
        trials=args.trials,
        storage=args.storage,
        resume=args.resume,
    )


def _show(path: str) -> str:
    """``jaxfit show``: a sweep directory's trials, or a run directory's summary."""
    from jaxfit._src.sweep import report

    if report.is_sweep_dir(path):
        return report.show(path)
    return runner.show(path)


def _configs_parser(commands: Any) -> None:
    configs = commands.add_parser(
        "configs", help="list the shipped configs, or copy them into DIR to edit"
    )
    configs.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="copy the shipped configs here (made if missing)",
    )


def _evaluate_parser(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="print a finished run's metrics on its test split (or other data)",
        description="Rebuild a finished run's trainer (jaxfit.load_run) and print "
        "its metrics, one 'name: value' line each.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--data",
        metavar="NAME",
        help="evaluate on this dataset (a data.name; its data.args start empty)",
    )
    _add_set(
        evaluate,
        "data.KEY=VALUE",
        "override a data key (data.args.K=V); other keys are refused",
    )
    evaluate.add_argument(
        "--split",
        default="test",
        help="test (default) or train: the dataset's test or train part",
    )
    evaluate.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="a checkpoint directory inside RUN_DIR instead of checkpoint/",
    )
    evaluate.add_argument(
        "--member",
        type=int,
        metavar="I",
        help="of a population run: member I (default: the best member)",
    )


def _evaluate(args: argparse.Namespace) -> str:
    """``jaxfit evaluate``: the metrics, one ``name: value`` line each."""
    try:
        metrics = load_lib._evaluate(
            args.run_dir,
            args.data,
            args.split,
            args.overrides,
            args.checkpoint,
            "--split",
            args.member,
        )
    except (ValueError, OSError) as error:  # a damaged checkpoint: its one line
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(" ".join(str(error).split())) from None
    return "\n".join(f"{name}: {value:.4f}" for name, value in metrics.items())


def _compare_parser(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="a table of runs' final metrics, and their learning curves",
        description="Compare run directories (or a sweep directory's trials): "
        "the best and final value of a metric per run, sorted, with the config "
        "values that differ; --out draws the learning curves.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument(
        "--metric",
        metavar="M",
        help="the log key to compare (default: the monitored one, else "
        "val_loss, else loss)",
    )
    compare.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "min", "max"),
        help="the direction of best (default: auto, as the monitor's)",
    )
    compare.add_argument(
        "--out", metavar="PNG", help="draw the learning curves into this PNG"
    )


def _compare(args: argparse.Namespace) -> str:
    """``jaxfit compare``: the table; each run without the metric named on
    stderr."""
    from jaxfit._src.runner import compare as compare_lib

    comparison = compare_lib.compare(
        args.run_dirs, metric=args.metric, mode=args.mode, out=args.out
    )
    for label in comparison.missing:
        print(
            f"jaxfit compare: {label} has no {comparison.metric} "
            "(never logged, or never finite)",
            file=sys.stderr,
        )
    return comparison.table()


def _import_dirs(args: argparse.Namespace) -> list[str]:
    """The directories ``module:callable`` names are imported from, first first:
    the config file's (see the module docstring), then the working directory."""
    source = None
    config = getattr(args, "config", None)
    if (
        args.command in ("run", "validate", "sweep")
        and config
        and os.path.isfile(config)
    ):
        source = config
    elif args.command == "run" and args.resume:
        source = _recorded_source(args.resume)
    elif args.command == "evaluate":
        source = _recorded_source(args.run_dir)
    found = [] if source is None else [os.path.dirname(os.path.abspath(source))]
    return [*found, os.getcwd()]


def _recorded_source(run_dir: str) -> str | None:
    """config.yaml's ``environment.config_file`` in ``run_dir``, if that file
    still exists (anything unreadable: ``None``; the command reports it)."""
    try:
        raw = yaml_reader.read(os.path.join(run_dir, "config.yaml"))[0]
        source = raw["environment"]["config_file"]
    except (ConfigError, OSError, ValueError, TypeError, KeyError):
        return None
    return source if isinstance(source, str) and os.path.isfile(source) else None


@contextlib.contextmanager
def _import_path(directories: list[str]) -> Iterator[None]:
    """``directories`` at the front of ``sys.path`` (those not there yet; the
    working directory counts as there when ``""`` is), for the block."""
    added = [
        d
        for d in directories
        if d not in sys.path and not (d == os.getcwd() and "" in sys.path)
    ]
    sys.path[:0] = added
    try:
        yield
    finally:
        for d in added:
            if d in sys.path:
                sys.path.remove(d)


def _version() -> str:
    try:  # the distribution's name ("jaxfit" on PyPI is another project)
        return importlib.metadata.version("jaxfit-trainer")
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path
        return "(not installed)"


def _configs(directory: str | None) -> str:
    """``jaxfit configs [DIR]``: the shipped configs' list, or what was copied."""
    if directory is not None:
        copied = config_lib.copy_shipped(directory)
        example = os.path.join(directory, "digits_mlp.yaml")
        return "\n".join(
            [
                f"copied into {directory}:",
                *(f"  {p.name}" for p in copied),
                f"run one: jaxfit run {example}",
            ]
        )
    configs = config_lib.shipped()
    width = max(map(len, configs))
    lines = [
        f"  {name:<{width}}  {config_lib.summary(path)}".rstrip()
        for name, path in configs.items()
    ]
    return "\n".join(
        [
            f"shipped configs ({config_lib.SHIPPED_DIR}):",
            *lines,
            "run one: jaxfit run NAME; copy them to edit: jaxfit configs DIR",
        ]
    )


def _cache_dir(text: str) -> str | bool:
    """``--compilation-cache``: a directory, or ``off`` (``False``)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory or off")
    return False if text == "off" else text


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the command; returns the exit code (2: a bad
    config, 130: interrupted by Ctrl-C, 143: preempted by SIGTERM).

    While the command runs, the config file's directory and the working directory
    are at the front of ``sys.path`` (see the module docstring).

    Args:
      argv: the arguments after ``jaxfit``. Defaults to `None`: ``sys.argv[1:]``.

    Returns:
      The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    with (
        warnings.catch_warnings(),
        _import_path(list(dict.fromkeys(_import_dirs(args)))),
    ):
        warnings.showwarning = functools.partial(_one_line_warning, args.command)
        return _main(parser, args)


def _one_line_warning(
    command: str, message: Any, category: Any, *args: Any, **kwargs: Any
) -> None:
    """A warning on the command line: one line on stderr, as the errors are
    (``jaxfit run: RuntimeWarning: BackupAndRestore: the backup ... is damaged``),
    instead of Python's two lines with a source line of jaxfit's."""
    del args, kwargs
    text = " ".join(str(message).split())
    print(f"jaxfit {command}: {category.__name__}: {text}", file=sys.stderr, flush=True)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            if (args.config is None) == (args.resume is None):
                parser.error("run: give a CONFIG or --resume RUN_DIR (not both)")
            runner.run(
                args.config,
                args.workdir,
                overrides=args.overrides,
                resume=args.resume,
                compilation_cache=args.compilation_cache,
            )
        elif args.command == "validate":
            config, kind = runner.validate(args.config, args.overrides)
            print(
                f"{args.config}: valid ({config.name}: model {config.model.name}, "
                f"data {config.data.name} ({kind}), optimizer "
                f"{config.optimizer.name})"
            )
        elif args.command == "configs":
            print(_configs(args.dir))
        elif args.command == "evaluate":
            print(_evaluate(args))
        elif args.command == "compare":
            print(_compare(args))
        elif args.command == "sweep":
            _sweep(parser, args)
        else:
            print(_show(args.run_dir))
    except ConfigError as error:
        print(f"jaxfit {args.command}: {error}", file=sys.stderr)
        return 2
    except runner.RunInterrupted:
        return 130  # Ctrl-C: the run printed where it stopped and how to resume
    except preemption.Preempted as error:
        return 128 + error.signum  # the run printed its line
    except KeyboardInterrupt:  # before a run directory existed
        print(
            f"jaxfit {args.command}: interrupted"
            + (
                " before training started; nothing was created"
                if args.command == "run"
                else ""
            ),
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
