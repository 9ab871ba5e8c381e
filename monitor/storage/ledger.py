"""Storage's API for ingested feedback mail: the message ledger, the events
and reports a message carries, quarantine, failed attempts and the sources'
progress (IMAP checkpoints, pending moves, a local folder's seen files).

Ingestion (monitor/ingest) decides what to store and calls these inside its
own transaction (a `Session`), so a batch is still committed all or nothing;
only storage touches its tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, islice
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, CursorResult, Engine
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
from monitor.storage.rows import (
    DMARC_RECORD_COLUMNS,
    dmarc_record_values,
    dmarc_report_row,
    tls_policy_rows,
    tls_report_row,
)
from parsers.events import DmarcAggregateEvent, TlsReportEvent
from parsers.events import DmarcRecord as ReportedRecord

_ledger: Table = ProcessedMessage.__table__  # type: ignore[attr-defined]
_events: Table = StoredEvent.__table__  # type: ignore[attr-defined]
_failures: Table = DmarcFailure.__table__  # type: ignore[attr-defined]
_pending: Table = PendingMove.__table__  # type: ignore[attr-defined]
_reports: Table = DmarcReport.__table__  # type: ignore[attr-defined]
_records: Table = DmarcRecord.__table__  # type: ignore[attr-defined]
_tls_reports: Table = TlsReport.__table__  # type: ignore[attr-defined]
_tls_policies: Table = TlsPolicyResult.__table__  # type: ignore[attr-defined]

# Report rows (DMARC records, TLS policies) per INSERT executemany.
CHILD_BATCH = 5000

log = logging.getLogger("repmon.storage")

# Feedback dated before this is a broken or forged clock: an ARF "from year 0001"
# (which the mail date parser reads as 2001), an epoch-zero 1970. It would land
# outside every window, so the time it was stored (read moments before) is used.
EARLIEST_PLAUSIBLE = datetime(2005, 1, 1, tzinfo=UTC)
# Lone surrogates (undecodable bytes of a file name, os.fsdecode) and NUL, which no
# database column takes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code else "\\x00"


def storable_text(value: str) -> str:
    """Text every database accepts, losslessly: an undecodable byte of a file
    name (surrogateescape) becomes `\\xNN`, NUL `\\x00`, another lone surrogate
    `\\uXXXX`. Applying it twice changes nothing."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub(_escape_char, value)


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
    for row in rows:
        _clamp_occurred_at(row, "occurred_at", note_in="details")
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
    for row in rows:
        _clamp_occurred_at(row, "occurred_at")
    if rows:
        session.connection().execute(insert(_failures), rows)
    return len(rows)


def _clamp_occurred_at(row: dict[str, Any], column: str, note_in: str | None = None) -> None:
    """An implausibly old date (year 0001 ...) becomes the time the message is
    stored (it was read moments ago), with a note of the date it claimed."""
    when = row.get(column)
    if not isinstance(when, datetime):
        return
    if (when if when.tzinfo else when.replace(tzinfo=UTC)) >= EARLIEST_PLAUSIBLE:
        return
    row[column] = utcnow()
    if note_in is not None:
        details = dict(row.get(note_in) or {})
        details["occurred_at_note"] = (f"dated {when.isoformat()}, before {EARLIEST_PLAUSIBLE.year}: "
                                       "stored at the time it was read")
        row[note_in] = details


def store_dmarc_report(session: Session, event: DmarcAggregateEvent, message_pk: int,
                       built: BuiltDmarcRecords | None = None) -> int:
    """Insert a DMARC aggregate report unless the same report is stored already.
    `built`: its content hash and record rows made beforehand (build_dmarc_records,
    where the report was parsed); the event's own records are then not read."""
    if built is None:
        built = BuiltDmarcRecords(report_content_hash(event), None)
    values = built.values

    def rows(report_pk: int) -> RowTuples:
        if values is None:
            return RowTuples(DMARC_RECORD_COLUMNS, dmarc_record_values(event, report_pk=report_pk))
        return RowTuples(DMARC_RECORD_COLUMNS, ((report_pk, *row) for row in values))

    return _store_report_once(
        session, _reports, dmarc_report_row(event, message_pk=message_pk), ("org_name", "domain", "report_id"),
        _records, rows, built.content_sha256,
    )


