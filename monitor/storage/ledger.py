"""Storage's API for ingested feedback mail: the message ledger, the events
and reports a message carries, quarantine, failed attempts and the sources'
progress (IMAP checkpoints, pending moves, a local folder's seen files).

Ingestion (monitor/ingest) decides what to store and calls these inside its
own transaction (a `Session`), so a batch is still committed all or nothing;
only storage touches its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Engine
from sqlmodel import Session, col

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.storage.models import (
    DmarcFailure,
    DmarcRecord,
    DmarcReport,
    FolderFile,
    MessageFailure,
    PendingMove,
    ProcessedMessage,
    QuarantinedMessage,
    SourceCheckpoint,
    StoredEvent,
    TlsPolicyResult,
    TlsReport,
)
from monitor.storage.rows import dmarc_record_rows, dmarc_report_row, tls_policy_rows, tls_report_row
from parsers.events import DmarcAggregateEvent, TlsReportEvent

_ledger: Table = ProcessedMessage.__table__  # type: ignore[attr-defined]
_events: Table = StoredEvent.__table__  # type: ignore[attr-defined]
_failures: Table = DmarcFailure.__table__  # type: ignore[attr-defined]
_pending: Table = PendingMove.__table__  # type: ignore[attr-defined]
_reports: Table = DmarcReport.__table__  # type: ignore[attr-defined]
_records: Table = DmarcRecord.__table__  # type: ignore[attr-defined]
_tls_reports: Table = TlsReport.__table__  # type: ignore[attr-defined]
_tls_policies: Table = TlsPolicyResult.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StoredEventRow:
    """What suppression rules read of an event just stored."""

    id: int
    kind: str
    recipient: str
    occurred_at: datetime
    hard_or_soft: str | None
    reason: str | None
    feedback_type: str | None
    action: str | None


def _upsert(session: Session) -> Callable[..., Any]:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


# --- the ledger, events and reports --------------------------------------------------------

def known_outcomes(session: Session, hashes: Sequence[str]) -> dict[str, str]:
    """content_sha256 -> outcome of the messages already in the ledger."""
    known: dict[str, str] = {}
    for start in range(0, len(hashes), 500):
        for sha, outcome in session.execute(
            select(col(ProcessedMessage.content_sha256), col(ProcessedMessage.outcome))
            .where(col(ProcessedMessage.content_sha256).in_(hashes[start:start + 500]))
        ):
            known[sha] = outcome
    return known


def insert_ledger(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Ledger rows (processed_messages columns); their ids, in order."""
    # Core inserts with executemany: one cached statement, no ORM bookkeeping.
    return list(session.connection().execute(
        insert(_ledger).returning(_ledger.c.id, sort_by_parameter_order=True), rows
    ).scalars().all())


def insert_events(session: Session, rows: list[dict[str, Any]]) -> list[StoredEventRow]:
    """Event rows (monitor.storage.rows.event_row); what was stored, in order."""
    e = _events
    inserted = session.connection().execute(
        insert(e).returning(e.c.id, e.c.kind, e.c.recipient, e.c.occurred_at, e.c.hard_or_soft, e.c.reason,
                            e.c.feedback_type, e.c.action, sort_by_parameter_order=True),
        rows,
    ).all()
    return [StoredEventRow(id=r.id, kind=r.kind, recipient=r.recipient, occurred_at=r.occurred_at,
                           hard_or_soft=r.hard_or_soft, reason=r.reason, feedback_type=r.feedback_type,
                           action=r.action)
            for r in inserted]


def insert_dmarc_failures(session: Session, rows: list[dict[str, Any]]) -> int:
    """DMARC failure report rows (monitor.storage.rows.dmarc_failure_row)."""
    if rows:
        session.connection().execute(insert(_failures), rows)
    return len(rows)


def store_dmarc_report(session: Session, event: DmarcAggregateEvent, message_pk: int) -> int:
    """Insert a DMARC aggregate report unless the same report is stored already."""
    return _store_report_once(
        session, _reports, dmarc_report_row(event, message_pk=message_pk), ("org_name", "domain", "report_id"),
        _records, lambda report_pk: dmarc_record_rows(event, report_pk=report_pk),
    )


def store_tls_report(session: Session, event: TlsReportEvent, message_pk: int) -> int:
    """Insert an SMTP TLS report unless the same report is stored already."""
    return _store_report_once(
        session, _tls_reports, tls_report_row(event, message_pk=message_pk), ("organization_name", "report_id"),
        _tls_policies, lambda report_pk: tls_policy_rows(event, report_pk=report_pk),
    )


def _store_report_once(session: Session, reports: Table, row: dict[str, Any], identity: tuple[str, ...],
                       children_table: Table, child_rows: Callable[[int], list[dict[str, Any]]]) -> int:
    """Insert a report row and its child rows unless a report with the same
    `identity` columns is stored already: 1 when inserted, 0 when it was there."""
    exists = session.execute(
        select(reports.c.id).where(*(reports.c[column] == row[column] for column in identity))
    ).first()
    if exists:
        return 0
    connection = session.connection()
    report_pk = connection.execute(insert(reports).returning(reports.c.id), row).scalar_one()
    children = child_rows(report_pk)
    if children:
        connection.execute(insert(children_table), children)
    return 1


def quarantine(session: Session, **fields: Any) -> None:
    """Keep a message that could not become events (quarantined_messages columns)."""
    session.add(QuarantinedMessage(**fields))


# --- failed attempts -----------------------------------------------------------------------

def clear_failures(session: Session, hashes: Iterable[str]) -> None:
    session.execute(delete(MessageFailure).where(col(MessageFailure.content_sha256).in_(list(hashes))))


