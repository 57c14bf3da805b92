"""Entry point of the ``fflab`` command. Each subcommand lives in its own module that defines
``add_parser(subparsers)`` (which registers the parser and sets ``func``) and a ``run(args)``."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FFLabError

# Imported lazily so `fflab env` does not pay for what `fflab train` needs.
SUBCOMMANDS = ["train", "eval", "readout", "recipes", "data", "plot", "bench", "env"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fflab", description="Forward-Forward (Hinton 2022): train, evaluate, plot, benchmark.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"fflab.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (`fflab train R --out D lr=0.1`): argparse leaves
    # them unrecognized, so we collect them here for the commands that take overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        rc = args.func(args)
    except FFLabError as e:
        print(f"fflab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint in the run folder is intact (resume with --resume)",
              file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
