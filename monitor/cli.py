"""The `repmon` command line.

Each sub-command lives in its own module under monitor/commands/ with
`register(subparsers)`; COMMANDS lists them. A command module imports only the
standard library at its top, and its handler imports what it needs, so that
`repmon --help` (and a mistyped command) answers at once. A handler returns the
process exit status.
"""

from __future__ import annotations

import argparse
import sys

from monitor.commands import (
    actions,
    dashboards,
    deliverylogs,
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
from monitor.core.config import ConfigError

COMMANDS = (actions, dashboards, deliverylogs, dnsbl, health, lanes, nodes, parse, policy, run, send, stats,
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
