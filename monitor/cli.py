"""The `repmon` command line.

Each sub-command lives in its own module under monitor/commands/ and exposes
`register(subparsers)`; modules are discovered, so a new command is a new
file. A command's handler returns the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from monitor import commands
from monitor.core.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repmon", description="Sender reputation monitor and throttled sender.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"monitor.commands.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"repmon: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `repmon parse ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
