"""Read-only queries over this part's tables, returning plain data, for the
parts above (health's roll-up, metrics, `repmon delivery-logs status`).

`delivery_counts` is what health's roll-up reads, like the sender's delivery
log: new `mtalog_deliveries` rows by id, grouped by database per (source IP,
sending domain, destination, outcome, time bucket). Outcomes use health's
words: delivered, deferred, bounced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from monitor.mtalogs.models import MtaDelivery, MtaLogCheckpoint, MtaLogReject
from monitor.storage.reading import grouped_tally

_D = MtaDelivery.__table__  # type: ignore[attr-defined]
_CP = MtaLogCheckpoint.__table__  # type: ignore[attr-defined]
_REJ = MtaLogReject.__table__  # type: ignore[attr-defined]
TABLE = "mtalog_deliveries"  # for a reader that keeps an id cursor per table (health_cursors)

# (source, mta, outcome, destination) -> outcomes, by id range (metrics)
DELIVERIES = grouped_tally(_D, [_D.c.source, _D.c.mta, _D.c.outcome, _D.c.destination], func.count())


@dataclass(frozen=True, slots=True)
class DeliveryCount:
    ip: str | None
    domain: str | None  # sending domain (envelope sender's), as logged
    provider: str  # destination: provider name, "mx:<host>" or "other"
    outcome: str  # delivered | deferred | bounced
    bucket: int  # Unix seconds of the bucket's start
    count: int
    recipient_domain: str | None = None  # only with by_recipient_domain


def top_delivery_id(conn: Connection) -> int:
    return int(conn.execute(select(func.max(_D.c.id))).scalar() or 0)


def delivery_counts(conn: Connection, since_id: int, up_to_id: int | None = None, *, grain_s: int = 300,
                    ids: Sequence[int] | None = None, not_before: float | None = None,
                    by_recipient_domain: bool = False) -> list[DeliveryCount]:
    """Outcomes of the rows with since_id < id <= up_to_id (or of exactly `ids`,
    e.g. ids found late on PostgreSQL), per (ip, domain, provider, outcome,
    bucket of grain_s seconds); rows before `not_before` (Unix seconds) left out."""
    bucket = ((_D.c.at_epoch // grain_s) * grain_s).label("bucket")
    group = [_D.c.source_ip, _D.c.sending_domain, _D.c.destination, _D.c.outcome, bucket]
    if by_recipient_domain:
        group.append(_D.c.recipient_domain)
    query = select(*group, func.count())
    if ids is not None:
        query = query.where(_D.c.id.in_(list(ids)))
    else:
        query = query.where(_D.c.id > since_id)
        if up_to_id is not None:
            query = query.where(_D.c.id <= up_to_id)
    if not_before is not None:
        query = query.where(_D.c.at_epoch >= int(not_before))
    query = query.group_by(*group)
    out = []
    for row in conn.execute(query):
        out.append(DeliveryCount(ip=row[0], domain=row[1], provider=row[2], outcome=row[3], bucket=int(row[4]),
                                 count=int(row[-1]), recipient_domain=row[5] if by_recipient_domain else None))
    return out


@dataclass(frozen=True, slots=True)
class FileStatus:
    source: str
    path: str
    offset: int
    lines: int
    records: int
    rejected: int
    updated_at: datetime


def file_status(conn: Connection) -> list[FileStatus]:
    rows = conn.execute(select(_CP.c.source, _CP.c.path, _CP.c.offset, _CP.c.lines, _CP.c.records, _CP.c.rejected,
                               _CP.c.updated_at).order_by(_CP.c.source, _CP.c.updated_at))
    return [FileStatus(*row) for row in rows]


def reject_counts(conn: Connection) -> dict[str, int]:
    return {source: int(n) for source, n in conn.execute(select(_REJ.c.source, func.count()).group_by(_REJ.c.source))}


def recent_rejects(conn: Connection, source: str | None = None, limit: int = 20) -> list[tuple[str, str | None, str, str]]:
    """(source, path, reason, raw) of the latest rejected lines."""
    query = select(_REJ.c.source, _REJ.c.path, _REJ.c.reason, _REJ.c.raw).order_by(_REJ.c.id.desc()).limit(limit)
    if source is not None:
        query = query.where(_REJ.c.source == source)
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(query)]


def recipient_domains_by_destination(conn: Connection, since_epoch: float, per_destination: int = 50) -> dict[str, list[str]]:
    """The busiest recipient domains of each destination since `since_epoch`
    (for MTA configuration keyed by recipient domain, e.g. PowerMTA's <domain>)."""
    query = (select(_D.c.destination, _D.c.recipient_domain, func.count())
             .where(_D.c.at_epoch >= int(since_epoch), _D.c.recipient_domain.is_not(None))
             .group_by(_D.c.destination, _D.c.recipient_domain).order_by(func.count().desc()))
    out: dict[str, list[str]] = {}
    for destination, domain, _n in conn.execute(query):
        found = out.setdefault(destination, [])
        if len(found) < per_destination:
            found.append(domain)
    return out
