"""Parser events -> rows of the storage tables (plain dicts, for bulk inserts).

Strings are clipped to their column's length: a 2,000-character "recipient"
from a hostile bounce must not fail the whole batch on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Table

from monitor.storage.models import DmarcFailure, DmarcRecord, DmarcReport, StoredEvent, TlsPolicyResult, TlsReport
from parsers.events import (
    AutoReplyEvent,
    BounceEvent,
    DeliverySuccessEvent,
    DmarcAggregateEvent,
    DmarcFailureEvent,
    FeedbackEvent,
    NotBounceEvent,
    TlsReportEvent,
    Tracking,
)

# Feedback types that are complaints. auth-failure (a DMARC failure report in
# ARF form), not-spam, opt-out and other are not.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})
OPT_OUT_TYPES = frozenset({"opt-out", "optout", "unsubscribe", "list-unsubscribe"})

EVENT_KINDS = (BounceEvent, FeedbackEvent, AutoReplyEvent, DeliverySuccessEvent, NotBounceEvent)


def clean_text(value: str) -> str:
    """Text every database accepts: PostgreSQL refuses NUL characters, and
    lone surrogates (undecodable bytes) cannot be encoded as UTF-8."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _clipper(table: Table):
    # (SQLModel's AutoString is a TypeDecorator, not a String: ask for .length)
    lengths = {c.name: c.type.length for c in table.columns  # type: ignore[attr-defined]
               if getattr(c.type, "length", None)}

    def clip(row: dict[str, Any]) -> dict[str, Any]:
        for name, value in row.items():
            if isinstance(value, (str, dict, list)):
                row[name] = value = clean(value)
            length = lengths.get(name)
            if length and isinstance(value, str) and len(value) > length:
                row[name] = value[:length]
        return row

    return clip


_clip_event = _clipper(StoredEvent.__table__)  # type: ignore[attr-defined]
_clip_failure = _clipper(DmarcFailure.__table__)  # type: ignore[attr-defined]
_clip_report = _clipper(DmarcReport.__table__)  # type: ignore[attr-defined]
_clip_record = _clipper(DmarcRecord.__table__)  # type: ignore[attr-defined]
_clip_tls = _clipper(TlsReport.__table__)  # type: ignore[attr-defined]
_clip_policy = _clipper(TlsPolicyResult.__table__)  # type: ignore[attr-defined]


def normalize_recipient(address: str | None) -> str | None:
    if not address:
        return None
    address = address.strip().strip("<>").strip().lower()
    return address or None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip().lower().rstrip(".") or None


def _tracking(event: Any) -> Tracking:
    return getattr(event, "tracking", None) or Tracking()


def event_row(event: Any, *, message_pk: int | None, occurred_at: datetime) -> dict[str, Any]:
    """The `events` row of a per-recipient event."""
    tracking = _tracking(event)
    recipient = normalize_recipient(getattr(event, "recipient", None))
    source_ip = getattr(event, "source_ip", None)
    original_mail_from = getattr(event, "original_mail_from", None)
    reported_domain = getattr(event, "reported_domain", None)
    feedback_type = (event.feedback_type or "").strip().lower() if isinstance(event, FeedbackEvent) else None
    row: dict[str, Any] = {
        "message_id": message_pk,
        "kind": event.kind,
        "occurred_at": occurred_at,
        "recipient": recipient,
        "recipient_domain": domain_of(recipient),
        "reason": getattr(event, "reason", None),
        "hard_or_soft": getattr(event, "hard_or_soft", None),
        "status": getattr(event, "status", None),
        "reply_code": getattr(event, "reply_code", None),
        "action": getattr(event, "action", None),
        "remote_mta": getattr(event, "remote_mta", None),
        "smtp_agent": getattr(event, "smtp_agent", None),
        "feedback_type": feedback_type,
        "is_complaint": feedback_type in COMPLAINT_TYPES,
        "original_message_id": getattr(event, "original_message_id", None) or getattr(event, "message_id", None),
        "original_mail_from": original_mail_from,
        "reported_domain": reported_domain,
        "source_ip": source_ip,
        "tracking_message_id": tracking.message_id,
        "tracking_source_ip": tracking.source_ip,
        "campaign": tracking.campaign,
        "sending_ip": tracking.source_ip or source_ip,
        "sending_domain": domain_of(original_mail_from) or (reported_domain.lower() if reported_domain else None),
        "subject": getattr(event, "subject", None),
        "details": event.to_dict(),
    }
    return _clip_event(row)


def attribute_row(row: dict[str, Any], found: Tracking | None) -> dict[str, Any]:
    """Set an `events` row's tracking columns from an *authenticated* Tracking
    (a v2 token whose tag verified, resolved through the sender's queue:
    sender.queue.attribute). None (a forged or unknown token) leaves the row
    stored but unattributed: no message, campaign or sending IP of ours."""
    if found is None:
        return row
    row["tracking_message_id"] = found.message_id
    row["tracking_source_ip"] = found.source_ip
    row["campaign"] = found.campaign
    if found.source_ip:
        row["sending_ip"] = found.source_ip
    return _clip_event(row)


def dmarc_report_row(event: DmarcAggregateEvent, *, message_pk: int | None) -> dict[str, Any]:
    return _clip_report({
        "message_id": message_pk,
        "report_id": event.report_id,
        "org_name": event.org_name,
        "org_email": event.org_email,
        "domain": (event.domain or "").lower(),
        "policy": event.policy,
        "subdomain_policy": event.subdomain_policy,
        "adkim": event.adkim,
        "aspf": event.aspf,
        "pct": event.pct,
        "begin": event.begin,
        "end": event.end,
        "errors": list(event.errors) or None,
    })


