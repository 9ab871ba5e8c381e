"""`repmon stats [--json] --config FILE`: what is stored."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.config import load_config
from monitor.core.db import make_engine, redact_url, session_scope
from monitor.core.dbtypes import utcnow
from monitor.parts import upgrade_schema
from monitor.storage.models import (
    DmarcFailure,
    DmarcReport,
    ProcessedMessage,
    QuarantinedMessage,
    StoredEvent,
    Suppression,
    TlsReport,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="counts of stored events, quarantined messages and suppressions")
    parser.add_argument("--config", required=True, metavar="FILE", help="repmon TOML configuration")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=run)


def collect(engine: Engine) -> dict[str, Any]:
    now = utcnow()
    with session_scope(engine) as session:
        events = dict(session.execute(select(StoredEvent.kind, func.count()).group_by(StoredEvent.kind)).all())
        events["dmarc_aggregate"] = session.execute(select(func.count()).select_from(DmarcReport)).scalar_one()
        events["dmarc_failure"] = session.execute(select(func.count()).select_from(DmarcFailure)).scalar_one()
        events["tls_report"] = session.execute(select(func.count()).select_from(TlsReport)).scalar_one()
        complaints = session.execute(
            select(func.count()).select_from(StoredEvent).where(StoredEvent.is_complaint.is_(True))
        ).scalar_one()
        messages = session.execute(select(func.count()).select_from(ProcessedMessage)).scalar_one()
        quarantined = session.execute(select(func.count()).select_from(QuarantinedMessage)).scalar_one()
        active = (Suppression.expires_at.is_(None)) | (Suppression.expires_at > now)
        by_reason = dict(session.execute(
            select(Suppression.reason, func.count()).where(active).group_by(Suppression.reason)
        ).all())
        expired = session.execute(select(func.count()).select_from(Suppression).where(~active)).scalar_one()
    return {
        "events": {kind: count for kind, count in sorted(events.items()) if count},
        "complaints": complaints,
        "messages": messages,
        "quarantined": quarantined,
        "suppressed": sum(by_reason.values()),
        "suppressed_by_reason": dict(sorted(by_reason.items())),
        "suppressions_expired": expired,
    }


def run(args: argparse.Namespace) -> int:
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
