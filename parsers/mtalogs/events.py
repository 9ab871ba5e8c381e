"""Typed records of an MTA's delivery log: what every parser in this package returns.

One `DeliveryRecord` per delivery attempt outcome of one recipient (sent,
deferred, bounced), one `FeedbackRecord` per complaint an MTA logged (PowerMTA
"f" records, KumoMTA "Feedback" records), and one `BadRecord` per line or record
that could not be read, with the reason (the caller records it; nothing is
silently dropped). Strings are clipped to `MAX_FIELD` characters so that one
hostile line cannot make a record of unbounded size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Status = Literal["sent", "deferred", "bounced"]
STATUSES: tuple[Status, ...] = ("sent", "deferred", "bounced")
MAX_FIELD = 1000  # characters kept of any one field (a diagnostic is the long one)
MAX_LINE = 64 * 1024  # bytes of one log line read; longer lines are bad records


def clip(value: str | None, size: int = MAX_FIELD) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return (value[:size] if len(value) > size else value) or None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")[:255] or None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One recipient's delivery outcome as the MTA logged it."""

    mta: str  # postfix | pmta | kumomta
    timestamp: datetime  # aware UTC
    status: Status
    recipient: str | None
    queue_id: str | None = None
    sender: str | None = None
    sender_domain: str | None = None
    source_ip: str | None = None  # the local address the MTA sent from, when logged
    destination_host: str | None = None  # the MX or relay host that answered (or was tried)
    destination_ip: str | None = None
    dsn: str | None = None  # enhanced status code, e.g. 5.1.1
    reply_code: int | None = None  # SMTP basic reply code, e.g. 550
    diagnostic: str | None = None  # the remote server's reply or the MTA's own reason
    command: str | None = None  # the SMTP command the reply answered (RCPT, DATA, ...), when known
    agent: str | None = None  # the MTA's delivery agent / virtual MTA / egress source (postfix/smtp, vmta1)

    @property
    def recipient_domain(self) -> str | None:
        return domain_of(self.recipient)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A complaint (feedback-loop report) an MTA logged."""

    mta: str
    timestamp: datetime
    recipient: str | None  # the address that complained (the original recipient)
    feedback_type: str  # abuse, fraud, virus, opt-out, not-spam, other
    sender: str | None = None
    sender_domain: str | None = None
    source_ip: str | None = None
    reported_domain: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A line or record that could not be read, with the reason."""

    mta: str
    reason: str
    raw: str  # the line (clipped)


MtaRecord = DeliveryRecord | FeedbackRecord | BadRecord
