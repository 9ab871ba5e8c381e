"""Report containers: gzip, zip, nesting and their hostile forms (bombs,
truncation, corruption, encryption), with archives built here."""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from typing import Any

import pytest

from parsers.events import DmarcAggregateEvent, TlsReportEvent
from parsers.reports import Limits, parse_report_bytes
from tests.fixtures._reports import TLS_REPORT, aggregate_xml, error_and_peak, make_zip, only_error, record_xml, zip_bomb


def gzip_stream(prefix: bytes, filler: bytes, megabytes: int) -> bytes:
    """A gzip of prefix + `megabytes` MiB of filler, built without holding
    the expanded data in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(prefix)]
    block = filler * (1024 * 1024 // len(filler))
    for _ in range(megabytes):
        out.append(compressor.compress(block))
    out.append(compressor.flush())
    return b"".join(out)


def kinds(events: list) -> list[str]:
    return [event.kind for event in events]


# --- ordinary containers ---------------------------------------------------------

def test_gzip_report() -> None:
    events: list[Any] = parse_report_bytes(gzip.compress(aggregate_xml()))
    assert kinds(events) == ["dmarc_aggregate"] and events[0].errors == []


def test_zip_report() -> None:
    events: list[Any] = parse_report_bytes(make_zip({"receiver!example.com!1700000000!1700086399.xml": aggregate_xml()}))
    assert kinds(events) == ["dmarc_aggregate"]


def test_zip_stored_without_compression() -> None:
    events: list[Any] = parse_report_bytes(make_zip({"r.xml": aggregate_xml()}, zipfile.ZIP_STORED))
    assert kinds(events) == ["dmarc_aggregate"]


def test_zip_with_two_reports_and_a_readme() -> None:
    archive = make_zip({
        "README.txt": b"reports for example.com",
        "a.xml": aggregate_xml(report_id="a"),
        "dir/": b"",
        "b.xml": aggregate_xml(report_id="b"),
    })
    events: list[Any] = parse_report_bytes(archive)
    assert [e.report_id for e in events] == ["a", "b"]


def test_zip_with_a_good_and_a_broken_report_keeps_both() -> None:
    events: list[Any] = parse_report_bytes(make_zip({"a.xml": aggregate_xml(report_id="a"), "b.xml": b"<feedback><oops"}))
    assert kinds(events) == ["dmarc_aggregate", "unparseable"]
    assert events[1].error.startswith("entry 'b.xml': ")


def test_zip_without_a_report() -> None:
    error = only_error(parse_report_bytes(make_zip({"invoice.pdf": b"%PDF-1.4 ...", "notes.txt": b"hello"})))
    assert error.startswith("no DMARC or SMTP TLS report inside: entry 'invoice.pdf': is neither XML nor JSON")


def test_empty_zip() -> None:
    assert "holds no file" in only_error(parse_report_bytes(make_zip({})))


def test_multi_member_gzip() -> None:
    data = aggregate_xml()
    half = len(data) // 2
    events: list[Any] = parse_report_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    assert kinds(events) == ["dmarc_aggregate"] and events[0].errors == []


def test_gzip_with_trailing_garbage_is_read_and_noted() -> None:
    events: list[Any] = parse_report_bytes(gzip.compress(aggregate_xml()) + b"unused")
    assert kinds(events) == ["dmarc_aggregate"]
    assert any("6 bytes after the end of the gzip stream were ignored" in e for e in events[0].errors)


def test_gzip_padded_with_zeros_is_read_silently() -> None:
    events: list[Any] = parse_report_bytes(gzip.compress(aggregate_xml()) + b"\0" * 512)
    assert kinds(events) == ["dmarc_aggregate"] and events[0].errors == []


def test_tls_report_in_gzip_and_zip() -> None:
    document = json.dumps(TLS_REPORT).encode()
    for data in (gzip.compress(document), make_zip({"r.json": document})):
        events: list[Any] = parse_report_bytes(data)
        assert len(events) == 1 and isinstance(events[0], TlsReportEvent)


def test_gzip_inside_zip_and_zip_inside_zip() -> None:
    inner_zip = make_zip({"r.xml": aggregate_xml()})
    for archive in (make_zip({"r.xml.gz": gzip.compress(aggregate_xml())}), make_zip({"inner.zip": inner_zip}),
                    gzip.compress(gzip.compress(aggregate_xml()))):
        events: list[Any] = parse_report_bytes(archive)
        assert kinds(events) == ["dmarc_aggregate"], events


def test_archives_nested_three_deep_are_refused() -> None:
    three = make_zip({"mid.zip": make_zip({"inner.zip": make_zip({"r.xml": aggregate_xml()})})})
    assert "nested more than 2" in only_error(parse_report_bytes(three))
    gz3 = gzip.compress(gzip.compress(gzip.compress(aggregate_xml())))
    assert "nested more than 2" in only_error(parse_report_bytes(gz3))


def test_bom_and_utf16_xml() -> None:
    assert kinds(parse_report_bytes(b"\xef\xbb\xbf" + aggregate_xml())) == ["dmarc_aggregate"]
    utf16 = aggregate_xml().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert kinds(parse_report_bytes(utf16)) == ["dmarc_aggregate"]


# --- not reports -----------------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (b"   \r\n\t ", "empty input"),
    (bytes(range(256)) * 4, "is neither XML nor JSON"),
    (b"hello, this is text", "is neither XML nor JSON (starts with b'hello, this "),
    (b"%PDF-1.7\n", "is neither XML nor JSON"),
])
def test_binary_text_and_empty_input(data: bytes, message: str) -> None:
    assert message in only_error(parse_report_bytes(data))


def test_gzip_of_binary() -> None:
    assert "is neither XML nor JSON" in only_error(parse_report_bytes(gzip.compress(bytes(range(256)))))


# --- broken and hostile archives -------------------------------------------------

def test_truncated_gzip_is_refused() -> None:
    data = gzip.compress(aggregate_xml([record_xml(f"192.0.2.{i}") for i in range(1, 200)]))
    for cut in (len(data) // 2, len(data) - 4):
        assert "truncated" in only_error(parse_report_bytes(data[:cut]))


def test_gzip_with_only_a_header() -> None:
    assert "truncated" in only_error(parse_report_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"))


def test_corrupt_gzip_is_refused() -> None:
    data = bytearray(gzip.compress(aggregate_xml([record_xml(f"192.0.2.{i}") for i in range(1, 50)])))
    data[-6] ^= 0xFF  # the CRC-32 of the content
    assert "gzip archive is corrupt" in only_error(parse_report_bytes(bytes(data)))
    data = bytearray(gzip.compress(aggregate_xml()))
    data[20:30] = b"\xff" * 10  # the deflate stream itself
    assert "corrupt" in only_error(parse_report_bytes(bytes(data)))


def test_corrupt_zip_is_refused() -> None:
    archive = make_zip({"r.xml": aggregate_xml([record_xml(f"192.0.2.{i}") for i in range(1, 50)])})
    assert "cannot be read" in only_error(parse_report_bytes(archive[:-30]))
    damaged = bytearray(archive)
    damaged[60:80] = b"\x00" * 20
    assert only_error(parse_report_bytes(bytes(damaged)))


def test_encrypted_zip_entry_is_refused() -> None:
    archive = bytearray(make_zip({"r.xml": aggregate_xml()}))
    local = archive.index(b"PK\x03\x04")
    central = archive.index(b"PK\x01\x02")
    archive[local + 6] |= 0x01  # general purpose flag bit 0: encrypted
    archive[central + 8] |= 0x01
    assert "entry 'r.xml' is encrypted" in only_error(parse_report_bytes(bytes(archive)))


def test_zip_with_too_many_entries() -> None:
    archive = make_zip({f"r{i}.xml": b"<feedback/>" for i in range(70)})
    assert "70 entries, more than the 64 allowed" in only_error(parse_report_bytes(archive))


def test_gzip_bomb_is_stopped_by_the_ratio_limit_without_expanding() -> None:
    error, peak = error_and_peak(gzip_stream(b"<feedback>", b" ", 64))  # 64 MiB of spaces in about 64 KB
    assert "decompression bomb" in error and "expands more than 250:1" in error
    assert peak < 16 * 1024 * 1024  # streamed: never more than a few chunks in memory


def test_zip_bomb_is_stopped_without_expanding() -> None:
    error, peak = error_and_peak(zip_bomb(64))
    assert "entry 'bomb.xml'" in error and "expands more than 250:1" in error and "decompression bomb" in error
    assert peak < 16 * 1024 * 1024


def test_size_limit_applies_to_the_whole_input() -> None:
    data = gzip.compress(aggregate_xml([record_xml(f"192.0.2.{i % 250 + 1}") for i in range(3000)]))
    assert kinds(parse_report_bytes(data)) == ["dmarc_aggregate"]
    error = only_error(parse_report_bytes(data, limits=Limits(max_decompressed_bytes=100_000)))
    assert "decompresses to more than 100000 bytes" in error


def test_the_decompressed_budget_is_shared_by_zip_entries() -> None:
    report = aggregate_xml([record_xml(f"192.0.2.{i % 250 + 1}") for i in range(300)])
    archive = make_zip({"a.xml": report, "b.xml": report})
    limits = Limits(max_decompressed_bytes=len(report) + 1000)
    events: list[Any] = parse_report_bytes(archive, limits=limits)
    assert kinds(events) == ["dmarc_aggregate", "unparseable"]
    assert "decompresses to more than" in events[1].error


def test_json_size_limit() -> None:
    document = json.dumps({**TLS_REPORT, "padding": "x" * 5000}).encode()
    assert "larger than 1000 bytes" in only_error(parse_report_bytes(document, limits=Limits(max_json_bytes=1000)))


def test_report_is_complete_but_its_gzip_is_damaged_at_the_end() -> None:
    data = gzip.compress(aggregate_xml())
    # the XML is whole, the gzip trailer (CRC, size) is cut: refused, the
    # container cannot vouch for the content
    assert "truncated" in only_error(parse_report_bytes(data[:-8]))


def test_events_are_aggregate_events() -> None:
    events: list[Any] = parse_report_bytes(make_zip({"r.xml": aggregate_xml()}))
    assert isinstance(events[0], DmarcAggregateEvent)


def test_a_bad_entry_does_not_stop_the_next_ones() -> None:
    too_deep = make_zip({"inner.zip": make_zip({"r.xml": aggregate_xml()})})
    archive = make_zip({"a.zip": too_deep, "b.xml": aggregate_xml(report_id="b"), "c.xml.gz": b"\x1f\x8b\x08broken"})
    events: list[Any] = parse_report_bytes(archive)
    assert kinds(events) == ["unparseable", "dmarc_aggregate", "unparseable"]
    assert "nested more than 2" in events[0].error and events[1].report_id == "b"
    assert "'c.xml.gz'" in events[2].error
