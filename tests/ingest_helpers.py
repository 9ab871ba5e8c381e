"""Helpers shared by the ingestion tests and bench/bench_ingest.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from monitor.config import RepmonConfig, parse_config
from monitor.core.db import session_scope
from monitor.storage.models import DmarcFailure, DmarcReport, QuarantinedMessage, StoredEvent
from monitor.storage.rows import EVENT_KINDS, normalize_recipient
from parsers import parse_bytes
from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, UnparseableEvent


def mailbox_section(account, **overrides: Any) -> dict[str, Any]:
    section = {
        "host": "127.0.0.1",
        "port": account.server.imap_port,
        "security": "none",
        "username": account.username,
        "password": account.password,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
        "timeout_s": 20.0,
    }
    section.update(overrides)
    return section


def make_config(db_url: str, base_dir: Path, mailboxes: list[dict] | None = None,
                folders: list[dict] | None = None, **extra: Any) -> RepmonConfig:
    data: dict[str, Any] = {"database": {"url": db_url}, "mailboxes": mailboxes or [], "folders": folders or []}
    data.update(extra)
    return parse_config(data, base_dir=base_dir)


def expected_events(raws: list[bytes]) -> Counter:
    """What the parsers say the messages contain, as (kind, recipient) counts."""
    expected: Counter = Counter()
    for raw in raws:
        for event in parse_bytes(raw):
            if isinstance(event, EVENT_KINDS):
                expected[(event.kind, normalize_recipient(getattr(event, "recipient", None)))] += 1
            elif isinstance(event, DmarcFailureEvent):
                expected[("dmarc_failure", normalize_recipient(event.original_rcpt_to))] += 1
            elif isinstance(event, DmarcAggregateEvent):
                expected[("dmarc_aggregate", event.report_id)] += 1
    return expected


def expected_quarantine(raws: list[bytes]) -> int:
    return sum(1 for raw in raws if any(isinstance(e, UnparseableEvent) for e in parse_bytes(raw)))


def stored_events(engine) -> Counter:
    stored: Counter = Counter()
    with session_scope(engine) as session:
        for kind, recipient in session.execute(select(StoredEvent.kind, StoredEvent.recipient)):
            stored[(kind, recipient)] += 1
        for (rcpt,) in session.execute(select(DmarcFailure.original_rcpt_to)):
            stored[("dmarc_failure", normalize_recipient(rcpt))] += 1
        for (report_id,) in session.execute(select(DmarcReport.report_id)):
            stored[("dmarc_aggregate", report_id)] += 1
    return stored


def quarantine_reasons(engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.execute(select(QuarantinedMessage.reason)).scalars())
