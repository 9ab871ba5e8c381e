"""parsers.parse_file: an opened file in, the same events as parse_bytes out;
a bare XML or JSON report is streamed from the file, not read whole."""

from __future__ import annotations

import gzip
import io
import json

import pytest

import parsers
from parsers import parse_bytes, parse_file
from parsers.events import DmarcAggregateEvent, UnparseableEvent
from tests.fixtures._reports import TLS_REPORT, aggregate_xml, record_xml

MAIL = b"From: a@example.com\r\nSubject: hello\r\n\r\nhi\r\n"


class _CountingReader(io.BytesIO):
    """A file that remembers the largest read asked of it."""

    largest = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.largest = max(self.largest, len(data))
        return data


@pytest.mark.parametrize("data", [
    aggregate_xml([record_xml(f"192.0.2.{i}", i) for i in range(1, 200)]),
    b"\xef\xbb\xbf" + aggregate_xml(),
    gzip.compress(aggregate_xml()),
    json.dumps(TLS_REPORT).encode(),
    MAIL,
    b"",
    b"   \n",
    b"<feedback><oops",
])
def test_same_events_as_parse_bytes(data: bytes) -> None:
    assert [e.to_dict() for e in parse_file(io.BytesIO(data))] == [e.to_dict() for e in parse_bytes(data)]


def test_a_large_bare_report_is_read_in_chunks() -> None:
    data = aggregate_xml([record_xml(f"192.0.2.{i % 250 + 1}", i) for i in range(5_000)])
    handle = _CountingReader(data)
    [event] = parse_file(handle)
    assert isinstance(event, DmarcAggregateEvent) and len(event.records) == 5_000
    assert handle.largest <= 64 * 1024 < len(data)


def test_input_above_the_limit_is_unparseable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsers, "MAX_INPUT_BYTES", 1_000)
    [xml] = parse_file(io.BytesIO(aggregate_xml([record_xml()] * 100)))
    [mail] = parse_file(io.BytesIO(MAIL + b"x" * 2_000))
    assert isinstance(xml, UnparseableEvent) and "above the 1000-byte limit" in xml.error
    assert isinstance(mail, UnparseableEvent) and "larger than the 1000-byte limit" in mail.error


class _FailingReader(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        raise OSError(5, "Input/output error")


def test_unreadable_file_is_unparseable() -> None:
    [event] = parse_file(_FailingReader(MAIL))
    assert isinstance(event, UnparseableEvent) and event.error == "input cannot be read: Input/output error"
