"""Reading and writing the signals tables (synchronous SQLAlchemy; callers run
these in a worker thread so the event loop never waits on the database).

Every text written here goes through monitor.core.logs.redact first: error
texts and reasons quote what servers answered, and a server may echo the
request URL with its key (SNDS) or a token."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from monitor.core.dbtypes import utcnow
from monitor.core.logs import redact, redact_value
from monitor.signals.models import DnsblState, DnsblZoneHealth, SignalEvent, SignalFetchState
from monitor.signals.state import TargetState, Transition, ZoneTransition

_STATE_FIELDS = ("target_kind", "state", "reason", "txt", "delist_url", "error_streak", "last_error",
                 "last_known", "changed_at", "checked_at")
_TEXT_FIELDS = ("reason", "txt", "last_error")


def load_dnsbl_states(session: Session) -> dict[tuple[str, str], TargetState]:
    states = {}
    for row in session.execute(select(DnsblState)).scalars():
        states[(row.target, row.zone)] = TargetState(
            target=row.target, zone=row.zone, state=row.state, codes=tuple(row.codes or ()), reason=row.reason,
            txt=row.txt, delist_url=row.delist_url, error_streak=row.error_streak, last_error=row.last_error,
            last_known=row.last_known, changed_at=row.changed_at, checked_at=row.checked_at,
            target_kind=row.target_kind)
    return states


def save_dnsbl_states(session: Session, states: Iterable[TargetState], existing: set[tuple[str, str]]) -> None:
    """Insert new (target, zone) rows and update the others, in bulk."""
    new_rows: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    for state in states:
        row = {"target": state.target, "zone": state.zone, "codes": list(state.codes)}
        row.update({name: getattr(state, name) for name in _STATE_FIELDS})
        for name in _TEXT_FIELDS:
            value = row[name]
            if isinstance(value, str) and value:
                row[name] = redact(value)
        (changed_rows if (state.target, state.zone) in existing else new_rows).append(row)
    if new_rows:
        session.execute(insert(DnsblState), new_rows)
    if changed_rows:
        session.execute(update(DnsblState), changed_rows)


def load_zone_health(session: Session) -> dict[str, DnsblZoneHealth]:
    return {row.zone: row for row in session.execute(select(DnsblZoneHealth)).scalars()}


def save_zone_health(session: Session, zone: str, status: str, detail: str, now: datetime,
                     previous: DnsblZoneHealth | None) -> None:
    if previous is None:
        session.add(DnsblZoneHealth(zone=zone, status=status, detail=redact(detail), checked_at=now, changed_at=now))
        return
    if previous.status != status:
        previous.changed_at = now
    previous.status = status
    previous.detail = redact(detail)
    previous.checked_at = now
    session.add(previous)


def listing_event(transition: Transition, now: datetime) -> SignalEvent:
    return SignalEvent(
        occurred_at=now, source="dnsbl", kind=transition.kind, subject=transition.target, zone=transition.zone,
        codes=list(transition.codes), reason=redact(transition.reason),
        txt=redact(transition.txt) if transition.txt else transition.txt,
        delist_url=transition.delist_url, initial=transition.initial,
        details={"previous": transition.previous, "current": transition.current,
                 "target_kind": transition.target_kind})


def zone_event(transition: ZoneTransition, now: datetime) -> SignalEvent:
    kind = "zone_ok" if transition.current == "ok" else f"zone_{transition.current}"
    return SignalEvent(occurred_at=now, source="dnsbl_zone", kind=kind, subject=transition.zone,
                       zone=transition.zone, reason=redact(transition.detail),
                       initial=transition.previous is None,
                       details={"previous": transition.previous, "current": transition.current})


def add_event(session: Session, *, source: str, kind: str, subject: str, reason: str,
              details: dict | None = None, initial: bool = False, now: datetime | None = None) -> SignalEvent:
    event = SignalEvent(occurred_at=now or utcnow(), source=source, kind=kind, subject=subject,
                        reason=redact(reason), details=redact_value(details or {}), initial=initial)
    session.add(event)
    return event


def record_fetch(session: Session, source: str, *, ok: bool, error: str | None = None,
                 http_status: int | None = None, now: datetime | None = None) -> tuple[SignalFetchState, str | None]:
    """Update a feed's fetch state; returns (row, previous status or None when new)."""
    now = now or utcnow()
    row = session.get(SignalFetchState, source)
    previous = row.status if row is not None else None
    if row is None:
        row = SignalFetchState(source=source)
    row.last_attempt_at = now
    row.http_status = http_status
    if ok:
        row.status, row.error, row.consecutive_failures, row.last_success_at = "ok", None, 0, now
    else:
        row.status, row.error = "error", redact(error) if error else error
        row.consecutive_failures = (row.consecutive_failures or 0) + 1
    session.add(row)
    return row, previous