def record_failure(engine: Engine, sha256: str, *, source: str, folder: str | None, uid: int | None,
                   error: str) -> int:
    """Count one failed attempt at a message (own transaction); returns the count."""
    with session_scope(engine) as session:
        row = session.get(MessageFailure, sha256)
        if row is None:
            row = MessageFailure(content_sha256=sha256, source=source[:255], folder=folder,
                                 uid=uid, attempts=0, last_error=error)
            session.add(row)
        row.attempts += 1
        row.last_error = error
        row.last_failed_at = utcnow()
        session.flush()
        return row.attempts


# --- sources' progress ---------------------------------------------------------------------

def add_pending_moves(session: Session, moves: list[dict[str, Any]]) -> None:
    """IMAP moves still to do (pending_moves columns); already known ones are kept."""
    if moves:
        session.connection().execute(_upsert(session)(_pending).on_conflict_do_nothing(
            index_elements=["source", "folder", "uidvalidity", "uid"]), moves)


def save_checkpoint(session: Session, source: str, folder: str, uidvalidity: int, last_uid: int) -> None:
    """Raise the folder's checkpoint to last_uid (a new UIDVALIDITY replaces it)."""
    row = session.execute(
        select(SourceCheckpoint).where(col(SourceCheckpoint.source) == source, col(SourceCheckpoint.folder) == folder)
    ).scalar_one_or_none()
    if row is None:
        stmt = _upsert(session)(SourceCheckpoint).values(
            source=source, folder=folder, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=utcnow()
        ).on_conflict_do_nothing(index_elements=["source", "folder"])
        if cast(CursorResult[Any], session.execute(stmt)).rowcount:
            return
        row = session.execute(
            select(SourceCheckpoint).where(col(SourceCheckpoint.source) == source,
                                           col(SourceCheckpoint.folder) == folder)
        ).scalar_one()
    if row.uidvalidity != uidvalidity:
        row.uidvalidity, row.last_uid = uidvalidity, last_uid
    else:
        row.last_uid = max(row.last_uid, last_uid)
    row.updated_at = utcnow()


def record_seen_files(session: Session, rows: list[dict[str, Any]]) -> None:
    """A local folder's files read (folder_files columns), replacing what was known of each path."""
    stmt = _upsert(session)(FolderFile.__table__)  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "path"],
        set_={"size": stmt.excluded.size, "mtime_ns": stmt.excluded.mtime_ns,
              "content_sha256": stmt.excluded.content_sha256, "seen_at": stmt.excluded.seen_at},
    )
    session.connection().execute(stmt, rows)


def seen_files(session: Session, source: str) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of the files a local folder source has read."""
    rows = session.execute(
        select(col(FolderFile.path), col(FolderFile.size), col(FolderFile.mtime_ns))
        .where(col(FolderFile.source) == source)
    ).all()
    return {path: (size, mtime) for path, size, mtime in rows}


# --- what suppression rules read ------------------------------------------------------------

def last_deliveries(session: Session, recipients: Sequence[str]) -> dict[str, datetime]:
    """recipient -> when a delivery to it last succeeded (delivery_success events)."""
    out: dict[str, datetime] = {}
    for recipient, when in session.execute(
        select(col(StoredEvent.recipient), func.max(col(StoredEvent.occurred_at)))
        .where(col(StoredEvent.recipient).in_(recipients), col(StoredEvent.kind) == "delivery_success")
        .group_by(col(StoredEvent.recipient))
    ):
        out[recipient] = when
    return out


def soft_bounces_since(session: Session, recipients: Sequence[str], since: datetime) -> list[Row[Any]]:
    """The soft bounces of these recipients from `since` on: recipient, occurred_at,
    reason, kind, hard_or_soft, action."""
    return list(session.execute(
        select(col(StoredEvent.recipient), col(StoredEvent.occurred_at), col(StoredEvent.reason),
               col(StoredEvent.kind), col(StoredEvent.hard_or_soft), col(StoredEvent.action))
        .where(col(StoredEvent.recipient).in_(recipients), col(StoredEvent.kind) == "bounce",
               col(StoredEvent.hard_or_soft) == "soft", col(StoredEvent.occurred_at) >= since)
    ))


def checkpoint_of(session: Session, source: str, folder: str) -> tuple[int, int] | None:
    """(uidvalidity, last settled UID) of an IMAP folder, None before its first pass."""
    row = session.execute(
        select(SourceCheckpoint).where(col(SourceCheckpoint.source) == source, col(SourceCheckpoint.folder) == folder)
    ).scalar_one_or_none()
    return None if row is None else (row.uidvalidity, row.last_uid)


def restart_folder(session: Session, source: str, folder: str, uidvalidity: int) -> None:
    """A new UIDVALIDITY: forget the folder's pending moves and start its checkpoint at 0."""
    session.execute(delete(PendingMove).where(col(PendingMove.source) == source, col(PendingMove.folder) == folder))
    save_checkpoint(session, source, folder, uidvalidity, 0)


def pending_moves(session: Session, source: str, folder: str, uidvalidity: int) -> list[tuple[str, int]]:
    """(target folder, UID) of the moves an interrupted pass left to do."""
    return [(target, uid) for target, uid in session.execute(
        select(col(PendingMove.target), col(PendingMove.uid)).where(
            col(PendingMove.source) == source, col(PendingMove.folder) == folder,
            col(PendingMove.uidvalidity) == uidvalidity)
    )]


def forget_moves(session: Session, source: str, folder: str, uidvalidity: int, uids: Sequence[int]) -> None:
    """Moves done: no longer pending."""
    session.execute(delete(PendingMove).where(
        col(PendingMove.source) == source, col(PendingMove.folder) == folder,
        col(PendingMove.uidvalidity) == uidvalidity, col(PendingMove.uid).in_(uids)))
