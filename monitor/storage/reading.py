"""Read-only queries over storage's tables, returning plain data: what the
metrics (and other readers above storage) show, without importing the tables.

`Tally` is the shape every part uses for an append-only table a reader counts
incrementally: `top_id` (the highest id now) and `scan` (totals of the rows in
an id range, per group). Other parts build theirs with `Tally` too
(monitor/signals/store.py, sender/stats.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement

from monitor.storage.models import (
    DmarcFailure,
    DmarcRecord,
    DmarcReport,
    ProcessedMessage,
    QuarantinedMessage,
    StoredEvent,
    Suppression,
    TlsPolicyResult,
    TlsReport,
)

Key = tuple[Any, ...]
# scan(conn, above_id, up_to_id or None) -> totals of the rows in that id range
Scan = Callable[[Connection, int, int | None], dict[Key, float]]


def _add(into: dict[Key, float], key: Key, amount: float) -> None:
    into[key] = into.get(key, 0.0) + amount


@dataclass(frozen=True, slots=True)
class Tally:
    """An append-only table counted by id range: `scan` sums per group."""

    table: Table
    scan: Scan

    def top_id(self, conn: Connection) -> int:
        return int(conn.execute(select(func.max(self.table.c.id))).scalar() or 0)


def grouped_tally(table: Table, group: Sequence[ColumnElement[Any]], value: ColumnElement[Any],
                  where: ColumnElement[bool] | None = None) -> Tally:
    """A Tally that sums `value` per `group` over an id range of `table`."""
    id_col = table.c.id

    def scan(conn: Connection, above: int, up_to: int | None) -> dict[Key, float]:
        query = select(*group, value).where(id_col > above)
        if up_to is not None:
            query = query.where(id_col <= up_to)
        if where is not None:
            query = query.where(where)
        query = query.group_by(*group)
        out: dict[Key, float] = {}
        for row in conn.execute(query):
            _add(out, tuple(row[:-1]), float(row[-1] or 0))
        return out

    return Tally(table, scan)


_events = StoredEvent.__table__  # type: ignore[attr-defined]
_messages = ProcessedMessage.__table__  # type: ignore[attr-defined]
_quarantine = QuarantinedMessage.__table__  # type: ignore[attr-defined]
_suppressions = Suppression.__table__  # type: ignore[attr-defined]
_dmarc = DmarcRecord.__table__  # type: ignore[attr-defined]
_dmarc_failures = DmarcFailure.__table__  # type: ignore[attr-defined]
_tls = TlsPolicyResult.__table__  # type: ignore[attr-defined]

# (kind, reason, hard_or_soft, feedback_type, is_complaint) -> events
EVENTS = grouped_tally(_events, [_events.c.kind, _events.c.reason, _events.c.hard_or_soft,
                                 _events.c.feedback_type, _events.c.is_complaint], func.count())
# (source, outcome) -> processed messages
MESSAGES = grouped_tally(_messages, [_messages.c.source, _messages.c.outcome], func.count())
# () -> messages ever quarantined
QUARANTINED = grouped_tally(_quarantine, [], func.count())
# (domain, source_ip, dkim, spf, disposition) -> messages
DMARC_MESSAGES = grouped_tally(_dmarc, [_dmarc.c.domain, _dmarc.c.source_ip, _dmarc.c.dkim, _dmarc.c.spf,
                                        _dmarc.c.disposition], func.coalesce(func.sum(_dmarc.c.count), 0))
# (source, source_type, source_ip, source_country, dkim, spf) -> messages; the source is
# the sending service, else the AS name, else the IP (monitor/storage/dmarc_sources.py)
DMARC_SOURCES = grouped_tally(_dmarc, [func.coalesce(_dmarc.c.source_name, _dmarc.c.source_as_name, _dmarc.c.source_ip),
                                       _dmarc.c.source_type, _dmarc.c.source_ip, _dmarc.c.source_country,
                                       _dmarc.c.dkim, _dmarc.c.spf], func.coalesce(func.sum(_dmarc.c.count), 0))
# (reported_domain, auth_failure) -> failure reports
DMARC_FAILURES = grouped_tally(_dmarc_failures, [_dmarc_failures.c.reported_domain, _dmarc_failures.c.auth_failure],
                               func.count())


def _tls_scan(conn: Connection, above: int, up_to: int | None) -> dict[Key, float]:
    """("sessions", domain, policy_type, "successful"|"failed") -> sessions and
    ("failed", domain, result_type) -> failed sessions, raw values."""
    t = _tls
    query = select(t.c.policy_domain, t.c.policy_type, t.c.successful_session_count,
                   t.c.failed_session_count, t.c.failure_details).where(t.c.id > above)
    if up_to is not None:
        query = query.where(t.c.id <= up_to)
    out: dict[Key, float] = {}
    for domain, policy_type, ok, failed, details in conn.execute(query):
        _add(out, ("sessions", domain, policy_type, "successful"), float(ok or 0))
        _add(out, ("sessions", domain, policy_type, "failed"), float(failed or 0))
        for detail in details or []:
            if isinstance(detail, dict):
                kind = detail.get("result_type")
                if kind is not None and not isinstance(kind, str):
                    kind = str(kind)
                count = detail.get("failed_session_count")
                _add(out, ("failed", domain, kind), float(count) if isinstance(count, (int, float)) else 0.0)
    return out


TLS_SESSIONS = Tally(_tls, _tls_scan)


def held_quarantine_count(conn: Connection) -> int:
    """Messages in quarantine not released yet."""
    t = _quarantine
    return int(conn.execute(select(func.count()).select_from(t).where(t.c.released_at.is_(None))).scalar() or 0)


def active_suppressions_by_reason(conn: Connection, at: datetime) -> list[tuple[str | None, int]]:
    """(reason, addresses) of the suppressions in force at `at`."""
    t = _suppressions
    rows = conn.execute(select(t.c.reason, func.count()).where(
        or_(t.c.expires_at.is_(None), t.c.expires_at > at)).group_by(t.c.reason))
    return [(reason, int(n)) for reason, n in rows]


def _count(conn: Connection, table: Table, where: ColumnElement[bool] | None = None) -> int:
    query = select(func.count()).select_from(table)
    if where is not None:
        query = query.where(where)
    return int(conn.execute(query).scalar_one())


def stored_summary(engine: Engine, now: datetime) -> dict[str, Any]:
    """What is stored: events by kind (reports too), complaints, messages,
    quarantine and suppressions (`repmon stats`)."""
    e, s = _events, _suppressions
    with engine.connect() as conn:
        events: dict[str, int] = {kind: int(n) for kind, n in
                                  conn.execute(select(e.c.kind, func.count()).group_by(e.c.kind))}
        events["dmarc_aggregate"] = _count(conn, DmarcReport.__table__)  # type: ignore[attr-defined]
        events["dmarc_failure"] = _count(conn, _dmarc_failures)
        events["tls_report"] = _count(conn, TlsReport.__table__)  # type: ignore[attr-defined]
        complaints = _count(conn, e, e.c.is_complaint.is_(True))
        messages = _count(conn, _messages)
        quarantined = _count(conn, _quarantine)
        active = or_(s.c.expires_at.is_(None), s.c.expires_at > now)
        by_reason: dict[str, int] = {reason: int(n) for reason, n in conn.execute(
            select(s.c.reason, func.count()).where(active).group_by(s.c.reason))}
        expired = _count(conn, s, ~active)
    return {
        "events": {kind: count for kind, count in sorted(events.items()) if count},
        "complaints": complaints,
        "messages": messages,
        "quarantined": quarantined,
        "suppressed": sum(by_reason.values()),
        "suppressed_by_reason": dict(sorted(by_reason.items())),
        "suppressions_expired": expired,
    }
