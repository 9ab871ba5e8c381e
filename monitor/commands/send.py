"""`repmon send --config FILE --template MESSAGE.eml --recipients LIST.csv
[--campaign NAME] [--pool NAME] [--wait] [--json]`: queue a campaign, and
with --wait deliver until nothing deliverable is left."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sender.coordinator import Sender


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "send", help="queue a campaign (template x recipient CSV) for the throttled sender",
        description="Personalise MESSAGE.eml ({{column}} placeholders) for every row of LIST.csv (address in the "
                    "'email' column) and queue one message per row. With --wait, deliver until the queue has no "
                    "deliverable message left (deferred ones wait for their retry, paused lanes keep theirs). "
                    "An address is queued once per campaign unless --allow-duplicates.")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon.toml")
    parser.add_argument("--template", required=True, metavar="MESSAGE.eml")
    parser.add_argument("--recipients", required=True, metavar="LIST.csv")
    parser.add_argument("--campaign", metavar="NAME", help="campaign name (default: the template's file name)")
    parser.add_argument("--pool", metavar="NAME", default=None, help="IP pool to send from (default: 'default')")
    parser.add_argument("--wait", action="store_true", help="deliver now, until nothing deliverable is left")
    parser.add_argument("--allow-duplicates", action="store_true",
                        help="queue every row, even for an address the campaign already has (from this file or an "
                             "earlier run; by default such rows are skipped, so re-running a run that stopped "
                             "half-way queues only the rest)")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON object: queued, delivered, deferred, bounced, suppressed, "
                             "duplicates, invalid, elapsed_s, rate_per_s (delivered per second with --wait, queued "
                             "per second without); deferred counts only with --wait (without it nothing was tried)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio  # 40 ms: not for `repmon --help`

    from monitor.config import load_config
    from monitor.core.db import make_engine
    from monitor.core.errors import ConfigError
    from monitor.parts import upgrade_schema
    from sender.campaign import CampaignError, inject
    from sender.coordinator import Sender
    from sender.queue import counts_by_state
    from sender.unsubscribe import UnsubscribeConfigError, header_builder

    config = load_config(args.config)
    sender_config = config.sender
    pool = args.pool or "default"
    pools = {ip.pool for ip in sender_config.ips} or {"default"}
    if pool not in pools:
        raise ConfigError(f"pool {pool!r} has no [[sender.ips]] (pools: {', '.join(sorted(pools))})")
    campaign = args.campaign or Path(args.template).stem
    started = time.monotonic()
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        try:
            unsubscribe = header_builder(sender_config.unsubscribe) if sender_config.unsubscribe else None

            result = inject(engine, sender_config, Path(args.template), Path(args.recipients),
                            campaign=campaign, pool=pool, unsubscribe_header=unsubscribe,
                            allow_duplicates=args.allow_duplicates)
        except (CampaignError, UnsubscribeConfigError) as exc:
            print(f"repmon send: {exc}", file=sys.stderr)
            return 2
        for line, value, why in result.invalid:
            print(f"repmon send: {args.recipients}:{line}: {value!r}: {why} (not queued)", file=sys.stderr)
        if args.wait:
            # Queued first, then delivered: overlapping the two on one
            # interpreter measured slower (they contend for the GIL and for
            # SQLite's write lock) than doing them one after the other.
            asyncio.run(_deliver(Sender(sender_config, engine)))
        with engine.connect() as conn:
            counts = counts_by_state(conn, campaign=campaign, min_id=result.first_id)
    finally:
        engine.dispose()
    elapsed = time.monotonic() - started
    delivered = counts.get("delivered", 0)
    summary = {
        "campaign": campaign,
        "queued": result.queued,
        "delivered": delivered,
        # Without --wait nothing was attempted: what waits is queued, not deferred.
        "deferred": counts.get("queued", 0) + counts.get("inflight", 0) if args.wait else 0,
        "bounced": counts.get("bounced", 0) + counts.get("expired", 0),
        "suppressed": counts.get("suppressed", 0),
        "duplicates": result.duplicates,
        "invalid": len(result.invalid),
        "elapsed_s": round(elapsed, 3),
        "rate_per_s": round((delivered if args.wait else result.queued) / elapsed, 1) if elapsed > 0 else 0.0,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        dupes = f", {summary['duplicates']} duplicates skipped" if summary["duplicates"] else ""
        if args.wait:
            print(f"campaign {campaign}: {summary['queued']} queued, {summary['delivered']} delivered, "
                  f"{summary['deferred']} deferred, {summary['bounced']} bounced, {summary['suppressed']} "
                  f"suppressed{dupes}, {summary['invalid']} invalid rows, {summary['elapsed_s']} s "
                  f"({summary['rate_per_s']}/s)")
        else:
            print(f"campaign {campaign}: {summary['queued']} queued (`repmon run` delivers them, or use --wait), "
                  f"{summary['suppressed']} suppressed{dupes}, {summary['invalid']} invalid rows, "
                  f"{summary['elapsed_s']} s ({summary['rate_per_s']}/s)")
    return 1 if result.invalid and not result.queued else 0


async def _deliver(sender: Sender) -> None:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, sender.stop)  # finish in-flight transactions, hand the rest back
        except (NotImplementedError, RuntimeError):
            pass
    await sender.run(until_idle=True)
