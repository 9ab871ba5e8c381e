"""Parsers: pure functions from the bytes of one message or report file to
typed events (parsers/events.py). No storage, no network.

`parse_bytes` is the one entry point the rest of repmon uses. It recognises
the container by content, never by file name: zip and gzip archives and bare
XML/JSON documents are reports (DMARC aggregate, SMTP TLS); everything else is
read as an email (bounce, complaint, auto-reply, DMARC failure report, or a
report attached to a mail). Whatever goes wrong inside, the caller gets an
`unparseable` event with the reason, never an exception.
"""

from __future__ import annotations

from parsers.events import AnyEvent, UnparseableEvent

__all__ = ["parse_bytes", "looks_like_report_file"]

# Above this a single input is refused outright (and quarantined by ingestion):
# a feedback message or report is at most tens of MB; more is an accident or an attack,
# and the MIME parser peaks at about 8x the input size.
MAX_INPUT_BYTES = 100 * 1024 * 1024


def looks_like_report_file(data: bytes) -> bool:
    """True for the report containers that are not an email: zip, gzip, XML, JSON
    (the same content sniffing the report parser opens them with)."""
    from parsers.reports.containers import sniff

    return sniff(data[:64]) != "unknown"


def parse_bytes(data: bytes) -> list[AnyEvent]:
    """All events in one message or report file; never raises."""
    if len(data) > MAX_INPUT_BYTES:
        return [UnparseableEvent(error=f"input is {len(data)} bytes, above the {MAX_INPUT_BYTES}-byte limit")]
    if not data or data.isspace():  # isspace: no copy of a large input
        return [UnparseableEvent(error="empty input")]
    try:
        if looks_like_report_file(data):
            from parsers.reports import parse_report_bytes

            return parse_report_bytes(data)
        from parsers.mail import parse_mail

        return parse_mail(data)
    except MemoryError:
        return [UnparseableEvent(error="input needs more memory than a parser may use")]
    except RecursionError:
        return [UnparseableEvent(error="input is nested too deeply")]
    except Exception as exc:  # a parser bug must not lose the message: it gets quarantined
        return [UnparseableEvent(error=f"parser error: {type(exc).__name__}: {exc}"[:500])]
