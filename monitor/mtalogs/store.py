"""Records of a delivery log -> rows, in the caller's transaction.

Every outcome becomes a `mtalog_deliveries` row. A bounced or deferred outcome
with a diagnostic also becomes a bounce event in storage's `events` table
(classified by the parsers' bounce classifier; `action` "failed" or "delayed",
`smtp_agent` "mtalog:<mta>", `remote_mta` the destination), a complaint a
feedback event, so that suppression and health see them as they see the
sender's own; a hard bounce and a complaint (or opt-out) put the address on
the suppression list in the same transaction. A record that could not be read
becomes a `mtalog_rejects` row with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlmodel import Session

from monitor.mtalogs.destinations import Destinations
from monitor.mtalogs.models import MtaDelivery, MtaLogReject
from monitor.storage.events import insert_event_rows
from monitor.storage.rows import COMPLAINT_TYPES, OPT_OUT_TYPES, clean_text, event_row
from monitor.storage.suppression import COMPLAINT, HARD_BOUNCE, OPT_OUT, SuppressionEntry, suppress_many
from parsers.bounce.classify import classify
from parsers.events import BounceEvent, FeedbackEvent, Tracking
from parsers.mtalogs.events import MAX_FIELD, BadRecord, DeliveryRecord, FeedbackRecord, MtaRecord

OUTCOME = {"sent": "delivered", "deferred": "deferred", "bounced": "bounced"}
MAX_RAW = 4000  # characters of a rejected line kept


@dataclass(frozen=True, slots=True)
class Attribution:
    """How one source's records are attributed (from its [[delivery_logs]] entry)."""

    source: str
    source_ip: str | None = None
    source_ips: dict[str, str] = field(default_factory=dict)
    destinations: Destinations = field(default_factory=Destinations)
    postfix_agents: frozenset[str] | None = None  # None: every agent counts
    bounce_events: bool = True

    def ip_of(self, record: DeliveryRecord | FeedbackRecord) -> str | None:
        if record.source_ip:
            return record.source_ip
        agent = getattr(record, "agent", None)
        if agent and self.source_ips:
            found = self.source_ips.get(agent) or self.source_ips.get(agent.rpartition("/")[0])
            if found:
                return found
        return self.source_ip

    def counts(self, record: DeliveryRecord) -> bool:
        if record.mta != "postfix" or self.postfix_agents is None:
            return True
        return (record.agent or "").rpartition("/")[2] in self.postfix_agents


@dataclass(frozen=True, slots=True)
class Located:
    """A record and where it was read (for rejects)."""

    record: MtaRecord
    path: str | None = None
    offset: int | None = None


@dataclass(slots=True)
class StoreResult:
    deliveries: int = 0
    events: int = 0
    complaints: int = 0
    suppressions: int = 0
    rejected: int = 0
    ignored: int = 0  # outcomes of agents that do not count (Postfix local deliveries)
    duplicates: int = 0  # hook records seen before

    def add(self, other: StoreResult) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def stored(self) -> int:
        return self.deliveries + self.complaints


def store_records(conn: Connection, attribution: Attribution, located: Sequence[Located]) -> StoreResult:
    """Write the rows of these records on `conn` (the caller commits)."""
    result = StoreResult()
    deliveries: list[tuple[DeliveryRecord, str | None]] = []
    feedback: list[FeedbackRecord] = []
    rejects: list[dict[str, Any]] = []
    for item in located:
        record = item.record
        if isinstance(record, DeliveryRecord):
            if attribution.counts(record):
                deliveries.append((record, attribution.ip_of(record)))
            else:
                result.ignored += 1
        elif isinstance(record, FeedbackRecord):
            feedback.append(record)
        elif isinstance(record, BadRecord):
            rejects.append({"source": attribution.source[:255], "path": item.path[:1024] if item.path else None,
                            "offset": item.offset, "reason": clean_text(record.reason)[:MAX_FIELD],
                            "raw": clean_text(record.raw)[:MAX_RAW]})
    if rejects:
        conn.execute(insert(MtaLogReject.__table__), rejects)  # type: ignore[attr-defined]
        result.rejected = len(rejects)
    entries: list[SuppressionEntry] = []
    if deliveries:
        _store_deliveries(conn, attribution, deliveries, entries, result)
    if feedback:
        _store_feedback(conn, attribution, feedback, entries, result)
    if entries:
        with Session(bind=conn) as session:
            suppress_many(session, entries)
            session.flush()
        result.suppressions = len(entries)
    return result


