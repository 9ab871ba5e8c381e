"""DMARC failure reports (RUF) carried by a mail -> DmarcFailureEvent.

Two shapes exist in the wild:

- ARF (RFC 5965) with Feedback-Type auth-failure, fields per RFC 6591 and
  its DMARCbis successor RFC 9991 (Auth-Failure, Reported-Domain,
  Source-IP, Delivery-Result, Identity-Alignment, ...), followed by the
  failed message or its headers.
- Reports without an ARF part, such as Exim's: a text/plain part of
  "Name: value" lines (Sender Domain, Sender IP Address, Received date,
  SPF/DKIM Alignment) and then a copy of the failed message's headers.

Only the machine-readable fields are read; where a reporter leaves a field
out, the copy of the failed message fills in what it can (From domain as the
reported domain, Subject).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from collections.abc import Iterator
from datetime import datetime, timezone

from parsers.events import DmarcFailureEvent
from parsers.mime import ENCLOSING_TYPES, MailPart, field_blocks, split_header_block

FEEDBACK_REPORT = "message/feedback-report"
DELIVERY_RESULTS = ("delivered", "spam", "policy", "reject", "other")  # RFC 6591 section 3.2
# Every pattern here is linear in its input (failure reports are hostile input):
# address tokens are cut by a split and scanned from their @ signs, and a field's
# value is stripped in Python, not by a lazy group followed by optional blanks.
_ADDRESS_SEPARATORS_RE = re.compile(r"[\s<>\"']+")
_DOMAIN_END_RE = re.compile(r"[;,]")
_HEADER_FROM_RE = re.compile(r"\bheader\.from=([^\s;]+)", re.IGNORECASE)
_TEXT_FIELD_RE = re.compile(r"^[ \t]*([A-Za-z][A-Za-z -]{1,40}?)[ \t]*:(.*)$")


def failure_from_arf(msg: MailPart) -> DmarcFailureEvent | None:
    """The DMARC failure report of an ARF mail, None unless it is one
    (Feedback-Type auth-failure, or no Feedback-Type but an Auth-Failure)."""
    report = _outer_part(msg, FEEDBACK_REPORT)
    if report is None:
        return None
    fields: dict[str, list[str]] = {}
    for block in field_blocks(report.payload):
        for name, value in block:
            if value.strip():
                fields.setdefault(name.lower(), []).append(value.strip())
    feedback_type = _first(fields, "feedback-type")
    if feedback_type is not None:
        if (_first_word(feedback_type) or "").lower().rstrip(";") != "auth-failure":
            return None
    elif "auth-failure" not in fields:
        return None
    sample = _sample_headers(msg)
    auth_results = _first(fields, "authentication-results")
    auth_failure = ",".join(
        token.strip().lower() for value in fields.get("auth-failure", []) for token in value.split(",") if token.strip()
    ) or None
    if auth_failure is None:
        # RFC 9991 requires Auth-Failure, yet some reporters (Netease) leave it out;
        # reports of this kind are sent to a DMARC ruf= address, so the failure is DMARC's
        auth_failure = "dmarc"
    reported = _domain(_first(fields, "reported-domain"))
    if reported is None:
        reported = _from_domain(sample) or _header_from_domain(auth_results)
    delivery = _first(fields, "delivery-result")
    return DmarcFailureEvent(
        reported_domain=reported,
        source_ip=_ip(_first(fields, "source-ip")),
        feedback_type="auth-failure",
        auth_failure=auth_failure,
        arrival_date=_date(_first(fields, "arrival-date") or _first(fields, "received-date")) or _date(msg.header("date")),
        original_mail_from=_address(_first(fields, "original-mail-from")),
        original_rcpt_to=_address(_first(fields, "original-rcpt-to")),
        delivery_result=_delivery_result(delivery),
        dkim_domain=_domain(_first(fields, "dkim-domain")),
        subject=_header(sample, "subject"),
        authentication_results=auth_results,
        identity_alignment=_alignment(_first(fields, "identity-alignment")),
        original_message_id=_header(sample, "message-id") or _first(fields, "message-id"),
        user_agent=_first(fields, "user-agent"),
    )


def failure_from_text(msg: MailPart) -> DmarcFailureEvent | None:
    """A failure report written as plain text (Exim's format): "Sender
    Domain" and "Sender IP Address" lines, then the failed message's headers."""
    for part in outer_leaves(msg):
        if part.content_type != "text/plain":
            continue
        text = part.text()
        if "dmarc" not in text[:2000].lower():
            continue
        summary, headers = _split_summary(text)
        fields: dict[str, str] = {}
        for line in summary.splitlines():
            match = _TEXT_FIELD_RE.match(line)
            value = match.group(2).strip(" \t") if match else None
            if match and value:
                fields.setdefault(match.group(1).lower(), value)
        domain = _domain(fields.get("sender domain"))
        source_ip = _ip(fields.get("sender ip address"))
        if domain is None or source_ip is None:
            continue
        sample, _ = split_header_block(headers.encode("utf-8", "replace"))
        aligned = [name for name in ("spf", "dkim") if fields.get(f"{name} alignment", "").lower().startswith("yes")]
        has_alignment = any(f"{name} alignment" in fields for name in ("spf", "dkim"))
        return DmarcFailureEvent(
            reported_domain=domain,
            source_ip=source_ip,
            feedback_type="auth-failure",
            auth_failure="dmarc",
            arrival_date=_date(fields.get("received date")) or _date(msg.header("date")),
            subject=_header(sample, "subject"),
            identity_alignment=(",".join(aligned) or "none") if has_alignment else None,
            original_message_id=_header(sample, "message-id"),
            authentication_results=_header(sample, "authentication-results"),
        )
    return None


# --- helpers -------------------------------------------------------------------

def outer_leaves(part: MailPart) -> Iterator[MailPart]:
    """Leaf parts of the report itself; an enclosed message (the failed
    mail) is yielded whole, never entered."""
    if part.content_type in ENCLOSING_TYPES or not part.children:
        yield part
        return
    for child in part.children:
        yield from outer_leaves(child)


def _outer_part(msg: MailPart, content_type: str) -> MailPart | None:
    for part in outer_leaves(msg):
        if part.content_type == content_type:
            return part
    return None


def _sample_headers(msg: MailPart) -> list[tuple[str, str]]:
    """Headers of the failed message enclosed in the report, if any."""
    for part in outer_leaves(msg):
        if part.content_type in ENCLOSING_TYPES:
            if part.children:
                return part.children[0].headers
            headers, _ = split_header_block(part.payload)
            return headers
    return []


def _split_summary(text: str) -> tuple[str, str]:
    """Exim puts a "------ This is a copy of the headers ..." line between
    its summary and the failed message's headers."""
    match = re.search(r"^-{4,}.*$", text, re.MULTILINE)
    if match is None:
        return text, ""
    return text[:match.start()], text[match.end():].lstrip("\r\n")


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name and value.strip():
            return value.strip()
    return None


def _first_word(value: str | None) -> str | None:
    words = value.split() if value else None
    return words[0] if words else None


def _ip(value: str | None) -> str | None:
    token = _first_word(value)
    if token is None:
        return None
    token = token.strip("[]")
    try:
        return str(ipaddress.ip_address(token))
    except ValueError:
        return None


def _domain(value: str | None) -> str | None:
    token = _first_word(value)
    if token is None:
        return None
    token = token.strip("<>.;,").lower()
    if "@" in token:
        token = token.rsplit("@", 1)[1]
    return token or None


def _from_domain(headers: list[tuple[str, str]]) -> str | None:
    value = _header(headers, "from")
    if not value:
        return None
    try:
        _, address = email.utils.parseaddr(value)
    except RecursionError:  # thousands of nested comments: the stdlib parser recurses per level
        address = ""
    domain = _address_domain(address or value)
    return domain.lower().rstrip(".") if domain else None


def _address_domain(text: str) -> str | None:
    """The domain of the first address in text, as the pattern
    [^\\s<>"']+@([^\\s<>"';,]+) would find it (the last usable @ of the first
    token that has one), in one pass."""
    for token in _ADDRESS_SEPARATORS_RE.split(text):
        at = token.rfind("@")
        while at > 0:
            if at + 1 < len(token) and token[at + 1] not in ";,":
                return _DOMAIN_END_RE.split(token[at + 1:], maxsplit=1)[0]
            at = token.rfind("@", 0, at)
    return None


def _header_from_domain(auth_results: str | None) -> str | None:
    if not auth_results:
        return None
    match = _HEADER_FROM_RE.search(auth_results)
    return _domain(match.group(1)) if match else None


def _address(value: str | None) -> str | None:
    if not value:
        return None
    _, address = email.utils.parseaddr(value)
    address = (address or value).strip().strip("<>").strip()
    return address or None


def _delivery_result(value: str | None) -> str | None:
    word = _first_word(value)
    if word is None:
        return None
    word = word.strip(";,").lower()
    return word if word in DELIVERY_RESULTS else "other"


def _alignment(value: str | None) -> str | None:
    if not value:
        return None
    tokens = [token.strip().lower() for token in value.split(",") if token.strip()]
    return ",".join(tokens) or None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
