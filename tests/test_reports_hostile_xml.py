"""Hostile XML: entity expansion, external entities (file and network),
floods and depth. Nothing may be expanded or fetched; each input gets a
clear refusal, and memory stays small."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parsers.events import DmarcAggregateEvent, UnparseableEvent
from parsers.reports import parse_report_bytes
from tests.fixtures._reports import aggregate_xml, error_and_peak, make_zip, record_xml

DOCTYPE_REFUSED = "XML has a DOCTYPE declaration"


def only_error(data: bytes) -> str:
    events: list[Any] = parse_report_bytes(data)
    assert len(events) == 1 and isinstance(events[0], UnparseableEvent), events
    return events[0].error


def with_doctype(doctype: str, org: str = "receiver.example") -> bytes:
    """A valid report with a DOCTYPE placed before <feedback>."""
    return aggregate_xml(org=org).replace(b"<feedback>", doctype.encode() + b"\n<feedback>", 1)


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, socket.socket]]:
    """A TCP port on 127.0.0.1 that records whether anything connected: the
    kernel completes a handshake into the backlog even before accept()."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    try:
        yield server.getsockname()[1], server
    finally:
        server.close()


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_billion_laughs_is_refused_without_expansion() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    error, peak = error_and_peak(with_doctype(f"<!DOCTYPE feedback [{''.join(entities)}]>", org="&lol9;"))
    assert error.startswith(DOCTYPE_REFUSED) and "neither expanded nor fetched" in error
    assert peak < 4 * 1024 * 1024


def test_quadratic_blowup_is_refused() -> None:
    data = with_doctype(f'<!DOCTYPE feedback [<!ENTITY a "{"x" * 50_000}">]>', org="&a;" * 2000)
    assert only_error(data).startswith(DOCTYPE_REFUSED)


def test_external_file_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-81723")
    data = with_doctype(f'<!DOCTYPE feedback [<!ENTITY x SYSTEM "file://{secret}">]>', org="&x;")
    events: list[Any] = parse_report_bytes(data)
    assert "TOP-SECRET-MARKER" not in json.dumps([e.to_dict() for e in events])
    assert len(events) == 1 and events[0].error.startswith(DOCTYPE_REFUSED)


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE feedback SYSTEM "http://127.0.0.1:{port}/report.dtd">',
    '<!DOCTYPE feedback [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>',
    '<!DOCTYPE feedback [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>',
    '<!DOCTYPE feedback PUBLIC "-//X//Y" "http://127.0.0.1:{port}/public.dtd">',
])
def test_network_entities_are_never_fetched(loopback_listener, doctype: str) -> None:
    port, server = loopback_listener
    data = with_doctype(doctype.format(port=port), org="&x;" if "ENTITY x" in doctype else "receiver.example")
    assert only_error(data).startswith(DOCTYPE_REFUSED)
    assert connections(server) == 0


def test_schema_locations_and_xinclude_are_not_followed(loopback_listener) -> None:
    port, server = loopback_listener
    data = aggregate_xml(metadata_extra=(
        f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="http://127.0.0.1:{port}/inc.xml"/>'
    )).replace(b"<feedback>", (
        '<feedback xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:noNamespaceSchemaLocation="http://127.0.0.1:{port}/rua.xsd">'
    ).encode())
    events: list[Any] = parse_report_bytes(data)
    assert len(events) == 1 and isinstance(events[0], DmarcAggregateEvent)
    assert connections(server) == 0


@pytest.mark.parametrize("prefix", [
    b"<!-- a comment first -->\n<?xml-stylesheet href='x'?>\n",
    b"<!--" + b"x" * 70_000 + b"-->",
    b"\n\n   \t",
])
def test_doctype_after_comments_and_whitespace(prefix: bytes) -> None:
    data = aggregate_xml().replace(b'<?xml version="1.0" encoding="UTF-8"?>\n', b"")
    data = prefix + b'<!doctype feedback [<!ENTITY a "b">]>' + data
    assert only_error(data).startswith(DOCTYPE_REFUSED)


def test_doctype_in_utf16_document() -> None:
    text = with_doctype('<!DOCTYPE feedback [<!ENTITY a "b">]>').decode()
    data = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert only_error(data).startswith(DOCTYPE_REFUSED)


def test_doctype_in_gzip_and_zip() -> None:
    data = with_doctype('<!DOCTYPE feedback [<!ENTITY a "b">]>')
    assert only_error(gzip.compress(data)).startswith(DOCTYPE_REFUSED)
    assert DOCTYPE_REFUSED in only_error(make_zip({"r.xml": data}))


def test_undefined_entity_is_not_expanded_and_noted() -> None:
    events: list[Any] = parse_report_bytes(aggregate_xml(org="receiver&xxe;.example"))
    assert isinstance(events[0], DmarcAggregateEvent)
    assert events[0].org_name == "receiver.example"
    assert any("Entity 'xxe' not defined" in e for e in events[0].errors)


def test_element_flood_inside_a_record_is_refused() -> None:
    error, peak = error_and_peak(aggregate_xml(["<record>" + "<x/>" * 120_000 + "</record>"]))
    assert "more than 50000 elements outside finished records" in error
    assert peak < 32 * 1024 * 1024


def test_junk_before_feedback_is_refused_early() -> None:
    data = b"<root>" + b"<junk>some text</junk>" * 60_000 + b"<feedback/></root>"
    assert "no <feedback> element in its first 1048576 bytes" in only_error(data)


def test_excessive_depth_is_refused() -> None:
    deep = "<record>" + "<x>" * 5000 + "</x>" * 5000 + "</record>"
    error = only_error(aggregate_xml([deep]))
    assert "incomplete" in error and "Excessive depth" in error


def test_huge_text_node_is_refused() -> None:
    error = only_error(aggregate_xml(org="x" * (11 * 1024 * 1024)))
    assert "Text node too long" in error


def test_many_records_with_a_hostile_one_in_the_middle() -> None:
    records = [record_xml(f"192.0.2.{i}") for i in range(1, 30)]
    records.insert(10, "<record>" + "<row>" * 3 + "</row>" * 3 + "</record>")
    events: list[Any] = parse_report_bytes(aggregate_xml(records))
    assert isinstance(events[0], DmarcAggregateEvent) and len(events[0].records) == 29
    assert any(e.startswith("record 11:") for e in events[0].errors)
