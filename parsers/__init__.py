"""Parsers: pure functions from the bytes of one message or report file to
typed events (parsers/events.py). No storage, no network.

`parse_bytes` is the one entry point the rest of repmon uses. It recognises
the container by content, never by file name: zip and gzip archives and bare
XML/JSON documents are reports (DMARC aggregate, SMTP TLS); everything else is
read as an email (bounce, complaint, auto-reply, DMARC failure report, or a
report attached to a mail). Whatever goes wrong inside, the caller gets an
`unparseable` event with the reason, never an exception.

`parse_file` does the same for an opened file, streaming a bare XML or JSON
report from it instead of reading it whole (a 100,000-record aggregate report
is 67 MB of XML).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from parsers.events import AnyEvent, UnparseableEvent
from parsers.mail import parse_mail
from parsers.reports import parse_report_bytes, parse_report_chunks
from parsers.reports.containers import ReportError, sniff

__all__ = ["parse_bytes", "parse_file", "looks_like_report_file", "MAX_INPUT_BYTES"]

# Above this a single input is refused outright (and quarantined by ingestion):
# a feedback message or report is at most tens of MB; more is an accident or an attack,
# and the MIME parser peaks at about 8x the input size.
MAX_INPUT_BYTES = 100 * 1024 * 1024
_READ_CHUNK = 64 * 1024


def looks_like_report_file(data: bytes) -> bool:
    """True for the report containers that are not an email: zip, gzip, XML, JSON
    (the same content sniffing the report parser opens them with)."""
    return sniff(data[:64]) != "unknown"


def parse_bytes(data: bytes) -> list[AnyEvent]:
    """All events in one message or report file; never raises."""
    if len(data) > MAX_INPUT_BYTES:
        return [UnparseableEvent(error=f"input is {len(data)} bytes, above the {MAX_INPUT_BYTES}-byte limit")]
    if not data or data.isspace():  # isspace: no copy of a large input
        return [UnparseableEvent(error="empty input")]
    try:
        if looks_like_report_file(data):
            return parse_report_bytes(data)
        return parse_mail(data)
    except MemoryError:
        return [UnparseableEvent(error="input needs more memory than a parser may use")]
    except RecursionError:
        return [UnparseableEvent(error="input is nested too deeply")]
    except Exception as exc:  # a parser bug must not lose the message: it gets quarantined
        return [UnparseableEvent(error=f"parser error: {type(exc).__name__}: {exc}"[:500])]


def parse_file(handle: BinaryIO) -> list[AnyEvent]:
    """All events in an opened file, read from its current position; never
    raises. A bare XML or JSON report is parsed as it is read; anything else
    (a mail, an archive) is read whole, at most MAX_INPUT_BYTES + 1 bytes."""
    try:
        start = handle.tell() if handle.seekable() else None
        head = handle.read(_READ_CHUNK)
        if _is_bare_document(head):
            return parse_report_chunks(_capped_chunks(head, handle))
        if start is None:
            data = head + handle.read(MAX_INPUT_BYTES + 1 - len(head))
        else:
            handle.seek(start)  # one read of the whole input: no copy of it joined to its head
            data = handle.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            return [UnparseableEvent(error=f"input is larger than the {MAX_INPUT_BYTES}-byte limit")]
        return parse_bytes(data)
    except OSError as exc:
        return [UnparseableEvent(error=f"input cannot be read: {exc.strerror or exc}")]


def _is_bare_document(head: bytes) -> bool:
    """True for a bare XML or JSON document (not an archive)."""
    return sniff(head[:64]) in ("xml", "json")


def _capped_chunks(head: bytes, handle: BinaryIO) -> Iterator[bytes]:
    total = 0
    chunk = head
    while chunk:
        total += len(chunk)
        if total > MAX_INPUT_BYTES:
            raise ReportError(f"input is above the {MAX_INPUT_BYTES}-byte limit")
        yield chunk
        chunk = handle.read(_READ_CHUNK)
