"""The ``jaxfit`` command: ``run``, ``validate`` and ``show`` (also ``python -m jaxfit``).

    jaxfit run CONFIG [--set key.path=value ...] [--workdir DIR]
               [--compilation-cache DIR|off]
    jaxfit run --resume RUN_DIR [--compilation-cache DIR|off]
    jaxfit validate CONFIG [--set key.path=value ...]
    jaxfit show RUN_DIR
"""

from __future__ import annotations

import argparse
import sys

from jaxfit._src.runner import run as runner
from jaxfit._src.runner.schema import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxfit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train from a YAML config")
    run.add_argument("config", nargs="?", help="the YAML config")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY.PATH=VALUE", help="override a config value")
    run.add_argument("--workdir", default="runs", help="where run directories go")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    run.add_argument("--compilation-cache", metavar="DIR|off", type=_cache_dir,
                     help="JAX's persistent compilation cache directory, or off "
                          "(default: the config's compilation_cache, "
                          "WORKDIR/.jax_cache)")
    validate = commands.add_parser(
        "validate", help="check a config and its data against it, train nothing")
    validate.add_argument("config")
    validate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY.PATH=VALUE")
    show = commands.add_parser("show", help="summarise a run directory")
    show.add_argument("run_dir")
    return parser


def _cache_dir(text: str) -> str | bool:
    """``--compilation-cache``: a directory, or ``off`` (``False``)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory or off")
    return False if text == "off" else text


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the command; returns the exit code (2: a bad
    config, 130: interrupted by Ctrl-C)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            if (args.config is None) == (args.resume is None):
                parser.error("run: give a CONFIG or --resume RUN_DIR (not both)")
            runner.run(args.config, args.workdir, overrides=args.overrides,
                       resume=args.resume, compilation_cache=args.compilation_cache)
        elif args.command == "validate":
            config, kind = runner.validate(args.config, args.overrides)
            print(f"{args.config}: valid ({config.name}: model {config.model.name}, "
                  f"data {config.data.name} ({kind}), optimizer "
                  f"{config.optimizer.name})")
        else:
            print(runner.show(args.run_dir))
    except ConfigError as error:
        print(f"jaxfit {args.command}: {error}", file=sys.stderr)
        return 2
    except runner.RunInterrupted:
        return 130  # Ctrl-C: the run printed where it stopped and how to resume
    except KeyboardInterrupt:  # before a run directory existed
        print(f"jaxfit {args.command}: interrupted"
              + (" before training started; nothing was created"
                 if args.command == "run" else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
