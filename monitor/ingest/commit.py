"""Step two of ingestion: one transaction per batch of prepared messages.

See monitor/ingest/__init__.py for why this gives exactly-once. Everything a
batch writes - ledger rows, events, reports, suppressions, quarantine rows,
the IMAP checkpoint and pending moves, the local folder's seen files - is
committed together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session, SQLModel, col

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.ingest.messages import Prepared
from monitor.ingest.settings import SuppressionConfig
from monitor.ingest.suppress import StoredRow, apply_suppressions
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
from monitor.storage.rows import (
    EVENT_KINDS,
    clean_text,
    dmarc_failure_row,
    dmarc_record_rows,
    dmarc_report_row,
    event_row,
    tls_policy_rows,
    tls_report_row,
)
from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent

log = logging.getLogger("repmon.ingest")

STORED = "stored"
QUARANTINED = "quarantined"
# Raw bytes of a quarantined message are kept in the database up to this size;
# above it only the pointer (`location`) is kept.
QUARANTINE_RAW_LIMIT = 10 * 1024 * 1024


@dataclass(slots=True)
class ImapPosition:
    """Where a batch of IMAP messages comes from and where they go."""

    folder: str
    uidvalidity: int
    processed_folder: str
    quarantine_folder: str
    checkpoint_uid: int | None = None  # the highest UID this batch settles


@dataclass(slots=True)
class SeenFile:
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(slots=True)
class CommitResult:
    stored: int = 0  # new messages whose events were stored
    quarantined: int = 0  # new messages quarantined
    duplicates: int = 0  # already in the ledger: not counted again
    events: int = 0
    suppressions: int = 0
    moves: dict[str, list[int]] = field(default_factory=dict)  # IMAP: target folder -> UIDs

    def add(self, other: CommitResult) -> None:
        self.stored += other.stored
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.events += other.events
        self.suppressions += other.suppressions
        for target, uids in other.moves.items():
            self.moves.setdefault(target, []).extend(uids)

    @property
    def messages(self) -> int:
        return self.stored + self.quarantined + self.duplicates


def is_transient(exc: BaseException) -> bool:
    """A database that is down or busy, as opposed to a problem with one message."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def commit_batch(
    engine: Engine,
    source: str,
    batch: list[Prepared],
    settings: SuppressionConfig,
    *,
    imap: ImapPosition | None = None,
    location: Callable[[Prepared], str | None] | None = None,
    seen_files: list[SeenFile] | None = None,
) -> CommitResult:
    """Store a batch in one transaction. Retried once when another writer
    stored one of the same messages or reports at the same moment."""
    for attempt in range(3):
        try:
            with session_scope(engine) as session:
                return _commit(session, source, batch, settings, imap, location, seen_files or [])
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("concurrent writer stored the same message or report; retrying the batch",
                     extra={"source": source})
    raise AssertionError("unreachable")


def _commit(session: Session, source: str, batch: list[Prepared], settings: SuppressionConfig,
            imap: ImapPosition | None, location: Callable[[Prepared], str | None] | None,
            seen_files: list[SeenFile]) -> CommitResult:
    result = CommitResult()
    hashes = list({p.sha256 for p in batch})
    known: dict[str, str] = {}
    for start in range(0, len(hashes), 500):
        for sha, outcome in session.execute(
            select(col(ProcessedMessage.content_sha256), col(ProcessedMessage.outcome))
            .where(col(ProcessedMessage.content_sha256).in_(hashes[start:start + 500]))
        ):
            known[sha] = outcome

    fresh: list[Prepared] = []
    outcome_of: dict[str, str] = dict(known)
    for prepared in batch:
        if prepared.sha256 in outcome_of:
            result.duplicates += 1
            continue
        outcome_of[prepared.sha256] = QUARANTINED if prepared.quarantine_reason else STORED
        fresh.append(prepared)

    if fresh:
        _store_fresh(session, source, fresh, outcome_of, settings, imap, location, result)

    if imap is not None:
        _record_imap_progress(session, source, batch, outcome_of, imap, result)
    if seen_files:
        _record_seen_files(session, source, seen_files)
    if fresh:
        session.execute(delete(MessageFailure).where(col(MessageFailure.content_sha256).in_([p.sha256 for p in fresh])))
    return result


