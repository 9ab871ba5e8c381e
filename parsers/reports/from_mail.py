"""Reports carried by a mail: aggregate and TLS reports attached to it, and
DMARC failure reports it is.

Attachments are recognised by content, whatever their MIME type says
(application/zip, application/gzip, application/tlsrpt+gzip,
application/tlsrpt+json, application/octet-stream, text/xml, ...). A part that
sniffs as an archive, XML or JSON but turns out not to be a report is only
reported as unparseable when the mail says it carries reports (a TLS-RPT
media type, an RFC 7489 report file name such as
"receiver!example.com!1700000000!1700086399.xml.gz", a "Report Domain:"
subject, TLS-RPT headers); otherwise it is somebody's attachment and is left
to the other mail parsers. Parts of an enclosed message (the failed mail in a
failure report) are never read as reports.
"""

from __future__ import annotations

import base64
import binascii
import re

from parsers.events import AnyEvent, UnparseableEvent
from parsers.mime import MailPart
from parsers.reports.containers import sniff
from parsers.reports.failure import failure_from_arf, failure_from_text, outer_leaves
from parsers.reports.files import parse_report_bytes

TLSRPT_TYPES = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json"})
# RFC 7489 section 7.2.1.1 names report files receiver!policy-domain!begin!end[!id].xml[.gz|.zip];
# RFC 8460 section 5.1 does the same for TLS reports (.json[.gz]). A bare
# .xml or .json name says nothing (invoices and orders travel as those too).
_REPORT_FILE_RE = re.compile(r"![^!]+!\d+!\d+|\.xml\.(gz|zip)$|\.json\.gz$", re.IGNORECASE)
# "Report Domain: example.com Submitter: ... Report-ID: ..." (RFC 7489 section 7.2.1.1, RFC 8460 section 5.3)
_REPORT_SUBJECT_RE = re.compile(r"report[ -]domain\s*:|report-id\s*:|dmarc aggregate report|tls report",
                                re.IGNORECASE)
_BASE64_RE = re.compile(rb"^[A-Za-z0-9+/=\s]+$")
_TEXT_REPORT_TYPES = frozenset({"text/xml", "text/json"})


def parse_report_mail(msg: MailPart) -> list[AnyEvent] | None:
    """Report events of a mail, None when it carries no report; never raises."""
    try:
        return _reports_of(msg)
    except RecursionError:
        return [UnparseableEvent(error="report mail is nested too deeply")]
    except Exception as exc:  # a parser bug must not lose the mail: it gets quarantined
        return [UnparseableEvent(error=f"report parser error: {type(exc).__name__}: {exc}"[:500])]


def _reports_of(msg: MailPart) -> list[AnyEvent] | None:
    events: list[AnyEvent] = []
    declared = _declares_reports(msg)
    for part in outer_leaves(msg):
        payload = _report_payload(part)
        if payload is None:
            continue
        found = parse_report_bytes(payload)
        readable = [e for e in found if not isinstance(e, UnparseableEvent)]
        failed = [e for e in found if isinstance(e, UnparseableEvent)]
        if readable or declared or _names_a_report(part):
            events.extend(readable)
            for event in failed:
                name = _filename(part)
                label = f"attachment {name!r}" if name else f"{part.content_type} attachment"
                events.append(UnparseableEvent(error=f"{label}: {event.error}"))
    failure = failure_from_arf(msg)
    if failure is None and not events:
        failure = failure_from_text(msg)
    if failure is not None:
        events.append(failure)
    return events or None


def _report_payload(part: MailPart) -> bytes | None:
    """The bytes of a part if they could be a report file, else None."""
    data = part.payload
    if not data or part.content_type.startswith(("multipart/", "message/")):
        return None
    ctype = part.content_type
    named = _names_a_report(part)
    if ctype.startswith("text/") and ctype not in _TEXT_REPORT_TYPES and not (named or _filename(part)):
        return None  # a mail body, not an attachment
    kind = sniff(data[:64])
    if kind == "unknown" and _BASE64_RE.match(data[:4096]):
        # an attachment left base64-encoded (no or a wrong Content-Transfer-Encoding)
        try:
            decoded = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            decoded = b""
        if sniff(decoded[:64]) != "unknown":
            return decoded
    if kind == "unknown":
        return None
    if kind in ("xml", "json") and not named:
        head = data[:4096].lower()
        if kind == "xml" and b"feedback" not in head:
            return None  # some other XML document
        if kind == "json" and b"organization-name" not in head and b"policies" not in head:
            return None
    return data


def _filename(part: MailPart) -> str | None:
    name = part.params.get("name")
    disposition = part.header("content-disposition") or ""
    match = re.search(r'filename\*?=\s*"?([^";]+)"?', disposition, re.IGNORECASE)
    if match:
        name = match.group(1).strip()
    return name or None


def _names_a_report(part: MailPart) -> bool:
    if part.content_type in TLSRPT_TYPES:
        return True
    name = _filename(part)
    return bool(name and _REPORT_FILE_RE.search(name))


def _declares_reports(msg: MailPart) -> bool:
    if msg.content_type == "multipart/report" and msg.params.get("report-type", "").lower() == "tlsrpt":
        return True
    if msg.header("tls-report-domain") or msg.header("tls-report-submitter"):
        return True
    return bool(_REPORT_SUBJECT_RE.search(msg.header("subject") or ""))