@dataclass(slots=True)
class BuiltDmarcRecords:
    """A report's content hash and its dmarc_records rows without report_pk
    (DMARC_RECORD_COLUMNS[1:]), made ahead of the transaction."""

    content_sha256: str
    values: list[tuple[Any, ...]] | None


def build_dmarc_records(event: DmarcAggregateEvent) -> BuiltDmarcRecords:
    """What store_dmarc_report needs of a report's records, as plain tuples
    (cheap to pickle across processes)."""
    return BuiltDmarcRecords(report_content_hash(event),
                             [row[1:] for row in dmarc_record_values(event, report_pk=0)])


def store_tls_report(session: Session, event: TlsReportEvent, message_pk: int) -> int:
    """Insert an SMTP TLS report unless the same report is stored already."""
    return _store_report_once(
        session, _tls_reports, tls_report_row(event, message_pk=message_pk), ("organization_name", "report_id"),
        _tls_policies, lambda report_pk: tls_policy_rows(event, report_pk=report_pk), report_content_hash(event),
    )


def report_content_hash(event: DmarcAggregateEvent | TlsReportEvent) -> str:
    """SHA-256 of what a report says (not of the mail it came in, nor of the
    source look-ups added to DMARC records): the same report sent twice hashes
    the same. DMARC records are hashed one at a time, never all rendered at once."""
    digest = hashlib.sha256()
    if isinstance(event, TlsReportEvent):
        digest.update(json.dumps(event.to_dict(), sort_keys=True, default=str).encode())
        return digest.hexdigest()
    head = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "records"}
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    # Each record as the repr of its values (source look-ups left out), fields in
    # declaration order: the same text for the same record, 10x cheaper than JSON.
    values = _REPORTED_RECORD_FIELDS
    update = digest.update
    for record in event.records:
        update(b"\n" + repr(values(record)).encode("utf-8", "backslashreplace"))
    return digest.hexdigest()


_REPORTED_RECORD_FIELDS = attrgetter(*(f.name for f in dataclasses.fields(ReportedRecord)
                                       if not f.name.startswith("source_") or f.name == "source_ip"))


def _store_report_once(session: Session, reports: Table, row: dict[str, Any], identity: tuple[str, ...],
                       children_table: Table, child_rows: Callable[[int], Iterable[dict[str, Any]] | RowTuples],
                       content_sha256: str) -> int:
    """Insert a report row and its child rows unless the same report (same
    `identity` columns and content) is stored already: 1 when inserted, 0 when
    it was there. A report with a stored report's identity but other content (a
    forgery that came first, or the genuine one after it) is kept too, its
    `conflict_of` naming the report stored first.
    Child rows are inserted CHILD_BATCH at a time as they are built, so a
    report's rows are never all in memory at once."""
    stored = session.execute(
        select(reports.c.id, reports.c.content_sha256)
        .where(*(reports.c[column] == row[column] for column in identity)).order_by(reports.c.id)
    ).all()
    # A report stored before content was hashed (NULL) counts as the same report.
    if any(sha in (content_sha256, None) for _, sha in stored):
        return 0
    row = {**row, "content_sha256": content_sha256, "conflict_of": stored[0][0] if stored else None}
    if stored:
        log.warning("%s: report %r differs from the one stored first under its id (id %d); both kept, flagged",
                    reports.name, row.get("report_id"), stored[0][0])
    connection = session.connection()
    report_pk = connection.execute(insert(reports).returning(reports.c.id), row).scalar_one()
    insert_many(connection, children_table, child_rows(report_pk))
    return 1