def _store_fresh(session: Session, source: str, fresh: list[Prepared], outcome_of: dict[str, str],
                 settings: SuppressionConfig, imap: ImapPosition | None,
                 location: Callable[[Prepared], str | None] | None, result: CommitResult) -> None:
    ledger_rows = [
        {
            "content_sha256": p.sha256,
            "size": p.size,
            "source": source[:255],
            "folder": imap.folder if imap else None,
            "uidvalidity": imap.uidvalidity if imap else None,
            "uid": p.uid,
            "outcome": outcome_of[p.sha256],
            "event_count": sum(1 for e in p.events if not isinstance(e, UnparseableEvent)),
            "header_message_id": p.header_message_id,
            "header_date": p.header_date,
            "processed_at": p.received_at,
        }
        for p in fresh
    ]
    # Core inserts with executemany: one cached statement, no ORM bookkeeping.
    connection = session.connection()
    ledger = ProcessedMessage.__table__  # type: ignore[attr-defined]
    ids = connection.execute(
        insert(ledger).returning(ledger.c.id, sort_by_parameter_order=True), ledger_rows
    ).scalars().all()
    message_pk = dict(zip((p.sha256 for p in fresh), ids, strict=False))

    event_rows: list[dict[str, Any]] = []
    failure_rows: list[dict[str, Any]] = []
    for prepared in fresh:
        pk = message_pk[prepared.sha256]
        for event in prepared.events:
            if isinstance(event, EVENT_KINDS):
                event_rows.append(event_row(event, message_pk=pk, occurred_at=prepared.occurred_at))
            elif isinstance(event, DmarcFailureEvent):
                failure_rows.append(dmarc_failure_row(event, message_pk=pk, occurred_at=prepared.occurred_at))
            elif isinstance(event, DmarcAggregateEvent):
                result.events += _store_aggregate(session, event, pk)
            elif isinstance(event, TlsReportEvent):
                result.events += _store_tls(session, event, pk)
        if outcome_of[prepared.sha256] == QUARANTINED:
            result.quarantined += 1
            session.add(QuarantinedMessage(
                content_sha256=prepared.sha256,
                source=source[:255],
                folder=imap.folder if imap else None,
                uid=prepared.uid,
                size=prepared.size,
                reason=prepared.quarantine_reason or "unknown",
                raw=prepared.raw if prepared.raw is not None and prepared.size <= QUARANTINE_RAW_LIMIT else None,
                location=location(prepared) if location else None,
                header_message_id=prepared.header_message_id,
                subject=prepared.subject,
                quarantined_at=prepared.received_at,
            ))
        else:
            result.stored += 1

    if event_rows:
        events = StoredEvent.__table__  # type: ignore[attr-defined]
        inserted = connection.execute(
            insert(events).returning(
                events.c.id, events.c.kind, events.c.recipient, events.c.occurred_at,
                events.c.hard_or_soft, events.c.reason, events.c.feedback_type, events.c.action,
                sort_by_parameter_order=True,
            ),
            event_rows,
        ).all()
        result.events += len(inserted)
        stored = [StoredRow(id=r.id, kind=r.kind, recipient=r.recipient, occurred_at=r.occurred_at,
                            hard_or_soft=r.hard_or_soft, reason=r.reason, feedback_type=r.feedback_type,
                            action=r.action)
                  for r in inserted]
        result.suppressions += apply_suppressions(session, stored, settings)
    if failure_rows:
        connection.execute(insert(DmarcFailure.__table__), failure_rows)  # type: ignore[attr-defined]
        result.events += len(failure_rows)
    session.flush()


def _store_aggregate(session: Session, event: DmarcAggregateEvent, message_pk: int) -> int:
    """Insert a DMARC aggregate report unless the same report is stored already."""
    return _store_report_once(
        session, DmarcReport, dmarc_report_row(event, message_pk=message_pk), ("org_name", "domain", "report_id"),
        DmarcRecord, lambda report_pk: dmarc_record_rows(event, report_pk=report_pk),
    )


def _store_tls(session: Session, event: TlsReportEvent, message_pk: int) -> int:
    """Insert an SMTP TLS report unless the same report is stored already."""
    return _store_report_once(
        session, TlsReport, tls_report_row(event, message_pk=message_pk), ("organization_name", "report_id"),
        TlsPolicyResult, lambda report_pk: tls_policy_rows(event, report_pk=report_pk),
    )


def _store_report_once(session: Session, report_model: type[SQLModel], row: dict[str, Any], identity: tuple[str, ...],
                       child_model: type[SQLModel], child_rows: Callable[[int], list[dict[str, Any]]]) -> int:
    """Insert a report row and its child rows unless a report with the same
    `identity` columns is stored already: 1 when inserted, 0 when it was there."""
    exists = session.execute(
        select(report_model.id).where(  # type: ignore[attr-defined]
            *(getattr(report_model, column) == row[column] for column in identity))
    ).first()
    if exists:
        return 0
    reports = report_model.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    report_pk = connection.execute(insert(reports).returning(reports.c.id), row).scalar_one()
    children = child_rows(report_pk)
    if children:
        connection.execute(insert(child_model.__table__), children)  # type: ignore[attr-defined]
    return 1


