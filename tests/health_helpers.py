"""Shared helpers of the health, policy and alert tests: rows as the other
parts store them (the sender's queue and delivery log, ingested events,
blocklist states and their events, DMARC rows), written straight into their
tables at times the tests choose."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from monitor.config import parse_config

# 2026-01-15 12:00:00 UTC: tests run on an injected clock around this moment.
T0 = 1_768_478_400.0
_ids = itertools.count(1)


def dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def config(**sections: Any):
    data = {"dnsbl": {"domains": ["example.com"]}}
    data.update(sections)
    return parse_config(data)


def add_deliveries(engine: Engine, *, ip: str, dest: str, n: int, at: float, outcome: str = "delivered",
                   rdomain: str = "yahoo.com", mail_from: str = "bounces@bounce.example.com") -> None:
    """n messages to rdomain through lane ip|dest with one delivery-log row each."""
    lane = f"{ip}|{dest}"
    with engine.begin() as conn:
        start = next(_ids) * 1_000_000
        messages = [{"campaign": "c", "pool": "default", "recipient": f"u{start + i}@{rdomain}", "domain": rdomain,
                     "mail_from": mail_from, "message_id": f"m{start + i}@example.com", "eight_bit": False,
                     "state": "delivered" if outcome == "delivered" else "queued", "lane": lane, "source_ip": ip,
                     "attempts": 1, "created_at": at, "next_attempt_at": at, "updated_at": at} for i in range(n)]
        conn.execute(text(
            "INSERT INTO sender_message (campaign, pool, recipient, domain, mail_from, message_id, eight_bit, state, "
            "lane, source_ip, attempts, created_at, next_attempt_at, updated_at) VALUES (:campaign, :pool, :recipient, "
            ":domain, :mail_from, :message_id, :eight_bit, :state, :lane, :source_ip, :attempts, :created_at, "
            ":next_attempt_at, :updated_at)"), messages)
        conn.execute(text(
            "INSERT INTO sender_delivery_log (message_ref, at, lane, recipient, outcome, attempt) "
            "SELECT id, :at, lane, recipient, :outcome, 1 FROM sender_message WHERE message_id LIKE :prefix"),
            {"at": at, "outcome": outcome, "prefix": f"m{start // 1_000_000}%"})


def add_events(engine: Engine, *, n: int, at: float, kind: str = "bounce", sending_ip: str | None = "127.0.0.2",
               sending_domain: str | None = "bounce.example.com", recipient_domain: str = "yahoo.com",
               hard_or_soft: str | None = None, reason: str | None = None, complaint: bool = False,
               smtp_agent: str | None = None, remote_mta: str | None = None, action: str | None = None) -> None:
    rows = [{"kind": kind, "occurred_at": dt(at), "stored_at": dt(at), "recipient": f"r{i}@{recipient_domain}",
             "recipient_domain": recipient_domain, "reason": reason, "hard_or_soft": hard_or_soft,
             "is_complaint": complaint, "feedback_type": "abuse" if complaint else None, "sending_ip": sending_ip,
             "sending_domain": sending_domain, "smtp_agent": smtp_agent, "remote_mta": remote_mta, "action": action}
            for i in range(n)]
    from monitor.storage.models import StoredEvent
    with engine.begin() as conn:
        conn.execute(StoredEvent.__table__.insert(), rows)


def set_listing(engine: Engine, target: str, zone: str, codes: list[str], *, at: float, state: str = "listed",
                reason: str = "", kind: str | None = None) -> None:
    """A blocklist state as the signals part stores it, and its event."""
    from monitor.signals.models import DnsblState, SignalEvent
    with engine.begin() as conn:
        previous = conn.execute(text("SELECT state FROM dnsbl_states WHERE target = :t AND zone = :z"),
                                {"t": target, "z": zone}).scalar()
        values = {"target": target, "zone": zone, "target_kind": "ip" if target[0].isdigit() else "domain",
                  "state": state, "codes": codes if state == "listed" else [], "reason": reason, "last_error": "",
                  "last_known": state, "changed_at": dt(at), "checked_at": dt(at)}
        if previous is None:
            conn.execute(DnsblState.__table__.insert(), values)
        else:
            conn.execute(DnsblState.__table__.update().where(DnsblState.target == target, DnsblState.zone == zone),
                         values)
        conn.execute(SignalEvent.__table__.insert(), {
            "occurred_at": dt(at), "source": "dnsbl", "kind": kind or ("listed" if state == "listed" else "delisted"),
            "subject": target, "zone": zone, "codes": codes, "reason": reason, "initial": previous is None,
            "details": {"previous": previous or "unknown", "current": state}})


def add_dmarc(engine: Engine, *, domain: str, source_ip: str, count: int, dkim: str, spf: str, begin: float) -> None:
    from monitor.storage.models import DmarcRecord, DmarcReport
    with engine.begin() as conn:
        report = conn.execute(DmarcReport.__table__.insert().values(
            report_id=f"r{next(_ids)}", org_name="google.com", domain=domain, begin=dt(begin), end=dt(begin + 86400),
            stored_at=dt(begin)).returning(DmarcReport.__table__.c.id)).scalar_one()
        conn.execute(DmarcRecord.__table__.insert(), {
            "report_pk": report, "domain": domain, "begin": dt(begin), "end": dt(begin + 86400),
            "source_ip": source_ip, "count": count, "dkim": dkim, "spf": spf, "header_from": domain})


def directives(engine: Engine, active: bool = True) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, source_ip, destination, kind, rate, created_by, expires_at, ended_at, end_reason "
            "FROM sender_lane_directive" + (" WHERE ended_at IS NULL" if active else "") + " ORDER BY id")).mappings()
        return [dict(r) for r in rows]


def control_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM sender_control")).scalar() or 0)
