"""Report files: a zip, gzip, XML or JSON document (recognised by content,
never by name) -> one event per report found, or an UnparseableEvent with the
reason. Never raises."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from parsers.events import AnyEvent, UnparseableEvent
from parsers.reports.aggregate import parse_aggregate_chunks
from parsers.reports.containers import DEFAULT_LIMITS, Limits, Payload, ReportError, open_payloads, peek, read_all, sniff
from parsers.reports.tls import parse_tls_json


def parse_report_bytes(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> list[AnyEvent]:
    """Every report in a report file; never raises."""
    if not data or data.isspace():  # not data.strip(): that would copy a 100 MB input
        return [UnparseableEvent(error="empty input: no report in it")]
    notes: list[str] = []
    return _parse_payloads(open_payloads(data, limits, notes), limits, notes)


def parse_report_chunks(chunks: Iterable[bytes], *, limits: Limits = DEFAULT_LIMITS) -> list[AnyEvent]:
    """The report in a bare (not archived) XML or JSON document given as a
    stream of bytes; never raises."""
    return _parse_payloads(iter([Payload(None, iter(chunks))]), limits, [])


def _parse_payloads(payloads: Iterator[Payload], limits: Limits, notes: list[str]) -> list[AnyEvent]:
    events: list[AnyEvent] = []
    skipped: list[str] = []
    try:
        for payload in payloads:
            event = _parse_payload(payload, limits, notes, skipped)
            if event is not None:
                events.append(event)
    except ReportError as exc:
        events.append(UnparseableEvent(error=str(exc)))
    except MemoryError:
        events.append(UnparseableEvent(error="report needs more memory than a parser may use"))
    except RecursionError:
        events.append(UnparseableEvent(error="report is nested too deeply"))
    except Exception as exc:  # a parser bug must not lose the input: it gets quarantined
        events.append(UnparseableEvent(error=f"report parser error: {type(exc).__name__}: {exc}"[:500]))
    if not events:
        if skipped:
            return [UnparseableEvent(error="no DMARC or SMTP TLS report inside: " + "; ".join(skipped[:10]))]
        return [UnparseableEvent(error="no report inside")]
    return events


def _parse_payload(payload: Payload, limits: Limits, notes: list[str], skipped: list[str]) -> AnyEvent | None:
    """One document: an event, an UnparseableEvent, or None for a file in an
    archive that is not a report at all (a README next to the XML)."""
    label = f"entry {payload.name!r}: " if payload.name else ""
    try:
        head, chunks = peek(payload.chunks)
        kind = sniff(head)
        if kind == "xml":
            return parse_aggregate_chunks(chunks, notes)
        if kind == "json":
            return parse_tls_json(read_all(chunks, limits.max_json_bytes, "JSON report"))
        if not head.strip():
            reason = "is empty"
        else:
            reason = f"is neither XML nor JSON (starts with {head[:12]!r})"
        if payload.name is not None:
            skipped.append(f"{label}{reason}")
            return None
        raise ReportError(f"content {reason}: not a DMARC or SMTP TLS report")
    except ReportError as exc:
        message = str(exc)
        if payload.name is not None and repr(payload.name) in message:
            return UnparseableEvent(error=message)  # the archive layer named the entry already
        return UnparseableEvent(error=f"{label}{message}")
