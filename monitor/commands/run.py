"""`repmon run --config FILE [--once] [--progress]`: the daemon."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the daemon: ingest feedback, poll signals, send")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--once", action="store_true", help="one pass of every job, then exit")
    parser.add_argument("--progress", action="store_true",
                        help="progress bars on stderr for large backlogs even when it is not a terminal")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio  # 40 ms: not for `repmon --help`

    from monitor import daemon
    from monitor.config import load_config
    from monitor.core.logs import configure_logging, register_secret

    config = load_config(args.config)
    configure_logging(config.logging)
    for mailbox in config.mailboxes:
        register_secret(mailbox.password)
    return asyncio.run(daemon.run(config, once=args.once, progress=args.progress))
