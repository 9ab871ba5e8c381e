"""The `repmon` command line.

Each sub-command lives in its own module under monitor/commands/ with
`register(subparsers)`; COMMANDS lists them, and this module imports every one
of them for every command. So a command module imports only the standard
library at its top (plus `from __future__ import annotations`; names used only
in annotations are imported under `if TYPE_CHECKING:`), and its handler (and
the command's helper functions) import what they need inside the function: the
one place in this codebase where imports inside functions are allowed. That
way `repmon --help` (and a mistyped command) answers at once and `repmon parse`
does not pay for the database layer, the scheduler or HTTP clients.
tests/test_cli_startup.py checks that building the parser imports none of them.
This module itself imports only the standard library and monitor.core.errors.
A handler returns the process exit status.
"""

from __future__ import annotations

import argparse
import sys

from monitor.commands import (
    actions,
    dashboards,
    deliverylogs,
    dmarc,
    dnsbl,
    health,
    lanes,
    nodes,
    parse,
    policy,
    run,
    send,
    stats,
    suppressions,
    webhooks,
)
from monitor.core.errors import ConfigError

COMMANDS = (actions, dashboards, deliverylogs, dmarc, dnsbl, health, lanes, nodes, parse, policy, run, send, stats,
            suppressions, webhooks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repmon", description="Sender reputation monitor and throttled sender.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in sorted(COMMANDS, key=lambda m: m.__name__):
        command.register(subparsers)
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