# dmarc_records text columns and their lengths, for the fast row builder below.
_RECORD_TEXT = {c.name: getattr(c.type, "length", None) for c in DmarcRecord.__table__.columns  # type: ignore[attr-defined]
                if c.name in ("domain", "source_ip", "disposition", "dkim", "spf", "header_from", "envelope_from",
                              "source_country", "source_as_name", "source_as_domain", "source_name", "source_type",
                              "source_reverse_dns", "source_base_domain")}
_MEMO_LIMIT = 50_000  # distinct values remembered per column while a report's rows are built


class _TextMemo:
    """clean_text + clip to the column length, once per distinct value of a column:
    the records of a report repeat a few dozen values in most columns."""

    def __init__(self, lengths: dict[str, int | None]) -> None:
        self._lengths = lengths
        self._memo: dict[str, dict[str, str]] = {name: {} for name in lengths}

    def __call__(self, column: str, value: str | None) -> str | None:
        if value is None:
            return None
        memo = self._memo[column]
        done = memo.get(value)
        if done is None:
            done = clean_text(value)
            length = self._lengths[column]
            if length and len(done) > length:
                done = done[:length]
            if len(memo) < _MEMO_LIMIT:
                memo[value] = done
        return done


def _shared_results(memo: dict[tuple[int, ...], tuple[list[Any] | None, Any]], items: list[Any]) -> list[Any] | None:
    """The stored form of a record's auth results. The parser shares identical
    result dicts among records, so the same combination (by identity) is
    cleaned once and the one list is reused: storage serialises it once too."""
    if not items:
        return None
    key = tuple(map(id, items))
    hit = memo.get(key)
    if hit is None:
        hit = (clean(list(items)), items)  # items kept alive: the ids stay theirs
        if len(memo) < _MEMO_LIMIT:
            memo[key] = hit
    return hit[0]


DMARC_RECORD_COLUMNS = (
    "report_pk", "domain", "begin", "end", "source_ip", "count", "disposition", "dkim", "spf", "header_from",
    "envelope_from", "dkim_results", "spf_results", "source_country", "source_asn", "source_as_name",
    "source_as_domain", "source_name", "source_type", "source_reverse_dns", "source_base_domain",
)


def dmarc_record_values(event: DmarcAggregateEvent, *, report_pk: int) -> Iterator[tuple[Any, ...]]:
    """The `dmarc_records` rows of a report as value tuples (DMARC_RECORD_COLUMNS),
    one at a time: a 100,000-record report is inserted in batches
    (monitor/storage/ledger.py), never held as one list of rows. Text is
    cleaned and clipped as by the other row builders, once per distinct value."""
    text = _TextMemo(_RECORD_TEXT)
    results: dict[tuple[int, ...], tuple[list[Any] | None, Any]] = {}
    domain = text("domain", (event.domain or "").lower())
    begin, end = event.begin, event.end
    for record in event.records:
        header_from = record.header_from
        yield (
            report_pk, domain, begin, end,
            text("source_ip", record.source_ip),
            record.count,
            text("disposition", record.disposition),
            text("dkim", record.dkim),
            text("spf", record.spf),
            text("header_from", header_from.lower()) if header_from else None,
            text("envelope_from", record.envelope_from),
            _shared_results(results, record.dkim_results),
            _shared_results(results, record.spf_results),
            text("source_country", record.source_country),
            record.source_asn,
            text("source_as_name", record.source_as_name),
            text("source_as_domain", record.source_as_domain),
            text("source_name", record.source_name),
            text("source_type", record.source_type),
            text("source_reverse_dns", record.source_reverse_dns),
            text("source_base_domain", record.source_base_domain),
        )


def dmarc_record_rows(event: DmarcAggregateEvent, *, report_pk: int) -> Iterator[dict[str, Any]]:
    """The same rows as dicts."""
    for values in dmarc_record_values(event, report_pk=report_pk):
        yield dict(zip(DMARC_RECORD_COLUMNS, values, strict=True))


def dmarc_failure_row(event: DmarcFailureEvent, *, message_pk: int | None, occurred_at: datetime) -> dict[str, Any]:
    return _clip_failure({
        "message_id": message_pk,
        "occurred_at": event.arrival_date or occurred_at,
        "arrival_date": event.arrival_date,
        "reported_domain": (event.reported_domain or None) and event.reported_domain.lower(),
        "source_ip": event.source_ip,
        "feedback_type": event.feedback_type,
        "auth_failure": event.auth_failure,
        "original_mail_from": event.original_mail_from,
        "original_rcpt_to": event.original_rcpt_to,
        "delivery_result": event.delivery_result,
        "dkim_domain": event.dkim_domain,
        "subject": event.subject,
    })


def tls_report_row(event: TlsReportEvent, *, message_pk: int | None) -> dict[str, Any]:
    return _clip_tls({
        "message_id": message_pk,
        "report_id": event.report_id,
        "organization_name": event.organization_name,
        "contact_info": event.contact_info,
        "begin": event.begin,
        "end": event.end,
    })


def tls_policy_rows(event: TlsReportEvent, *, report_pk: int) -> list[dict[str, Any]]:
    return [
        _clip_policy({
            "report_pk": report_pk,
            "policy_domain": (policy.policy_domain or "").lower(),
            "policy_type": policy.policy_type,
            "successful_session_count": policy.successful_session_count,
            "failed_session_count": policy.failed_session_count,
            "failure_details": list(policy.failure_details) or None,
        })
        for policy in event.policies
    ]
