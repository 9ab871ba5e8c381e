"""Read-only queries over the sender's tables, returning plain data: queue
depth, delivery counts and what the directives and rule actions in force say
about each lane. The metrics read these instead of the sender's tables."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from monitor.core.sql import Ids, after_separator, bucket_epoch, id_filter
from monitor.storage.reading import Tally, grouped_tally
from sender.control import active_actions, active_directives
from sender.lanes import Lane, build_overlay
from sender.models import INFLIGHT, QUEUED, SenderDeliveryLog, SenderLane, SenderMessage

_messages = SenderMessage.__table__  # type: ignore[attr-defined]
_deliveries = SenderDeliveryLog.__table__  # type: ignore[attr-defined]
_lanes = SenderLane.__table__  # type: ignore[attr-defined]

# (lane key, outcome) -> delivery attempts logged
DELIVERIES: Tally = grouped_tally(_deliveries, [_deliveries.c.lane, _deliveries.c.outcome], func.count())


def queue_depths(conn: Connection) -> list[tuple[str, str | None, int]]:
    """(state, lane key, messages) of the waiting (queued or in-flight) messages."""
    t = _messages
    # Served by the claim index (state, lane, next_attempt_at): only waiting rows are read.
    rows = conn.execute(select(t.c.state, t.c.lane, func.count()).where(t.c.state.in_((QUEUED, INFLIGHT)))
                        .group_by(t.c.state, t.c.lane))
    return [(state, lane, int(n)) for state, lane, n in rows]


@dataclass(frozen=True, slots=True)
class LaneStatus:
    source_ip: str
    destination: str
    paused: bool
    halted: bool
    suspended: bool
    slowed: bool
    rate: float | None  # a directive's or action's rate; None: the configured one


@dataclass(frozen=True, slots=True)
class LaneOverview:
    lanes: list[LaneStatus]
    directives: list[str]  # kinds of the directives in force (resumes included)
    actions: list[str]  # actions of the rule actions in force


@dataclass(slots=True)
class _LaneRef:
    """What build_overlay reads of a lane."""

    source_ip: str
    destination: str


def _in_force(row: dict[str, Any], now: float) -> bool:
    return row["expires_at"] is None or row["expires_at"] > now


def lane_overview(conn: Connection, now: float) -> LaneOverview:
    """Every known lane with what the directives and actions in force at `now` say."""
    directives = active_directives(conn)
    actions = active_actions(conn)
    lanes: list[LaneStatus] = []
    for source_ip, destination in conn.execute(select(_lanes.c.source_ip, _lanes.c.destination)):
        overlay = build_overlay(cast(Lane, _LaneRef(source_ip, destination)), directives, actions, now)
        lanes.append(LaneStatus(
            source_ip=source_ip, destination=destination,
            paused=overlay.paused is not None,
            halted=overlay.halted is not None,
            suspended=overlay.suspended_until is not None and overlay.suspended_until > now,
            slowed=overlay.rate is not None or overlay.connections is not None or bool(overlay.slowed_by),
            rate=overlay.rate))
    return LaneOverview(lanes=lanes,
                        directives=[d["kind"] for d in directives if _in_force(d, now)],
                        actions=[a["action"] for a in actions if _in_force(a, now)])


def queued_recipients_of_domain(conn: Connection, domain: str) -> list[str]:
    """Recipients of the messages still queued or in flight for one recipient domain."""
    rows = conn.execute(text("SELECT DISTINCT recipient FROM sender_message "
                             "WHERE state IN ('queued', 'inflight') AND domain = :d"), {"d": domain})
    return [r[0] for r in rows if r[0]]


def ended_directives(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """Of these lane directives, those ended (by anyone), with the reason."""
    ended: dict[int, str] = {}
    ordered = sorted({int(i) for i in ids})
    for start in range(0, len(ordered), 500):
        chunk = ", ".join(str(i) for i in ordered[start:start + 500])
        for directive, reason in conn.execute(text(
                f"SELECT id, end_reason FROM sender_lane_directive WHERE ended_at IS NOT NULL AND id IN ({chunk})")):
            ended[int(directive)] = reason or "ended"
    return ended


# -- what health's roll-up reads -------------------------------------------------------------
#
# The delivery log is read by id ((lo, hi] ranges, or lists of ids found late on
# PostgreSQL) and grouped by the database, so the caller sees one row per
# (bucket, lane or destination, outcome, ...), never one per attempt. `not_before`
# (Unix seconds) leaves out older attempts.

DELIVERY_LOG_TABLE: str = _deliveries.name  # for a reader that keeps an id cursor per table (health_cursors)


def has_lanes(existing: Collection[str]) -> bool:
    """Whether the lanes table is among `existing` (table names, core.sql.table_names)."""
    return _lanes.name in existing


def has_delivery_log(existing: Collection[str]) -> bool:
    """Whether the tables the delivery-log reads below need are among `existing`."""
    return _deliveries.name in existing and _messages.name in existing


def lanes(conn: Connection) -> set[tuple[str, str]]:
    """(source IP, destination) of every known lane (both set)."""
    return {(ip, dest) for ip, dest in conn.execute(text("SELECT source_ip, destination FROM sender_lane"))
            if ip and dest}


def lane_outcomes(conn: Connection, ids: Ids, *, grain_s: int,
                  not_before: float) -> list[tuple[int, str | None, str, int]]:
    """(bucket, lane key, outcome, attempts) per bucket of grain_s seconds."""
    bucket = bucket_epoch(conn.dialect.name, "l.at", grain_s)
    rows = conn.execute(text(
        f"SELECT {bucket}, l.lane, l.outcome, COUNT(*) FROM sender_delivery_log l "
        f"WHERE {id_filter('l.id', ids)} AND l.at >= :after GROUP BY 1, 2, 3"), {"after": not_before})
    return [(int(b), lane, outcome, n) for b, lane, outcome, n in rows]


def sender_outcomes(conn: Connection, ids: Ids, *, grain_s: int,
                    not_before: float) -> list[tuple[int, str | None, str, str | None, int]]:
    """(bucket, destination, outcome, envelope sender, attempts) per bucket of grain_s
    seconds; attempts whose message is gone are left out."""
    dialect = conn.dialect.name
    rows = conn.execute(text(
        f"SELECT {bucket_epoch(dialect, 'l.at', grain_s)}, {after_separator(dialect, 'l.lane')}, l.outcome, "
        f"m.mail_from, COUNT(*) FROM sender_delivery_log l "
        f"JOIN sender_message m ON m.id = l.message_ref WHERE {id_filter('l.id', ids)} AND l.at >= :after "
        f"GROUP BY 1, 2, 3, 4"), {"after": not_before})
    return [(int(b), destination, outcome, mail_from, n) for b, destination, outcome, mail_from, n in rows]


def recipient_domain_outcomes(conn: Connection,
                              ids: Ids) -> list[tuple[int, str | None, str, str | None, int]]:
    """(day bucket, destination, outcome, recipient domain, attempts) of every attempt
    in `ids` (recipient domain None: the message is gone)."""
    dialect = conn.dialect.name
    rows = conn.execute(text(
        f"SELECT {bucket_epoch(dialect, 'l.at', 86400)}, {after_separator(dialect, 'l.lane')}, l.outcome, m.domain, "
        f"COUNT(*) FROM sender_delivery_log l LEFT JOIN sender_message m ON m.id = l.message_ref "
        f"WHERE {id_filter('l.id', ids)} GROUP BY 1, 2, 3, 4"))
    return [(int(b), destination, outcome, rdomain, n) for b, destination, outcome, rdomain, n in rows]
