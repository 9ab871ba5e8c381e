"""`repmon webhooks status [--json] --config FILE`: per webhook, what waits in
the outbox (pending, lag = age of the oldest), the head's failed attempts
and error, totals delivered and failed, and rows not queued yet."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("webhooks", help="webhook delivery: lag and failures")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    status = verbs.add_parser("status", help="pending, lag and failures per webhook")
    status.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    status.add_argument("--json", action="store_true", help="JSON Lines: one object per webhook")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema
    from monitor.webhooks import outbox

    config = load_config(args.config)
    if not config.webhooks:
        print("no [[webhooks]] in the configuration", file=sys.stderr)
        return 1
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        with engine.connect() as conn:
            rows = outbox.status(conn, config.webhooks)
    finally:
        engine.dispose()
    for row in rows:
        if args.json:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            continue
        print(f"{row['webhook']}: {row['pending']} pending, lag {row['lag_s']:g}s, "
              f"delivered {row['delivered_total']}, failed attempts {row['failed_total']}")
        if row["head_attempts"]:
            print(f"  head failed {row['head_attempts']} times: {row['head_error']}; next try {row['next_attempt']}")
        if row["last_success"] or row["last_failure"]:
            print(f"  last success {row['last_success'] or '-'}, last failure {row['last_failure'] or '-'}")
        behind = {k: v for k, v in row["not_queued_yet"].items() if v}
        if behind:
            print("  not queued yet: " + ", ".join(f"{k} {v}" for k, v in behind.items()))
    return 0
