"""The report files in examples/ read as what they describe, also through
parsers.parse_bytes (the entry point `repmon parse` uses)."""

from __future__ import annotations

from pathlib import Path

from parsers import parse_bytes
from parsers.events import DmarcAggregateEvent, TlsReportEvent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_aggregate_xml_example() -> None:
    events = parse_bytes((EXAMPLES / "dmarc-aggregate.xml").read_bytes())
    assert len(events) == 1 and isinstance(events[0], DmarcAggregateEvent)
    event = events[0]
    assert (event.org_name, event.domain, event.policy, event.report_id) == (
        "example.net", "example.com", "quarantine", "repmon-example-20250301")
    assert [(r.source_ip, r.count, r.disposition, r.dkim, r.spf) for r in event.records] == [
        ("192.0.2.25", 1840, "none", "pass", "pass"),
        ("2001:db8:40::17", 36, "none", "pass", "fail"),
        ("198.51.100.77", 212, "quarantine", "fail", "fail"),
    ]
    assert event.records[1].policy_override_reasons == [{"type": "forwarded", "comment": "list.example.org mailing list"}]
    assert event.errors == []


def test_aggregate_gzip_example_in_the_rfc9990_schema() -> None:
    events = parse_bytes((EXAMPLES / "dmarc-aggregate-rfc9990.xml.gz").read_bytes())
    assert len(events) == 1 and isinstance(events[0], DmarcAggregateEvent)
    event = events[0]
    assert (event.org_name, event.policy, event.np, event.discovery_method) == (
        "Example Mailbox Provider", "reject", "reject", "treewalk")
    assert [(r.source_ip, r.disposition) for r in event.records] == [("192.0.2.25", "pass"), ("203.0.113.9", "reject")]
    assert event.records[1].dkim_results[0]["human_result"] == "signature did not verify"
    assert event.errors == []


def test_tls_report_example() -> None:
    events = parse_bytes((EXAMPLES / "smtp-tls-report.json").read_bytes())
    assert len(events) == 1 and isinstance(events[0], TlsReportEvent)
    event = events[0]
    assert [(p.policy_domain, p.policy_type, p.successful_session_count, p.failed_session_count)
            for p in event.policies] == [("example.com", "sts", 15230, 42), ("news.example.com", "no-policy-found", 880, 0)]
    assert event.policies[0].mx_host_patterns == ["mx1.example.com", "mx2.example.com"]
    assert sum(d["failed_session_count"] for d in event.policies[0].failure_details) == 42
    assert event.errors == []
