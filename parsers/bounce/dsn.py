"""Structural reader of RFC 3464 delivery status notifications: the
message/delivery-status part's per-message and per-recipient fields."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime
from typing import Final

from parsers.bounce.address import address as parse_address
from parsers.bounce.report import RecipientReport
from parsers.bounce.status import find_reply_code, parse_status
from parsers.mime import MailPart, field_blocks

# Fields that open a recipient's record (RFC 3464 section 2.3).
_RECIPIENT_FIELDS: Final = frozenset({"final-recipient", "original-recipient", "x-actual-recipient"})
_PER_MESSAGE_FIELDS: Final = frozenset({
    "reporting-mta", "received-from-mta", "arrival-date", "original-envelope-id", "dsn-gateway",
    "x-postfix-queue-id", "x-postfix-sender",
})
_TYPE_PREFIX_RE: Final = re.compile(r"^\s*([\w.-]+)\s*;\s*", re.ASCII)


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None


def strip_type(value: str) -> tuple[str | None, str]:
    """`smtp; 550 ...` -> ("smtp", "550 ..."); a value without a type is kept whole."""
    match = _TYPE_PREFIX_RE.match(value)
    if not match:
        return None, value.strip()
    return match.group(1).lower(), value[match.end():].strip()


def recipient_records(blocks: list[list[tuple[str, str]]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields and one dict per recipient (lower-case names).

    RFC 3464 separates the records by blank lines, but real DSNs are sloppy:
    the per-message fields glued to the first recipient, two recipients
    without a blank line between them, Action before Final-Recipient. So a
    block with a recipient field is a recipient block, and inside it a new
    record starts where a field repeats."""
    per_message: dict[str, str] = {}
    records: list[dict[str, str]] = []
    for block in blocks:
        if not any(name.lower() in _RECIPIENT_FIELDS for name, _ in block):
            target = records[-1] if records else per_message
            for name, value in block:
                target.setdefault(name.lower(), value)
            continue
        current: dict[str, str] = {}
        records.append(current)
        for name, value in block:
            key = name.lower()
            if key in _PER_MESSAGE_FIELDS:
                per_message.setdefault(key, value)
                continue
            if key in current:
                if key == "diagnostic-code":
                    current[key] += " " + value  # some MTAs repeat the field for each reply line
                    continue
                current = {}
                records.append(current)
            current[key] = value
    return per_message, [r for r in records if _RECIPIENT_FIELDS.intersection(r)]


def read_dsn(part: MailPart) -> list[RecipientReport]:
    """The recipients of one delivery-status part."""
    return reports_of_blocks(field_blocks(part.payload))


def reports_of_blocks(blocks: list[list[tuple[str, str]]]) -> list[RecipientReport]:
    per_message, records = recipient_records(blocks)
    arrival = parse_date(per_message.get("arrival-date"))
    return [_report_of(record, arrival) for record in records]


def _report_of(record: dict[str, str], arrival: datetime | None) -> RecipientReport:
    recipient = parse_address(record.get("final-recipient")) or parse_address(record.get("original-recipient")) \
        or parse_address(record.get("x-actual-recipient"))
    diagnostic_type, diagnostic = strip_type(record.get("diagnostic-code", ""))
    # an SMTP diagnostic (or an untyped one) quotes the remote server; "X-Notes;",
    # "X-Postfix;", "X-Unix;" ... are the reporting MTA's own words
    remote_reply = bool(diagnostic) and diagnostic_type in (None, "smtp")
    status_field = record.get("status") or ""
    if not diagnostic and "(" in status_field:  # "Status: 4.0.0 (host name lookup failure)"
        diagnostic = status_field[status_field.index("(") + 1:].rstrip(") ")
    remote = record.get("remote-mta")
    return RecipientReport(
        recipient=recipient,
        action=(record.get("action") or "").strip().lower().split(" ")[0] or None,
        status=parse_status(status_field),
        reply_code=find_reply_code(diagnostic) if diagnostic else None,
        diagnostic=diagnostic,
        diagnostic_type=diagnostic_type,
        remote_mta=strip_type(remote)[1] if remote else None,
        arrival_date=parse_date(record.get("arrival-date")) or arrival,
        category=(record.get("x-powermta-bouncecategory") or "").strip().lower() or None,
        remote_reply=remote_reply,
    )
