"""`repmon stats [--json] --config FILE`: what is stored."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("stats", help="counts of stored events, quarantined messages and suppressions")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=run)


def collect(engine: Engine) -> dict[str, Any]:
    from monitor.core.dbtypes import utcnow
    from monitor.storage.reading import stored_summary

    return stored_summary(engine, utcnow())


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from monitor.config import load_config
    from monitor.core.db import make_engine, redact_url
    from monitor.parts import upgrade_schema

    config = load_config(args.config)
    engine = make_engine(config.database_url)
    try:
        upgrade_schema(engine)
        stats = collect(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"repmon stats: cannot read the database {redact_url(config.database_url)}: {reason}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(stats, sort_keys=True))
        return 0
    out = sys.stdout
    rows = [(f"events: {kind}", count) for kind, count in stats["events"].items()]
    rows += [("complaints", stats["complaints"]), ("messages ingested", stats["messages"]),
             ("quarantined", stats["quarantined"]), ("suppressed (active)", stats["suppressed"])]
    rows += [(f"  suppressed: {reason}", count) for reason, count in stats["suppressed_by_reason"].items()]
    rows += [("suppressions expired", stats["suppressions_expired"])]
    width = max(len(label) for label, _ in rows)
    for label, count in rows:
        out.write(f"{label:<{width}}  {count:>10}\n")
    return 0