def insert_many(connection: Connection, table: Table, rows: Iterable[dict[str, Any]] | RowTuples) -> int:
    """Insert rows CHILD_BATCH at a time as they come, through the driver's
    executemany: plain dicts (all with the keys of the first), or `RowTuples`
    (column names and an iterator of value tuples, what the DMARC record row
    builder gives). Each column's bind processing (UTC times, JSON) is done
    once per distinct value, not once per row: a 100,000-record DMARC report
    repeats its period and its few auth-result lists in every row. Returns
    the rows inserted."""
    if isinstance(rows, RowTuples):
        names, values = rows.names, iter(rows.values)
    else:
        dicts = iter(rows)
        first = next(dicts, None)
        if first is None:
            return 0
        names = tuple(first)
        values = (tuple(row[name] for name in names) for row in chain([first], dicts))
    dialect = connection.dialect
    preparer = dialect.identifier_preparer
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {preparer.format_table(table)} ({', '.join(preparer.quote(n) for n in names)}) "
           f"VALUES ({', '.join([mark] * len(names))})")
    converters = [(index, _memoized(process)) for index, name in enumerate(names)
                  if (process := table.c[name].type._cached_bind_processor(dialect)) is not None]
    copy = None
    if dialect.name == "postgresql":
        # PostgreSQL: COPY FROM STDIN, in the same transaction (several times faster than executemany)
        copy = (f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(n) for n in names)}) "
                "FROM STDIN")
    count = 0
    while batch := list(islice(values, CHILD_BATCH)):
        if converters:
            converted = []
            for row in batch:
                items = list(row)
                for index, convert in converters:
                    items[index] = convert(items[index])
                converted.append(tuple(items))
            batch = converted
        if copy is not None:
            _copy_rows(connection, copy, batch)
        else:
            connection.exec_driver_sql(sql, batch)
        count += len(batch)
    return count


def _copy_rows(connection: Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows through psycopg's COPY on the connection's own (open) transaction."""
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True, slots=True)
class RowTuples:
    """Rows as value tuples in the order of `names`."""

    names: tuple[str, ...]
    values: Iterable[tuple[Any, ...]]


def _memoized(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A bind processor applied once per distinct value: hashable values by
    value, lists and dicts (JSON documents, shared by the row builders) by identity."""
    by_value: dict[Any, Any] = {}
    by_id: dict[int, tuple[Any, Any]] = {}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, dict)):
            hit = by_id.get(id(value))
            if hit is None:
                if len(by_id) >= 50_000:
                    by_id.clear()
                hit = by_id[id(value)] = (process(value), value)  # value kept alive: its id stays its own
            return hit[0]
        done = by_value.get(value, _MISSING)
        if done is _MISSING:
            done = process(value)
            if len(by_value) < 50_000:
                by_value[value] = done
        return done

    return convert


_MISSING = object()


def quarantine(session: Session, **fields: Any) -> None:
    """Keep a message that could not become events (quarantined_messages columns).
    Text is made storable first (storable_text): quarantine is the last resort
    and must not fail on a file name that is not UTF-8."""
    cleaned: dict[str, Any] = {name: storable_text(value) if isinstance(value, str) else value
                               for name, value in fields.items()}
    session.add(QuarantinedMessage(**cleaned))


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
    rows = [{**row, "path": storable_text(row["path"])} for row in rows]
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


def events_context(session: Session, event_ids: Sequence[int]) -> dict[int, tuple[int | None, dict[str, Any]]]:
    """event id -> (message pk, details) of stored events: which message an event
    came from, and what its parser said (confidence, tracking)."""
    out: dict[int, tuple[int | None, dict[str, Any]]] = {}
    ids = list(event_ids)
    for start in range(0, len(ids), 500):
        for event_id, message_pk, details in session.execute(
            select(col(StoredEvent.id), col(StoredEvent.message_id), col(StoredEvent.details))
            .where(col(StoredEvent.id).in_(ids[start:start + 500]))
        ):
            out[event_id] = (message_pk, details if isinstance(details, dict) else {})
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
