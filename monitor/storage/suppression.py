"""The suppression list: addresses the sender must not mail.

Used by ingestion (hard bounces, complaints, opt-outs, repeated soft bounces),
by the sender (a bulk check before every batch) and by the HTTP API.

Addresses are compared in lower case: mailbox providers treat the local part
case-insensitively in practice, and a suppression that misses `Bob@` because
it was stored as `bob@` is the worse mistake.

All functions take the caller's session and never commit: a suppression is
written in the same transaction as the event that caused it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col

from monitor.core.dbtypes import utcnow

# The managed list's audit and domain suppressions (the two modules import each
# other: neither uses the other while it is being imported).
from monitor.storage import suppression_admin as managed
from monitor.storage.models import Suppression

# Why an address is suppressed. Only soft_bounce expires.
HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
OPT_OUT = "opt_out"
SOFT_BOUNCE = "soft_bounce"
MANUAL = "manual"
SUPPRESSION_REASONS = (HARD_BOUNCE, COMPLAINT, OPT_OUT, SOFT_BOUNCE, MANUAL)
# When one address has several reasons the strongest is kept (a complaint
# outranks a bounce: it is the one that hurts reputation).
_STRENGTH = {SOFT_BOUNCE: 0, HARD_BOUNCE: 1, MANUAL: 2, OPT_OUT: 3, COMPLAINT: 4}

_CHUNK = 500  # addresses per IN (...) query; far below every driver's limit


def normalize_address(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


@dataclass(slots=True)
class SuppressionEntry:
    address: str
    reason: str
    source: str  # who decided: "bounce", "feedback", "api", "sender", ...
    detail: str | None = None  # e.g. the bounce reason or feedback type
    event_id: int | None = None
    seen_at: datetime | None = None
    expires_at: datetime | None = None  # None: never (hard reasons)


def suppressed_addresses(session: Session, addresses: Iterable[str], *, at: datetime | None = None) -> set[str]:
    """The given addresses (as given) that are on the list and not expired at `at`."""
    at = at or utcnow()
    by_normal: dict[str, list[str]] = {}
    for address in addresses:
        by_normal.setdefault(normalize_address(address), []).append(address)
    found: set[str] = set()
    normals = list(by_normal)
    for start in range(0, len(normals), _CHUNK):
        chunk = normals[start:start + _CHUNK]
        rows = session.execute(
            select(col(Suppression.address)).where(
                col(Suppression.address).in_(chunk),
                or_(col(Suppression.expires_at).is_(None), col(Suppression.expires_at) > at),
            )
        ).scalars()
        for normal in rows:
            found.update(by_normal[normal])
    given = [a for spellings in by_normal.values() for a in spellings]
    found.update(managed.suppressed_by_domain(session, given, at=at))
    return found


def is_suppressed(session: Session, address: str, *, at: datetime | None = None) -> bool:
    return bool(suppressed_addresses(session, [address], at=at))


def suppress(
    session: Session,
    address: str,
    reason: str,
    source: str,
    *,
    detail: str | None = None,
    event_id: int | None = None,
    seen_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Suppression | None:
    """Put one address on the list (or confirm it is there); returns the row (None: an
    operator removed the address and this evidence is not newer than the removal)."""
    entry = SuppressionEntry(address, reason, source, detail, event_id, seen_at, expires_at)
    return suppress_many(session, [entry]).get(normalize_address(address))


def suppress_many(session: Session, entries: Sequence[SuppressionEntry]) -> dict[str, Suppression]:
    """Add or confirm many suppressions at once; rows by normalized address.

    A new address is inserted; an existing one has its count and last_seen
    raised, and its reason upgraded when the new one is stronger (a hard
    reason also clears the expiry). A soft suppression that had expired comes
    back with the new expiry. Safe against another writer inserting the same
    address at the same moment (insert ... on conflict do nothing, then update).
    """
    for entry in entries:
        if entry.reason not in SUPPRESSION_REASONS:
            raise ValueError(f"unknown suppression reason {entry.reason!r}")
    entries = managed.skip_removed(session, entries)  # removed by an operator: only newer evidence counts
    now = utcnow()
    merged: dict[str, SuppressionEntry] = {}
    counts: dict[str, int] = {}
    first_seen: dict[str, datetime] = {}
    for entry in entries:
        address = normalize_address(entry.address)
        if not address or "@" not in address:
            raise ValueError(f"not an email address: {entry.address!r}")
        seen = entry.seen_at or now
        counts[address] = counts.get(address, 0) + 1
        first_seen[address] = min(first_seen.get(address, seen), seen)
        best = merged.get(address)
        if best is None or _stronger(entry, best):
            latest = seen if best is None else max(best.seen_at or seen, seen)
            merged[address] = SuppressionEntry(address, entry.reason, entry.source, entry.detail,
                                               entry.event_id, latest, entry.expires_at)
        else:
            best.seen_at = max(best.seen_at or seen, seen)
            if entry.expires_at is not None and best.expires_at is not None:
                best.expires_at = max(best.expires_at, entry.expires_at)

    insert_rows = [
        {
            "address": address,
            "domain": _domain(address),
            "reason": e.reason,
            "detail": _clip(e.detail, 255),
            "source": _clip(e.source, 64),
            "source_event_id": e.event_id,
            "first_seen_at": first_seen[address],
            "last_seen_at": e.seen_at,
            "count": counts[address],
            "expires_at": None if e.reason != SOFT_BOUNCE else e.expires_at,
        }
        for address, e in merged.items()
    ]
    inserted: set[str] = set()
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = Suppression.__table__  # type: ignore[attr-defined]
    if insert_rows:  # executemany of one cached statement; conflicting rows return nothing
        stmt = insert(table).on_conflict_do_nothing(index_elements=["address"]).returning(table.c.address)
        inserted.update(session.connection().execute(stmt, insert_rows).scalars())

    rows: dict[str, Suppression] = {}
    addresses = list(merged)
    for start in range(0, len(addresses), _CHUNK):
        query = select(Suppression).where(col(Suppression.address).in_(addresses[start:start + _CHUNK]))
        if dialect == "postgresql":
            query = query.with_for_update()
        for row in session.execute(query).scalars():
            rows[row.address] = row
    for address, entry in merged.items():
        row = rows[address]
        if address not in inserted:
            _confirm(row, entry, counts[address], first_seen[address], now)
    session.flush()
    return rows


def _confirm(row: Suppression, entry: SuppressionEntry, count: int, first_seen: datetime, now: datetime) -> None:
    """Update an existing row with new evidence."""
    seen = entry.seen_at or now
    was_active = row.expires_at is None or row.expires_at > now
    row.count += count
    row.last_seen_at = max(row.last_seen_at, seen)
    row.first_seen_at = min(row.first_seen_at, first_seen)
    if entry.reason == SOFT_BOUNCE:
        if row.reason == SOFT_BOUNCE:
            # repeated soft bounces push the expiry out (never shorten it)
            if entry.expires_at is not None and (row.expires_at is None or entry.expires_at > row.expires_at):
                row.expires_at = entry.expires_at
            if not was_active:
                row.source_event_id = entry.event_id
                row.detail = _clip(entry.detail, 255)
        return
    if row.reason == SOFT_BOUNCE or _STRENGTH[entry.reason] > _STRENGTH[row.reason]:
        row.reason = entry.reason
        row.detail = _clip(entry.detail, 255)
        row.source = _clip(entry.source, 64) or row.source
        row.source_event_id = entry.event_id if entry.event_id is not None else row.source_event_id
    row.expires_at = None


def _stronger(a: SuppressionEntry, b: SuppressionEntry) -> bool:
    return _STRENGTH[a.reason] > _STRENGTH[b.reason]


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


def unsuppress(session: Session, address: str) -> bool:
    """Take an address off the list (e.g. through the HTTP API); False if absent."""
    result = session.execute(delete(Suppression).where(col(Suppression.address) == normalize_address(address)))
    return bool(cast(CursorResult[Any], result).rowcount)


def active_suppression_count(session: Session, *, at: datetime | None = None) -> int:
    at = at or utcnow()
    return session.execute(
        select(func.count()).select_from(Suppression).where(
            or_(col(Suppression.expires_at).is_(None), col(Suppression.expires_at) > at)
        )
    ).scalar_one()


def addresses_from_source(session: Session, source: str) -> set[str]:
    """The addresses one source put on the list (e.g. one policy action)."""
    rows = session.execute(select(col(Suppression.address)).where(col(Suppression.source) == source))
    return {address for address in rows.scalars()}


def lift_source(session: Session, source: str, reason: str) -> int:
    """Take off the list what one source put there for `reason` (a policy
    action's manual suppressions when the action ends); how many."""
    result = session.execute(delete(Suppression).where(col(Suppression.source) == source,
                                                       col(Suppression.reason) == reason))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
