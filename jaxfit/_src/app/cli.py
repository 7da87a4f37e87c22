"""The ``jaxfit`` command: ``run``, ``validate``, ``show`` and ``configs`` (also
``python -m jaxfit``).

    jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
               [--compilation-cache DIR|off]
    jaxfit run --resume RUN_DIR [--compilation-cache DIR|off]
    jaxfit validate CONFIG [--set key.path=value ...]
    jaxfit show RUN_DIR
    jaxfit configs [DIR]

CONFIG is a YAML file or the name of a shipped config (``digits_mlp``);
``jaxfit configs`` lists the shipped ones and ``jaxfit configs DIR`` copies them
into DIR to edit.

Exit status: 0, 2 for a refused config or command (one line on stderr), 130
when Ctrl-C stopped a run and 143 (128 + SIGTERM) when a preemption did; both
print one line saying where the run stopped and the command that resumes it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import sys
import warnings
from typing import Any

from jaxfit._src.driver import preemption
from jaxfit._src.runner import config as config_lib
from jaxfit._src.runner import run as runner
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
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value",
    )
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
    validate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value",
    )
    show = commands.add_parser("show", help="summarise a run directory")
    show.add_argument("run_dir")
    configs = commands.add_parser(
        "configs", help="list the shipped configs, or copy them into DIR to edit"
    )
    configs.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="copy the shipped configs here (made if missing)",
    )
    return parser


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
    config, 130: interrupted by Ctrl-C, 143: preempted by SIGTERM)."""
    parser = _parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
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
        else:
            print(runner.show(args.run_dir))
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
