"""Large aggregate reports are streamed: the decompressed XML is never held
whole, the parsed tree never holds more than one record, and each record
costs a bounded number of bytes. Memory is measured with tracemalloc (no
timing assertions)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from parsers.events import DmarcAggregateEvent
from parsers.reports import parse_report_bytes
from tests.fixtures._reports import aggregate_xml, dkim_xml, record_xml, spf_xml

RECORDS = 10_000


def record_strings(n: int) -> Iterator[str]:
    for i in range(n):
        ip = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" if i % 10 else f"2001:db8::{i:x}"
        failing = i % 7 == 0
        yield record_xml(
            ip, i % 50 + 1, disposition="quarantine" if failing else "none",
            dkim="fail" if failing else "pass", spf="fail" if i % 5 == 0 else "pass",
            envelope_from=f"bounce{i % 13}.example.com",
            auth=dkim_xml("example.com", "fail" if failing else "pass", f"s{i % 4}") + spf_xml(f"bounce{i % 13}.example.com"),
        )


def big_report_gzip(n: int) -> tuple[bytes, int]:
    """The gzip of an n-record report and the size of its XML, built a record
    at a time."""
    head, tail = aggregate_xml(["@@"]).split(b"@@")
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    parts = [compressor.compress(head)]
    size = len(head) + len(tail)
    for record in record_strings(n):
        encoded = record.encode()
        size += len(encoded)
        parts.append(compressor.compress(encoded))
    parts.append(compressor.compress(tail))
    parts.append(compressor.flush())
    return b"".join(parts), size


def measure(data: bytes) -> tuple[list, int, int]:
    """Events, bytes still allocated with the events alive, peak bytes."""
    tracemalloc.start()
    try:
        events = parse_report_bytes(data)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return events, current, peak


@pytest.fixture(scope="module")
def big_gzip() -> tuple[bytes, int]:
    # one small report first: what is loaded once per process (the public
    # suffix list) must not count as the cost of the big one
    assert isinstance(parse_report_bytes(aggregate_xml())[0], DmarcAggregateEvent)
    return big_report_gzip(RECORDS)


def check_report(events: list) -> None:
    assert len(events) == 1 and isinstance(events[0], DmarcAggregateEvent), events[:1]
    event = events[0]
    assert len(event.records) == RECORDS and event.errors == []
    assert sum(r.count for r in event.records) == sum(i % 50 + 1 for i in range(RECORDS))
    assert sum(r.disposition == "quarantine" for r in event.records) == len(range(0, RECORDS, 7))
    assert event.records[10].source_ip == "2001:db8::a"
    # 10,000 records of ~20 elements each: the parser's guard (50,000 live
    # elements) would have refused the report had records not been pruned
    # from the tree as they were read.


def test_gzip_report_is_streamed_and_its_records_are_lean(big_gzip) -> None:
    data, xml_size = big_gzip
    events, retained, peak = measure(data)
    check_report(events)
    transient = peak - retained  # what parsing needed beyond its result
    assert xml_size > 4 * 1024 * 1024
    assert transient < xml_size / 8, (transient, xml_size)  # a few 64 KB chunks, not the document
    # a record with one DKIM and one SPF result: the dataclass, its address,
    # three small lists; identical results and words are shared between records
    assert retained / RECORDS < 600, retained / RECORDS


def test_plain_xml_report_is_streamed_too(big_gzip) -> None:
    data = gzip.decompress(big_gzip[0])
    events, retained, peak = measure(data)
    check_report(events)
    assert peak - retained < len(data) / 8, (peak - retained, len(data))