def _upsert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _record_imap_progress(session: Session, source: str, batch: list[Prepared], outcome_of: dict[str, str],
                          imap: ImapPosition, result: CommitResult) -> None:
    moves = []
    for prepared in batch:
        if prepared.uid is None:
            continue
        target = imap.quarantine_folder if outcome_of[prepared.sha256] == QUARANTINED else imap.processed_folder
        result.moves.setdefault(target, []).append(prepared.uid)
        moves.append({"source": source[:255], "folder": imap.folder, "uidvalidity": imap.uidvalidity,
                      "uid": prepared.uid, "target": target, "created_at": utcnow()})
    upsert = _upsert(session)
    if moves:
        session.connection().execute(upsert(PendingMove.__table__).on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=["source", "folder", "uidvalidity", "uid"]), moves)
    if imap.checkpoint_uid is not None:
        save_checkpoint(session, source, imap.folder, imap.uidvalidity, imap.checkpoint_uid)


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


def _record_seen_files(session: Session, source: str, files: list[SeenFile]) -> None:
    upsert = _upsert(session)
    rows = [{"source": source[:255], "path": f.path[:1024], "size": f.size, "mtime_ns": f.mtime_ns,
             "content_sha256": f.sha256, "seen_at": utcnow()} for f in files]
    stmt = upsert(FolderFile.__table__)  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "path"],
        set_={"size": stmt.excluded.size, "mtime_ns": stmt.excluded.mtime_ns,
              "content_sha256": stmt.excluded.content_sha256, "seen_at": stmt.excluded.seen_at},
    )
    session.connection().execute(stmt, rows)


def record_failure(engine: Engine, source: str, prepared: Prepared, error: BaseException,
                   folder: str | None = None) -> int:
    """Count one failed attempt at a message (own transaction); returns the count."""
    text = clean_text(f"{type(error).__name__}: {error}")[:2000]
    with session_scope(engine) as session:
        row = session.get(MessageFailure, prepared.sha256)
        if row is None:
            row = MessageFailure(content_sha256=prepared.sha256, source=source[:255], folder=folder,
                                 uid=prepared.uid, attempts=0, last_error=text)
            session.add(row)
        row.attempts += 1
        row.last_error = text
        row.last_failed_at = utcnow()
        session.flush()
        return row.attempts


@dataclass(slots=True)
class BatchOutcome:
    result: CommitResult
    # Index of the first message of the batch that is NOT settled (committed or
    # quarantined), and why; None when the whole batch is settled.
    stopped_at: int | None = None
    error: BaseException | None = None


def commit_isolating(
    engine: Engine,
    source: str,
    batch: list[Prepared],
    settings: SuppressionConfig,
    *,
    imap: ImapPosition | None = None,
    location: Callable[[Prepared], str | None] | None = None,
    seen_files: list[SeenFile] | None = None,
    max_attempts: int = 3,
) -> BatchOutcome:
    """Commit a batch; when it fails for a reason that is not the database
    being away, find the message responsible by committing one at a time.
    That message's failure is counted; once it has failed `max_attempts`
    times it is quarantined instead, so one bad message never blocks a
    mailbox for ever and is never retried in an endless loop."""
    try:
        return BatchOutcome(commit_batch(engine, source, batch, settings, imap=imap, location=location,
                                         seen_files=seen_files))
    except Exception as exc:
        if is_transient(exc):
            return BatchOutcome(CommitResult(), 0, exc)
        log.warning("batch failed, committing its messages one at a time: %s: %s", type(exc).__name__, exc,
                    extra={"source": source, "messages": len(batch)})
    total = CommitResult()
    for index, prepared in enumerate(batch):
        one_imap = None
        if imap is not None:
            one_imap = ImapPosition(imap.folder, imap.uidvalidity, imap.processed_folder, imap.quarantine_folder,
                                    checkpoint_uid=prepared.uid)
        files = [f for f in (seen_files or []) if f.sha256 == prepared.sha256]
        try:
            total.add(commit_batch(engine, source, [prepared], settings, imap=one_imap, location=location,
                                   seen_files=files))
            continue
        except Exception as exc:
            if is_transient(exc):
                return BatchOutcome(total, index, exc)
            error = exc
        attempts = record_failure(engine, source, prepared, error, imap.folder if imap else None)
        log.error("message could not be stored (attempt %d of %d): %s: %s", attempts, max_attempts,
                  type(error).__name__, error, extra={"source": source, "uid": prepared.uid, "sha256": prepared.sha256})
        if attempts < max_attempts:
            return BatchOutcome(total, index, error)
        forced = Prepared(
            sha256=prepared.sha256, size=prepared.size, raw=prepared.raw, events=[], uid=prepared.uid,
            header_message_id=prepared.header_message_id, header_date=prepared.header_date,
            subject=prepared.subject,
            forced_quarantine=clean_text(
                f"storing failed {attempts} times, last: {type(error).__name__}: {error}")[:2000],
        )
        total.add(commit_batch(engine, source, [forced], settings, imap=one_imap, location=location, seen_files=files))
    return BatchOutcome(total)
