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
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.ingest.messages import Prepared
from monitor.ingest.settings import SuppressionConfig
from monitor.ingest.suppress import StoredRow, apply_suppressions
from monitor.storage import ledger
from monitor.storage.ledger import save_checkpoint
from monitor.storage.rows import EVENT_KINDS, clean_text, dmarc_failure_row, event_row
from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent

__all__ = ["BatchOutcome", "CommitResult", "ImapPosition", "SeenFile", "commit_batch", "commit_isolating",
           "is_transient", "record_failure", "save_checkpoint"]

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
    known = ledger.known_outcomes(session, list({p.sha256 for p in batch}))

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
        ledger.clear_failures(session, [p.sha256 for p in fresh])
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
    ids = ledger.insert_ledger(session, ledger_rows)
    message_pk = dict(zip((p.sha256 for p in fresh), ids, strict=False))

    event_rows: list[dict[str, Any]] = []
    failure_rows: list[dict[str, Any]] = []
    for prepared in fresh:
        pk = message_pk[prepared.sha256]
        built = prepared.rows
        if built is not None:  # built where it was parsed (monitor/ingest/pool.py)
            event_rows.extend({**row, "message_id": pk} for row in built.events)
            failure_rows.extend({**row, "message_id": pk} for row in built.failures)
        reports = iter(built.dmarc if built is not None else [])
        for event in prepared.events:
            if built is not None and isinstance(event, (*EVENT_KINDS, DmarcFailureEvent)):
                continue
            if built is not None and isinstance(event, DmarcAggregateEvent):
                result.events += ledger.store_dmarc_report(session, event, pk, next(reports))
                continue
            if isinstance(event, EVENT_KINDS):
                event_rows.append(event_row(event, message_pk=pk, occurred_at=prepared.occurred_at))
            elif isinstance(event, DmarcFailureEvent):
                failure_rows.append(dmarc_failure_row(event, message_pk=pk, occurred_at=prepared.occurred_at))
            elif isinstance(event, DmarcAggregateEvent):
                result.events += ledger.store_dmarc_report(session, event, pk)
            elif isinstance(event, TlsReportEvent):
                result.events += ledger.store_tls_report(session, event, pk)
        if outcome_of[prepared.sha256] == QUARANTINED:
            result.quarantined += 1
            ledger.quarantine(
                session,
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
            )
        else:
            result.stored += 1

    if event_rows:
        inserted = ledger.insert_events(session, event_rows)
        result.events += len(inserted)
        stored = [StoredRow(id=r.id, kind=r.kind, recipient=r.recipient, occurred_at=r.occurred_at,
                            hard_or_soft=r.hard_or_soft, reason=r.reason, feedback_type=r.feedback_type,
                            action=r.action)
                  for r in inserted]
        result.suppressions += apply_suppressions(session, stored, settings)
    if failure_rows:
        result.events += ledger.insert_dmarc_failures(session, failure_rows)
    session.flush()


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
    ledger.add_pending_moves(session, moves)
    if imap.checkpoint_uid is not None:
        save_checkpoint(session, source, imap.folder, imap.uidvalidity, imap.checkpoint_uid)


def _record_seen_files(session: Session, source: str, files: list[SeenFile]) -> None:
    ledger.record_seen_files(session, [
        {"source": source[:255], "path": f.path[:1024], "size": f.size, "mtime_ns": f.mtime_ns,
         "content_sha256": f.sha256, "seen_at": utcnow()} for f in files])


def record_failure(engine: Engine, source: str, prepared: Prepared, error: BaseException,
                   folder: str | None = None) -> int:
    """Count one failed attempt at a message (own transaction); returns the count."""
    text = clean_text(f"{type(error).__name__}: {error}")[:2000]
    return ledger.record_failure(engine, prepared.sha256, source=source, folder=folder, uid=prepared.uid, error=text)


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
