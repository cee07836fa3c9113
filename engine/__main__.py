"""Headless CLI: `python -m engine <command> ...`.

Each module in `engine/cli/` adds its own subcommands through `register(subparsers)`,
so commands live next to the code they drive and this file never grows.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from engine.errors import EngineError


def build_parser() -> argparse.ArgumentParser:
    import engine.cli as cli_pkg

    parser = argparse.ArgumentParser(prog="python -m engine", description="HuMo engine: generate lip-synced video headlessly.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"engine.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EngineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
