"""The ``safealign`` command. Each subcommand lives in ``safealign/commands/<name>.py`` and defines
``add_parser(subparsers)``; this file only collects them, runs one, and turns a user error into one
line on stderr and exit code 2. Bugs keep their tracebacks.

To add a command: copy a sibling in ``commands/`` (it is picked up by name).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from safealign import __version__
from safealign.errors import SafealignError


def build_parser() -> argparse.ArgumentParser:
    import safealign.commands as commands

    parser = argparse.ArgumentParser(prog="safealign", description="Align a model for safety and helpfulness, and measure it.")
    parser.add_argument("--version", action="version", version=f"safealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"safealign.commands.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush does not complain either
        return 0
    except SafealignError as e:
        print(f"safealign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("safealign: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
