"""KumoMTA JSON log records (its local log files, one JSON object per line,
and the bodies its log hooks POST).

Record types read: `Delivery` -> sent, `Bounce` -> bounced, `TransientFailure`
-> deferred, `Expiration` (gave up retrying) and `OOB` (an out-of-band bounce
received later) -> bounced, `Feedback` (an ARF report KumoMTA received) -> a
complaint. The others (`Reception`, `AdminBounce`, `Rejection`, ...) are not
a receiver's verdict on a delivery and give nothing.

Fields used: type, id, sender, recipient (a string, or a list in newer
versions: one record per recipient), site / peer_address.name (the MX host),
peer_address.addr, source_address.address (the local address and port),
egress_source, timestamp (epoch seconds or RFC 3339), response.code,
response.enhanced_code, response.content, response.command,
feedback_report.feedback_type / original_rcpt_to / source_ip / reported_domain.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from parsers.mtalogs.events import MAX_LINE, BadRecord, DeliveryRecord, FeedbackRecord, MtaRecord, Status, clip, domain_of
from parsers.mtalogs.times import any_time

MTA = "kumomta"
MAX_RECIPIENTS = 1000  # per record
_STATUS: dict[str, Status] = {"Delivery": "sent", "Bounce": "bounced", "TransientFailure": "deferred",
                              "Expiration": "bounced", "OOB": "bounced"}
_COMMANDS = {"RCPT": "RCPT", "MAIL": "MAIL", "DATA": "DATA", ".": "DATA", "EHLO": "HELO", "HELO": "HELO",
             "STARTTLS": "HELO"}


def parse_line(line: str | bytes) -> list[MtaRecord]:
    """One line of a KumoMTA log file."""
    if len(line) > MAX_LINE:
        return [BadRecord(MTA, f"record longer than {MAX_LINE} bytes", _text(line[:200]))]
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return [BadRecord(MTA, f"not JSON: {exc}", clip(_text(line)) or "")]
    return parse_record(record)


def parse_record(record: Any) -> list[MtaRecord]:
    """One decoded log record (a log hook POST body holds one or a list)."""
    if not isinstance(record, dict):
        return [BadRecord(MTA, "log record is not a JSON object", clip(_dump(record)) or "")]
    kind = record.get("type")
    if kind == "Feedback":
        return [_feedback(record)]
    if not isinstance(kind, str) or kind not in _STATUS:
        if isinstance(kind, str) and kind:
            return []
        return [BadRecord(MTA, "log record without a type", clip(_dump(record)) or "")]
    when = any_time(record.get("timestamp"), UTC)
    if when is None:
        return [BadRecord(MTA, "log record without a readable timestamp", clip(_dump(record)) or "")]
    recipients = _recipients(record.get("recipient"))
    if recipients is None:
        return [BadRecord(MTA, "recipient is neither a string nor a list of strings", clip(_dump(record)) or "")]
    sender = _str(record.get("sender"))
    raw_response = record.get("response")
    response: dict[str, Any] = raw_response if isinstance(raw_response, dict) else {}
    host, ip = _peer(record)
    code = response.get("code")
    reply_code = code if isinstance(code, int) and not isinstance(code, bool) and 200 <= code <= 599 else None
    base = dict(
        mta=MTA, timestamp=when, status=_STATUS[kind], queue_id=clip(_str(record.get("id")), 64),
        sender=clip(sender, 320), sender_domain=domain_of(sender), source_ip=_source_ip(record.get("source_address")),
        destination_host=host, destination_ip=ip, dsn=_enhanced(response.get("enhanced_code")), reply_code=reply_code,
        diagnostic=clip(_diagnostic(reply_code, response)), command=_command(response.get("command")),
        agent=clip(_str(record.get("egress_source")), 64),
    )
    return [DeliveryRecord(recipient=clip(r, 320), **base) for r in recipients]  # type: ignore[arg-type]


def _feedback(record: dict[str, Any]) -> MtaRecord:
    report = record.get("feedback_report")
    if not isinstance(report, dict):
        return BadRecord(MTA, "Feedback record without a feedback_report", clip(_dump(record)) or "")
    when = any_time(record.get("timestamp"), UTC) or any_time(report.get("arrival_date"), UTC)
    if when is None:
        return BadRecord(MTA, "Feedback record without a readable timestamp", clip(_dump(record)) or "")
    recipients = _recipients(report.get("original_rcpt_to")) or _recipients(record.get("recipient")) or [None]
    sender = _str(report.get("original_mail_from")) or _str(record.get("sender"))
    return FeedbackRecord(
        mta=MTA, timestamp=when, recipient=clip(recipients[0], 320),
        feedback_type=(_str(report.get("feedback_type")) or "abuse").lower()[:32],
        sender=clip(sender, 320), sender_domain=domain_of(sender), source_ip=clip(_str(report.get("source_ip")), 64),
        reported_domain=clip(_first(report.get("reported_domain")), 255),
        user_agent=clip(_str(report.get("user_agent")), 255),
    )


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:2000]
    except (TypeError, ValueError):
        return repr(value)[:2000]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        return next((v for v in value if isinstance(v, str)), None)
    return _str(value)


def _recipients(value: Any) -> list[str | None] | None:
    if value is None or value == "":
        return [None]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value[:MAX_RECIPIENTS]) or [None]
    return None


def _peer(record: dict[str, Any]) -> tuple[str | None, str | None]:
    peer = record.get("peer_address")
    host = ip = None
    if isinstance(peer, dict):
        host, ip = _str(peer.get("name")), _str(peer.get("addr"))
    if host is None:
        site = _str(record.get("site"))  # "source2->(alt1|alt2)?.gmail-smtp-in.l.google.com."
        if site:
            host = site.rpartition("->")[2].rpartition(")?.")[2] or None
    if host:
        host = host.lower().rstrip(".")[:255] or None
    return host, (ip.partition("%")[0][:64] if ip else None)


def _source_ip(value: Any) -> str | None:
    """source_address {"address": "10.0.0.1:0"} or "[2001:db8::1]:0" -> the address."""
    address = _str(value.get("address")) if isinstance(value, dict) else _str(value)
    if not address:
        return None
    if address.startswith("["):
        return address[1:].partition("]")[0][:64] or None
    if address.count(":") == 1:
        address = address.partition(":")[0]
    return address[:64] or None


def _enhanced(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    parts = [value.get("class"), value.get("subject"), value.get("detail")]
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1000 for p in parts):
        return None
    return f"{parts[0]}.{parts[1]}.{parts[2]}"


def _diagnostic(code: int | None, response: dict[str, Any]) -> str | None:
    content = _str(response.get("content")) or ""
    enhanced = _enhanced(response.get("enhanced_code"))
    text = " ".join(p for p in (str(code) if code else "", enhanced or "", content) if p)
    return text or None


def _command(value: Any) -> str | None:
    command = _str(value)
    if command is None:
        return None
    word = command.strip().split(" ", 1)[0].split(":", 1)[0].upper()
    return _COMMANDS.get(word, word[:16] or None)
