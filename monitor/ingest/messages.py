"""Step one of ingestion: from raw bytes to a `Prepared` message (no I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from monitor.storage.ledger import BuiltDmarcRecords, build_dmarc_records
from monitor.storage.rows import EVENT_KINDS, clean_text, dmarc_failure_row, event_row
from parsers import looks_like_report_file, parse_bytes
from parsers.events import AnyEvent, DmarcAggregateEvent, DmarcFailureEvent, UnparseableEvent
from parsers.mime import split_header_block

# Only the top of a message is searched for its own headers.
_HEADER_SCAN_BYTES = 256 * 1024
# A Date header this far in the future is a broken clock: the time we read
# the message is used instead.
_FUTURE_SLACK = timedelta(hours=1)


@dataclass(slots=True)
class PreparedRows:
    """The `events` and `dmarc_failures` rows of a message's events, built where
    it was parsed (a worker of the parse pool), without their message id."""

    events: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    # per DMARC aggregate report of `events`, in order: its hash and record rows;
    # the event's own `records` list is then emptied (not sent twice)
    dmarc: list[BuiltDmarcRecords] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """A message ready to be committed."""

    sha256: str
    size: int
    raw: bytes | None  # kept for the quarantine table; None when not fetched
    events: list[AnyEvent]
    uid: int | None = None
    header_message_id: str | None = None
    header_date: datetime | None = None
    subject: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set when the message must go to quarantine without being parsed
    # (too large to fetch, or the pipeline failed on it too often).
    forced_quarantine: str | None = None
    # The storage rows of `events`, when built ahead (with_rows); they must describe
    # the same events: a Prepared whose events change is a new Prepared.
    rows: PreparedRows | None = None

    @property
    def occurred_at(self) -> datetime:
        """When the feedback happened: its Date header, unless missing or in the future."""
        if self.header_date is not None and self.header_date <= self.received_at + _FUTURE_SLACK:
            return self.header_date
        return self.received_at

    @property
    def quarantine_reason(self) -> str | None:
        if self.forced_quarantine:
            return self.forced_quarantine
        errors = [e.error for e in self.events if isinstance(e, UnparseableEvent)]
        if errors:
            return clean_text("; ".join(errors))[:2000]
        if not self.events:
            return "the parsers returned no event"
        return None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(raw: bytes, uid: int | None = None) -> Prepared:
    """Hash, read the message's own headers, parse. Never raises."""
    message_id, date, subject = _own_headers(raw)
    return Prepared(
        sha256=content_hash(raw),
        size=len(raw),
        raw=raw,
        events=parse_bytes(raw),
        uid=uid,
        header_message_id=message_id,
        header_date=date,
        subject=subject,
    )


def with_rows(prepared: Prepared) -> Prepared:
    """Build the message's event rows now (in place), so the one writer only
    adds the message id: the CPU work of the rows happens where it was parsed."""
    events: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    dmarc: list[BuiltDmarcRecords] = []
    occurred_at = prepared.occurred_at
    for event in prepared.events:
        if isinstance(event, EVENT_KINDS):
            events.append(event_row(event, message_pk=None, occurred_at=occurred_at))
        elif isinstance(event, DmarcFailureEvent):
            failures.append(dmarc_failure_row(event, message_pk=None, occurred_at=occurred_at))
        elif isinstance(event, DmarcAggregateEvent):
            dmarc.append(build_dmarc_records(event))
            event.records = []  # its rows are in `dmarc`
    prepared.rows = PreparedRows(events, failures, dmarc)
    return prepared


def oversized(uid: int, size: int, limit: int, where: str) -> Prepared:
    """A message too large to fetch: quarantined by reference, identified by
    where it is (there are no bytes to hash)."""
    key = f"oversized:{where}:{uid}:{size}"
    return Prepared(
        sha256=content_hash(key.encode()),
        size=size,
        raw=None,
        events=[],
        uid=uid,
        forced_quarantine=f"message is {size} bytes, above the {limit}-byte limit; not fetched",
    )


def _own_headers(raw: bytes) -> tuple[str | None, datetime | None, str | None]:
    if looks_like_report_file(raw):  # a bare report file has no mail headers
        return None, None, None
    try:
        fields, _ = split_header_block(raw[:_HEADER_SCAN_BYTES])
    except Exception:  # headers are a nicety here; the parsers judge the message
        return None, None, None
    values: dict[str, str] = {}
    for name, value in fields:
        values.setdefault(name.lower(), value)
    date = None
    if "date" in values:
        try:
            date = parsedate_to_datetime(values["date"])
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
            date = date.astimezone(UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            date = None
    message_id = clean_text(values.get("message-id") or "")[:998] or None
    subject = clean_text(values.get("subject") or "")[:998] or None
    return message_id, date, subject
