"""Spam complaints: ARF feedback reports and the providers' own formats.

ARF (RFC 5965, updated by RFC 6650; auth-failure reports RFC 6591) is a
`multipart/report; report-type=feedback-report` with a human-readable part, a
`message/feedback-report` part of header-style fields and the original
message (whole, or its headers only). One FeedbackEvent is produced per
original recipient the report names (`Original-Rcpt-To` may repeat).

Besides ARF, two complaint formats without a feedback-report part occur in
practice and are read here:
- Microsoft's Junk Mail Reporting Program (JMRP, pre-ARF style): a
  multipart/mixed mail with the complained-about message attached; the
  attached message carries `X-HmXmrOriginalRecipient`.
- Amazon SES complaint notifications: a JSON document (optionally inside an
  SNS envelope) in a text/plain body.

Only the outer structure of the mail is searched: an ARF quoted inside a
message/rfc822 part (for example a bounce of a forwarded report) is not a
complaint about our mail.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from parsers.addresses import normalize
from parsers.events import FeedbackEvent, Tracking, UnparseableEvent
from parsers.mime import ENCLOSING_TYPES, MailPart, field_blocks, split_header_block
from parsers.tracking import decode as decode_token
from parsers.tracking import find_in_bytes

FEEDBACK_REPORT = "message/feedback-report"
_TYPE_TOKEN_RE = re.compile(r"\s*([A-Za-z0-9_.-]+)")
_IP_RE = re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])")
_JMRP_SUBJECT_RE = re.compile(r"complaint about message from\s+\[?([0-9A-Fa-f.:]+)", re.IGNORECASE)
_SENDER_IP_RE = re.compile(r"sender IP is\s+\[?([0-9A-Fa-f.:]+)", re.IGNORECASE)
# Long lines in a JSON body get broken by some MTAs as "!" + CRLF + space.
_BANG_FOLD_RE = re.compile(r"!\r?\n ")
# What the human-readable part of a report without Feedback-Type says it is,
# checked in this order ("not spam" must win over "spam").
_TYPE_HINTS = (
    ("not-spam", re.compile(r"\bnot[- ]spam\b|\bnot junk\b", re.IGNORECASE)),
    ("auth-failure", re.compile(r"\bauth(?:entication)?[- ]failure\b", re.IGNORECASE)),
    ("opt-out", re.compile(r"\bopt[- ]?out\b|\bunsubscri", re.IGNORECASE)),
    ("fraud", re.compile(r"\bfraud|\bphish", re.IGNORECASE)),
    ("virus", re.compile(r"\bvirus|\bmalware\b", re.IGNORECASE)),
    ("abuse", re.compile(r"\babuse\b|\bspam\b|\bcomplain", re.IGNORECASE)),
)
_FIELDS_SEARCH_LIMIT = 64 * 1024
_HINT_TEXT_LIMIT = 8192  # the human-readable part states its purpose at the top

Fields = dict[str, list[str]]


def parse_arf(msg: MailPart, data: bytes) -> list[FeedbackEvent | UnparseableEvent] | None:
    """Complaint events of the mail, or None when it is not a complaint.

    A report that declares itself ARF but cannot be read yields one
    UnparseableEvent with the reason (it must be looked at, not dropped)."""
    report = _first_outer(msg, lambda p: p.content_type == FEEDBACK_REPORT)
    declared = msg.content_type == "multipart/report" and msg.params.get("report-type", "").lower() == "feedback-report"
    if report is not None or declared:
        return _from_arf(msg, report, data)
    jmrp = _first_outer(msg, _is_jmrp_attachment)
    if jmrp is not None:
        return _from_jmrp(msg, jmrp, data)
    return _from_ses(msg, data)


# --- ARF ---------------------------------------------------------------------------

def _from_arf(msg: MailPart, report: MailPart | None, data: bytes) -> list[FeedbackEvent | UnparseableEvent]:
    fields: Fields = {}
    if report is not None:
        fields = _fields(report.payload)
    else:
        # Some reporters label the machine-readable block text/plain, and a
        # multipart without a usable boundary arrives as one undivided body.
        for part in _outer_parts(msg):
            if not part.children and b"feedback-type" in part.payload[:_FIELDS_SEARCH_LIMIT].lower():
                fields = _fields(part.payload[:_FIELDS_SEARCH_LIMIT])
                break
    embedded = _embedded_headers(msg)
    feedback_type = _feedback_type(fields)
    if feedback_type is None:
        feedback_type = _type_from_text(msg, fields)
    if feedback_type is None:
        if report is None:
            return [UnparseableEvent(error="feedback-report mail without a message/feedback-report part "
                                           "and no text saying what kind of feedback it is")]
        # RFC 5965 makes Feedback-Type mandatory, yet some feedback loops omit
        # it; those are spam-complaint loops, so the report counts as abuse.
        feedback_type = "abuse"
    recipients = _recipients(fields, embedded)
    common: dict[str, Any] = dict(
        feedback_type=feedback_type,
        source_ip=_ip(_first(fields, "source-ip")),
        reported_domain=_domain(_first(fields, "reported-domain")),
        original_mail_from=normalize(_first(fields, "original-mail-from")) or _return_path(embedded),
        feedback_id=_header(embedded, "feedback-id"),
        original_message_id=_message_id(_header(embedded, "message-id")),
        arrival_date=_date(_first(fields, "arrival-date") or _first(fields, "received-date")),
        user_agent=_first(fields, "user-agent"),
        reporting_mta=_mta_name(_first(fields, "reporting-mta")),
        tracking=find_in_bytes(data),
    )
    return [FeedbackEvent(recipient=rcpt, **common) for rcpt in recipients]


def _fields(payload: bytes) -> Fields:
    out: Fields = {}
    for block in field_blocks(payload):
        for name, value in block:
            out.setdefault(name.lower(), []).append(value)
    return out


def _first(fields: Fields, name: str) -> str | None:
    for value in fields.get(name, ()):
        if value.strip():
            return value.strip()
    return None


def _feedback_type(fields: Fields) -> str | None:
    """Lower-cased first token; values outside the IANA registry are kept."""
    value = _first(fields, "feedback-type")
    if value is None:
        return None
    match = _TYPE_TOKEN_RE.match(value)
    return match.group(1).lower() if match else None


def _type_from_text(msg: MailPart, fields: Fields) -> str | None:
    """The feedback type of a report that lacks Feedback-Type, from what the
    report does say."""
    if "auth-failure" in fields:
        return "auth-failure"
    if "removal-recipient" in fields:
        return "opt-out"
    texts = [msg.header("subject") or ""]
    for part in _outer_parts(msg):
        if part.content_type == "text/plain" and not part.children:
            texts.append(part.payload[:_HINT_TEXT_LIMIT].decode("utf-8", "replace"))
            break
    text = "\n".join(texts)
    for feedback_type, pattern in _TYPE_HINTS:
        if pattern.search(text):
            return feedback_type
    return None


def _recipients(fields: Fields, embedded: list[tuple[str, str]]) -> list[str | None]:
    """Who complained: the report's own fields first; the original message's
    To only when it names exactly one address (with several, the report does
    not say which of them complained)."""
    for name in ("original-rcpt-to", "removal-recipient"):
        found: list[str | None] = [*_unique(normalize(v) for v in fields.get(name, ()))]
        if found:
            return found
    marked = normalize(_header(embedded, "x-hmxmroriginalrecipient"))
    if marked:
        return [marked]
    to = _header(embedded, "to")
    if to:
        named: list[str | None] = [*_unique(normalize(addr) for _, addr in email.utils.getaddresses([to]) if addr)]
        if len(named) == 1:
            return named
    return [None]


# --- Microsoft JMRP ------------------------------------------------------------------

def _is_jmrp_attachment(part: MailPart) -> bool:
    return (part.content_type in ENCLOSING_TYPES and bool(part.children)
            and part.children[0].header("x-hmxmroriginalrecipient") is not None)


def _from_jmrp(msg: MailPart, attachment: MailPart, data: bytes) -> list[FeedbackEvent | UnparseableEvent]:
    embedded = attachment.children[0].headers
    source_ip = None
    match = _JMRP_SUBJECT_RE.search(msg.header("subject") or "")
    if match:
        source_ip = _ip(match.group(1))
    if source_ip is None:
        match = _SENDER_IP_RE.search(_header(embedded, "authentication-results") or "")
        source_ip = _ip(match.group(1)) if match else None
    return [
        FeedbackEvent(
            recipient=rcpt,
            feedback_type="abuse",  # JMRP reports "this is junk" clicks only
            source_ip=source_ip,
            original_mail_from=_return_path(embedded) or normalize(_header(embedded, "x-sid-pra")),
            feedback_id=_header(embedded, "feedback-id"),
            original_message_id=_message_id(_header(embedded, "message-id")),
            arrival_date=_date(msg.header("date")),
            user_agent="Microsoft JMRP",
            tracking=find_in_bytes(data),
        )
        for rcpt in _recipients({}, embedded)
    ]


# --- Amazon SES ------------------------------------------------------------------------

def _from_ses(msg: MailPart, data: bytes) -> list[FeedbackEvent | UnparseableEvent] | None:
    part = msg if not msg.children else _first_outer(msg, lambda p: p.content_type == "text/plain")
    if part is None or part.content_type != "text/plain":
        return None
    head = part.payload[:64].lstrip()
    if not head.startswith(b"{") or b"Complaint" not in part.payload:
        return None
    document = _ses_document(part.text())
    if document is None:
        return None
    complaint: Any = document.get("complaint")
    mail: Any = document.get("mail")
    if not isinstance(complaint, dict):
        return None
    mail = mail if isinstance(mail, dict) else {}
    headers = _ses_headers(mail)
    common_headers = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    # SES omits complaintFeedbackType when the mailbox provider sent no ARF
    # type; the notification is still a spam complaint.
    feedback_type = _str(complaint.get("complaintFeedbackType")) or "abuse"
    recipients: list[str | None] = [*_unique(
        normalize(_str(r.get("emailAddress"))) for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict)
    )] or [None]
    message_id = _str(common_headers.get("messageId")) or _header(headers, "message-id") or _str(mail.get("messageId"))
    return [
        FeedbackEvent(
            recipient=rcpt,
            feedback_type=feedback_type.lower(),
            source_ip=_ip(_str(mail.get("sourceIp"))),
            original_mail_from=normalize(_str(mail.get("source"))),
            feedback_id=_header(headers, "feedback-id"),
            original_message_id=_message_id(message_id),
            arrival_date=_iso_date(_str(complaint.get("arrivalDate")) or _str(complaint.get("timestamp"))),
            user_agent=_str(complaint.get("userAgent")),
            tracking=find_in_bytes(data) or _tracking_from_headers(headers),
        )
        for rcpt in recipients
    ]


def _ses_document(text: str) -> dict | None:
    """The complaint notification in a body: plain SES JSON, or an SNS
    envelope whose Message holds it; None when there is none."""
    start = text.find("{")
    decoder = json.JSONDecoder()
    for candidate in (text[start:], _BANG_FOLD_RE.sub("", text[start:])):
        try:
            document, _ = decoder.raw_decode(candidate)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("Message"), str):
            try:
                document = json.loads(document["Message"])
            except ValueError:
                return None
        if isinstance(document, dict) and "Complaint" in (document.get("notificationType"), document.get("eventType")):
            return document
        return None
    return None


def _ses_headers(mail: dict) -> list[tuple[str, str]]:
    out = []
    for item in mail.get("headers") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str):
            out.append((item["name"], item["value"]))
    return out


def _tracking_from_headers(headers: list[tuple[str, str]]) -> Tracking | None:
    value = _header(headers, "x-repmon-track")
    return decode_token(value) if value else None


# --- shared helpers ---------------------------------------------------------------------

def _outer_parts(msg: MailPart) -> Iterator[MailPart]:
    """The parts of the mail itself, not descending into attached messages."""
    yield msg
    for child in msg.children:
        if child.content_type in ENCLOSING_TYPES or "rfc822" in child.content_type:
            yield child
        else:
            yield from _outer_parts(child)


def _first_outer(msg: MailPart, predicate) -> MailPart | None:
    for part in _outer_parts(msg):
        if predicate(part):
            return part
    return None


def _embedded_headers(msg: MailPart) -> list[tuple[str, str]]:
    """Header fields of the original message attached to a report (whole
    message, headers-only part, or a mislabelled `text/rfc822-header`)."""
    part = _first_outer(msg, lambda p: p is not msg and (p.content_type in ENCLOSING_TYPES or "rfc822" in p.content_type))
    if part is None:
        return []
    if part.children:
        return part.children[0].headers
    return split_header_block(part.payload[:256 * 1024])[0]


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name and value.strip():
            return value.strip()
    return None


def _unique(values) -> list[str]:
    """Values in first-seen order without repeats or empties."""
    return list(dict.fromkeys(value for value in values if value))


def _ip(value: str | None) -> str | None:
    if not value:
        return None
    match = _IP_RE.search(value)
    if not match:
        return None
    try:
        return str(ipaddress.ip_address(match.group(0)))
    except ValueError:
        return None


def _domain(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().strip("<>.").lower() or None


def _mta_name(value: str | None) -> str | None:
    """`dns; mx.example.net` -> `mx.example.net`."""
    if not value:
        return None
    return value.split(";", 1)[-1].strip() or None


def _return_path(headers: list[tuple[str, str]]) -> str | None:
    return normalize(_header(headers, "return-path"))


def _message_id(value: str | None) -> str | None:
    """The Message-ID as written (angle brackets kept), like the bounce parser."""
    return value.strip() or None if value else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _iso_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _str(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
