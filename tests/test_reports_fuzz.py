"""Whatever the bytes, parse_report_bytes and parse_report_mail return events
and never raise: damaged reports (cut, bytes flipped, bytes inserted) in every
container, and arbitrary bytes."""

from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent
from parsers.mime import MimeError, parse_message
from parsers.reports import parse_report_bytes, parse_report_mail
from tests.fixtures._reports import TLS_REPORT, aggregate_xml, arf_mail, dkim_xml, make_zip, record_xml, spf_xml

XML = aggregate_xml([record_xml(f"192.0.2.{i}", i, auth=dkim_xml("example.com") + spf_xml("example.com"))
                     for i in range(1, 6)])
SEEDS = [XML, gzip.compress(XML), make_zip({"r.xml": XML}), json.dumps(TLS_REPORT).encode(),
         gzip.compress(json.dumps(TLS_REPORT).encode())]
READABLE = (DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent)


@st.composite
def damaged(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "cut":
            del data[at:]
        elif action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at:at + draw(st.integers(1, 32))]
    return bytes(data)


def check(events: list) -> None:
    assert isinstance(events, list) and events
    assert all(isinstance(event, READABLE) for event in events)
    for event in events:
        json.dumps(event.to_dict())  # every event renders
        # the catch-all for parser bugs must never be what answered
        assert not getattr(event, "error", "").startswith("report parser error"), event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_reports_never_raise(data: bytes) -> None:
    check(parse_report_bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    check(parse_report_bytes(data))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.binary(min_size=1, max_size=8))
def test_damaged_failure_report_mails_never_raise(at: int, junk: bytes) -> None:
    raw = arf_mail()
    raw = raw[:at] + junk + raw[at + len(junk):]
    try:
        msg = parse_message(raw)
    except MimeError:
        return
    result = parse_report_mail(msg)
    if result is not None:
        check(result)
