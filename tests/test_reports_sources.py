"""parsers.reports.sources: where a DMARC record's mail came from, offline,
from parsedmarc's shipped IP database and service map."""

from __future__ import annotations

import ipaddress
import time

import pytest
from parsedmarc.utils import get_base_domain

from parsers.events import DmarcAggregateEvent
from parsers.reports.sources import IpEnricher, default_enricher, enrich_events, parsedmarc_resources
from tests.fixtures._reports import aggregate_xml, parse_one, record_xml

AMAZON_IP = "100.24.188.149"  # in parsedmarc's sample reports: AS14618, Amazon


@pytest.fixture(scope="module")
def enricher() -> IpEnricher:
    return IpEnricher()


def test_shipped_data_is_found_without_importing_parsedmarc() -> None:
    resources = parsedmarc_resources()
    assert (resources / "ipinfo" / "ipinfo_lite.mmdb").is_file()
    assert (resources / "maps" / "base_reverse_dns_map.csv").is_file()


def test_known_ip_gets_country_as_and_service(enricher: IpEnricher) -> None:
    info = enricher.lookup(AMAZON_IP)
    assert (info.country, info.asn, info.as_name, info.as_domain) == ("US", 14618, "Amazon.com, Inc.", "amazon.com")
    assert (info.name, info.type) == ("Amazon", "Technology")
    assert info.reverse_dns is None and info.base_domain is None  # offline: no PTR lookups


def test_ip_outside_the_database_has_no_source(enricher: IpEnricher) -> None:
    info = enricher.lookup("192.0.2.1")  # documentation range
    assert (info.country, info.asn, info.name, info.type) == (None, None, None, None)


def test_reverse_dns_decides_the_service_when_given() -> None:
    names = {AMAZON_IP: "mail-a1.google.com", "100.24.188.150": "host.unknown-isp.example"}
    enricher = IpEnricher(reverse_dns=names.get)
    google = enricher.lookup(AMAZON_IP)
    assert (google.reverse_dns, google.base_domain, google.name, google.type) == (
        "mail-a1.google.com", "google.com", "Google (Including Gmail and Google Workspace)", "Email Provider")
    assert google.asn == 14618  # the database fields stay the IP's
    unknown = enricher.lookup("100.24.188.150")
    assert (unknown.base_domain, unknown.name, unknown.type) == ("unknown-isp.example", "unknown-isp.example", None)


def test_records_of_a_report_are_enriched_in_place(enricher: IpEnricher) -> None:
    event = parse_one(aggregate_xml([record_xml(AMAZON_IP, 3), record_xml("2001:db8::1", 1)]))
    assert event.records[0].source_country is None  # the parser itself never looks up
    enrich_events([event], enricher)
    amazon, documentation = event.records
    assert (amazon.source_country, amazon.source_asn, amazon.source_name) == ("US", 14618, "Amazon")
    assert documentation.source_asn is None
    assert event.to_dict()["records"][0]["source_as_domain"] == "amazon.com"


def test_default_enricher_is_opened_once() -> None:
    assert default_enricher() is default_enricher()


def test_thousands_of_lookups_per_second(enricher: IpEnricher) -> None:
    ips = [str(ipaddress.IPv4Address(0x01000000 + i * 65_537)) for i in range(5_000)]
    started = time.perf_counter()
    for ip in ips:
        enricher.lookup(ip)
    rate = len(ips) / (time.perf_counter() - started)
    print(f"{rate:,.0f} distinct-IP lookups/s")
    assert rate > 2_000  # generous: about 100,000/s measured on the project's machine


def test_event_kinds_other_than_aggregate_are_left_alone(enricher: IpEnricher) -> None:
    events = [parse_one(aggregate_xml())]
    enrich_events(events, enricher)
    assert isinstance(events[0], DmarcAggregateEvent)


@pytest.mark.parametrize("name", ["mail-a1.google.com", "o1.ptr1234.sendgrid.net", "a.b.c.example.co.uk",
                                  "static.1.2.3.4.clientes-izzi.mx", "cpe-1-2-3-4.example.applefibernet.com",
                                  "localhost"])
def test_base_domain_is_parsedmarcs(enricher: IpEnricher, name: str) -> None:
    assert enricher._base_domain(name) == get_base_domain(name)
