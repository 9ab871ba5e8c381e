"""Parser events -> rows of the storage tables (plain dicts, for bulk inserts).

Strings are clipped to their column's length: a 2,000-character "recipient"
from a hostile bounce must not fail the whole batch on PostgreSQL.
"""

from __future__ import annotations

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


def dmarc_record_rows(event: DmarcAggregateEvent, *, report_pk: int) -> list[dict[str, Any]]:
    domain = (event.domain or "").lower()
    return [
        _clip_record({
            "report_pk": report_pk,
            "domain": domain,
            "begin": event.begin,
            "end": event.end,
            "source_ip": record.source_ip,
            "count": record.count,
            "disposition": record.disposition,
            "dkim": record.dkim,
            "spf": record.spf,
            "header_from": (record.header_from or None) and record.header_from.lower(),
            "envelope_from": record.envelope_from,
            "dkim_results": list(record.dkim_results) or None,
            "spf_results": list(record.spf_results) or None,
        })
        for record in event.records
    ]


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
