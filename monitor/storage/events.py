"""Writing per-recipient events into storage's event table, for parts that
produce events themselves (the sender's own bounces) rather than ingesting
them: they call this instead of touching storage's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from monitor.storage.models import StoredEvent
from monitor.storage.rows import event_row


def insert_events(conn: Connection, events: Sequence[Any]) -> int:
    """Insert events (BounceEvent and the other per-recipient kinds) that
    belong to no ingested message; each occurred at its arrival date.
    Returns how many rows were written."""
    if not events:
        return 0
    rows = [event_row(e, message_pk=None, occurred_at=e.arrival_date) for e in events]
    conn.execute(StoredEvent.__table__.insert(), rows)  # type: ignore[attr-defined]
    return len(rows)


def insert_event_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert rows made with `monitor.storage.rows.event_row` (with the
    occurrence time the caller knows); their ids, in the order given."""
    if not rows:
        return []
    table = StoredEvent.__table__  # type: ignore[attr-defined]
    result = conn.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), list(rows))
    return [int(i) for i in result.scalars().all()]
