"""Typed events: what every parser returns.

Parsers are pure functions of bytes to a list of these events. Each event
knows how to render itself as the JSON object that `repmon parse --json`
prints; the field names there are a contract other tools read, so renaming
a field here is a breaking change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

HardOrSoft = Literal["hard", "soft"]


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing Z, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@dataclass(slots=True)
class Tracking:
    """What repmon's own sender stamped into a message (see parsers/tracking.py)."""

    message_id: str | None = None
    source_ip: str | None = None
    campaign: str | None = None


@dataclass(slots=True, kw_only=True)
class Event:
    """Base of all events. `kind` is the discriminator in JSON output."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


@dataclass(slots=True, kw_only=True)
class BounceEvent(Event):
    """One failed recipient of a bounce (DSN or a vendor's own format)."""

    kind: ClassVar[str] = "bounce"
    recipient: str | None
    reason: str  # vocabulary: parsers/bounce/reasons.py
    hard_or_soft: HardOrSoft
    status: str | None = None  # enhanced status, class.subject.detail
    reply_code: int | None = None  # SMTP basic reply code, e.g. 550
    diagnostic: str | None = None
    remote_mta: str | None = None
    original_message_id: str | None = None
    action: str | None = None  # DSN Action: failed | delayed | ...
    arrival_date: datetime | None = None
    smtp_agent: str | None = None  # the format/MTA family that produced it
    original_mail_from: str | None = None
    tracking: Tracking | None = None
    confidence: Literal["high", "medium", "low"] | None = None  # how sure the reason is (parsers/bounce/classify.py)


@dataclass(slots=True, kw_only=True)
class FeedbackEvent(Event):
    """A spam complaint / feedback-loop report (ARF or a provider's own format)."""

    kind: ClassVar[str] = "feedback"
    recipient: str | None
    feedback_type: str  # abuse, fraud, virus, opt-out, not-spam, auth-failure, other
    source_ip: str | None = None
    reported_domain: str | None = None
    original_mail_from: str | None = None
    feedback_id: str | None = None
    original_message_id: str | None = None
    arrival_date: datetime | None = None
    user_agent: str | None = None
    reporting_mta: str | None = None
    tracking: Tracking | None = None


@dataclass(slots=True, kw_only=True)
class AutoReplyEvent(Event):
    kind: ClassVar[str] = "auto_reply"
    recipient: str | None = None  # who auto-replied (the original recipient)
    subject: str | None = None
    original_message_id: str | None = None
    tracking: Tracking | None = None


@dataclass(slots=True, kw_only=True)
class DeliverySuccessEvent(Event):
    kind: ClassVar[str] = "delivery_success"
    recipient: str | None = None
    status: str | None = None
    remote_mta: str | None = None
    original_message_id: str | None = None
    tracking: Tracking | None = None


@dataclass(slots=True, kw_only=True)
class NotBounceEvent(Event):
    kind: ClassVar[str] = "not_bounce"
    subject: str | None = None
    message_id: str | None = None


@dataclass(slots=True, kw_only=True)
class DmarcRecord:
    source_ip: str
    count: int
    disposition: str | None
    dkim: str | None  # policy-evaluated: pass | fail; None when the record has no <policy_evaluated>
    spf: str | None
    header_from: str | None
    envelope_from: str | None = None
    dkim_results: list[dict[str, str | None]] = field(default_factory=list)
    spf_results: list[dict[str, str | None]] = field(default_factory=list)
    envelope_to: str | None = None
    policy_override_reasons: list[dict[str, str | None]] = field(default_factory=list)  # type, comment
    # Where the mail came from (parsers/reports/sources.py), the values parsedmarc gives
    # offline; None until enriched. reverse_dns/base_domain only when reverse DNS is enabled.
    source_country: str | None = None
    source_asn: int | None = None
    source_as_name: str | None = None
    source_as_domain: str | None = None
    source_name: str | None = None
    source_type: str | None = None
    source_reverse_dns: str | None = None
    source_base_domain: str | None = None


@dataclass(slots=True, kw_only=True)
class DmarcAggregateEvent(Event):
    kind: ClassVar[str] = "dmarc_aggregate"
    report_id: str
    org_name: str
    domain: str
    policy: str | None
    begin: datetime
    end: datetime
    records: list[DmarcRecord]
    org_email: str | None = None
    adkim: str | None = None
    aspf: str | None = None
    subdomain_policy: str | None = None
    pct: int | None = None
    errors: list[str] = field(default_factory=list)
    fo: str | None = None
    np: str | None = None  # RFC 9990: policy for non-existent subdomains
    testing: str | None = None  # RFC 9990 t= flag
    discovery_method: str | None = None  # RFC 9990: psl | treewalk
    extra_contact_info: str | None = None
    generator: str | None = None
    schema: str | None = None  # <version> of the report, "draft" when absent


@dataclass(slots=True, kw_only=True)
class DmarcFailureEvent(Event):
    kind: ClassVar[str] = "dmarc_failure"
    reported_domain: str | None
    source_ip: str | None
    feedback_type: str | None
    auth_failure: str | None
    arrival_date: datetime | None = None
    original_mail_from: str | None = None
    original_rcpt_to: str | None = None
    delivery_result: str | None = None
    dkim_domain: str | None = None
    subject: str | None = None
    authentication_results: str | None = None
    identity_alignment: str | None = None  # aligned mechanisms: "dkim,spf", "none"
    original_message_id: str | None = None
    user_agent: str | None = None


@dataclass(slots=True, kw_only=True)
class TlsPolicy:
    policy_domain: str
    policy_type: str | None
    successful_session_count: int
    failed_session_count: int
    failure_details: list[dict[str, Any]] = field(default_factory=list)
    policy_strings: list[str] = field(default_factory=list)
    mx_host_patterns: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class TlsReportEvent(Event):
    kind: ClassVar[str] = "tls_report"
    report_id: str
    organization_name: str
    policies: list[TlsPolicy]
    begin: datetime | None = None
    end: datetime | None = None
    contact_info: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class UnparseableEvent(Event):
    """Input we could not understand. Never dropped: callers quarantine it."""

    kind: ClassVar[str] = "unparseable"
    error: str


AnyEvent = (
    BounceEvent
    | FeedbackEvent
    | AutoReplyEvent
    | DeliverySuccessEvent
    | NotBounceEvent
    | DmarcAggregateEvent
    | DmarcFailureEvent
    | TlsReportEvent
    | UnparseableEvent
)