def _bounce_event(record: DeliveryRecord, ip: str | None, destination: str) -> BounceEvent:
    verdict = classify(record.reply_code, record.dsn, record.diagnostic or "", command=record.command,
                       remote_reply=record.reply_code is not None, remote_host=record.destination_host)
    final = record.status == "bounced"
    return BounceEvent(
        recipient=record.recipient, reason=verdict.reason, hard_or_soft=verdict.hard_or_soft if final else "soft",
        status=record.dsn, reply_code=record.reply_code, diagnostic=record.diagnostic, remote_mta=destination,
        original_message_id=record.queue_id, action="failed" if final else "delayed", arrival_date=record.timestamp,
        smtp_agent=f"mtalog:{record.mta}", original_mail_from=record.sender, tracking=Tracking(source_ip=ip),
        confidence=verdict.confidence,
    )


def _store_deliveries(conn: Connection, attribution: Attribution, deliveries: list[tuple[DeliveryRecord, str | None]],
                      entries: list[SuppressionEntry], result: StoreResult) -> None:
    rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    event_of_row: dict[int, int] = {}  # delivery row index -> event row index
    for record, ip in deliveries:
        destination = attribution.destinations.of(record.destination_host)
        failed = record.status != "sent"
        rows.append({
            "source": attribution.source[:255], "mta": record.mta, "occurred_at": record.timestamp,
            "at_epoch": int(record.timestamp.timestamp()), "outcome": OUTCOME[record.status], "source_ip": ip,
            "sending_domain": record.sender_domain, "destination": destination,
            "destination_host": record.destination_host, "recipient_domain": record.recipient_domain,
            "queue_id": record.queue_id, "dsn": record.dsn, "reply_code": record.reply_code,
            "diagnostic": clean_text(record.diagnostic) if failed and record.diagnostic else None, "event_id": None,
        })
        if failed and record.diagnostic and attribution.bounce_events:
            event = _bounce_event(record, ip, destination)
            event_of_row[len(rows) - 1] = len(event_rows)
            event_rows.append(event_row(event, message_pk=None, occurred_at=record.timestamp))
            if (event.action == "failed" and event.hard_or_soft == "hard" and event.confidence in ("high", "medium")
                    and record.recipient and "@" in record.recipient):
                entries.append(SuppressionEntry(record.recipient, HARD_BOUNCE, f"mtalog:{record.mta}",
                                                detail=event.reason, seen_at=record.timestamp))
    for row in rows:  # NUL characters and lone surrogates would fail the whole batch on PostgreSQL
        for key, value in row.items():
            if isinstance(value, str) and ("\x00" in value or not value.isascii()):
                row[key] = clean_text(value)
    if event_rows:
        ids = insert_event_rows(conn, event_rows)
        for row_index, event_index in event_of_row.items():
            rows[row_index]["event_id"] = ids[event_index]
        result.events += len(ids)
    conn.execute(insert(MtaDelivery.__table__), rows)  # type: ignore[attr-defined]
    result.deliveries += len(rows)


def _store_feedback(conn: Connection, attribution: Attribution, feedback: list[FeedbackRecord],
                    entries: list[SuppressionEntry], result: StoreResult) -> None:
    rows = []
    for record in feedback:
        event = FeedbackEvent(
            recipient=record.recipient, feedback_type=record.feedback_type, source_ip=attribution.ip_of(record),
            reported_domain=record.reported_domain, original_mail_from=record.sender,
            arrival_date=record.timestamp, user_agent=record.user_agent, reporting_mta=f"mtalog:{record.mta}",
        )
        rows.append(event_row(event, message_pk=None, occurred_at=record.timestamp))
        recipient = record.recipient
        if recipient and "@" in recipient:
            if record.feedback_type in COMPLAINT_TYPES:
                entries.append(SuppressionEntry(recipient, COMPLAINT, f"mtalog:{record.mta}",
                                                detail=record.feedback_type, seen_at=record.timestamp))
            elif record.feedback_type in OPT_OUT_TYPES:
                entries.append(SuppressionEntry(recipient, OPT_OUT, f"mtalog:{record.mta}",
                                                detail=record.feedback_type, seen_at=record.timestamp))
    insert_event_rows(conn, rows)
    result.complaints += len(rows)
    result.events += len(rows)
