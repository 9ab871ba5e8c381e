"""DMARC aggregate reports: reports built by tests/fixtures/_reports.py, read
by parsers.reports."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.fixtures._reports import aggregate_xml, dkim_xml, parse_one, record_xml, spf_xml, unparseable

DMARC2 = "urn:ietf:params:xml:ns:dmarc-2.0"


# --- schema generations ---------------------------------------------------------

def test_rfc7489_report_fields() -> None:
    data = aggregate_xml(
        [record_xml("192.0.2.1", 10, disposition="none", dkim="pass", spf="pass",
                    envelope_from="bounce.example.com", auth=dkim_xml("example.com") + spf_xml("bounce.example.com")),
         record_xml("198.51.100.9", 3, disposition="reject", dkim="fail", spf="fail",
                    auth=spf_xml("example.com", "softfail"))],
        policy_extra="<adkim>s</adkim><aspf>r</aspf><sp>quarantine</sp><pct>50</pct><fo>1</fo>",
    )
    event = parse_one(data)
    assert (event.report_id, event.org_name, event.domain, event.policy) == ("rpt-1", "receiver.example", "example.com", "reject")
    assert event.begin == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert event.end == datetime(2023, 11, 15, 22, 13, 19, tzinfo=timezone.utc)
    assert (event.adkim, event.aspf, event.subdomain_policy, event.pct, event.fo) == ("s", "r", "quarantine", 50, "1")
    assert event.org_email == "dmarc@receiver.example"
    assert event.schema == "1.0" and event.errors == []
    first, second = event.records
    assert (first.source_ip, first.count, first.disposition, first.dkim, first.spf, first.header_from) == (
        "192.0.2.1", 10, "none", "pass", "pass", "example.com")
    assert first.envelope_from == "bounce.example.com"
    assert first.dkim_results == [{"domain": "example.com", "selector": "s1", "result": "pass", "human_result": None}]
    assert first.spf_results == [{"domain": "bounce.example.com", "scope": "mfrom", "result": "pass", "human_result": None}]
    assert (second.source_ip, second.count, second.disposition, second.dkim, second.spf) == (
        "198.51.100.9", 3, "reject", "fail", "fail")
    assert second.envelope_from == "example.com"  # from the SPF mail-from result


def test_draft_schema_without_version() -> None:
    event = parse_one(aggregate_xml(version=None))
    assert event.schema == "draft"
    assert event.records[0].source_ip == "192.0.2.1"


def test_rfc9990_namespace_and_fields() -> None:
    data = aggregate_xml(
        ns=DMARC2, policy_extra="<np>quarantine</np><testing>y</testing><discovery_method>treewalk</discovery_method>",
        metadata_extra="<generator>Receiver 2.0</generator>",
        records=[record_xml(auth=dkim_xml("example.com") + '<spf><domain>example.com</domain><result>pass</result></spf>')],
    )
    event = parse_one(data)
    assert (event.np, event.testing, event.discovery_method, event.generator) == ("quarantine", "y", "treewalk", "Receiver 2.0")
    assert event.errors == []
    assert event.records[0].spf_results[0]["scope"] is None
    assert event.records[0].envelope_from == "example.com"


def test_prefixed_namespace_elements_match_by_local_name() -> None:
    data = aggregate_xml().decode().replace("<", "<d:").replace("<d:/", "</d:").replace("<d:?xml", "<?xml")
    data = data.replace("<d:feedback>", f'<d:feedback xmlns:d="{DMARC2}">')
    event = parse_one(data.encode())
    assert event.report_id == "rpt-1" and len(event.records) == 1
    assert event.schema == "1.0"


def test_unknown_namespace_is_read_and_noted() -> None:
    event = parse_one(aggregate_xml(ns="urn:example:not-dmarc"))
    assert len(event.records) == 1
    assert any("unknown XML namespace 'urn:example:not-dmarc'" in e for e in event.errors)


def test_feedback_wrapped_in_another_element_is_read() -> None:
    data = aggregate_xml().replace(b"<feedback>", b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">\n<feedback>')
    event = parse_one(data)
    assert len(event.records) == 1
    assert any("wrapped in <schema>" in e for e in event.errors)


# --- normalisation ---------------------------------------------------------------

def test_result_words_and_domains_are_lower_cased() -> None:
    rec = record_xml("2001:DB8:0:0::1", 2, disposition="Quarantine", dkim="PASS", spf="Fail",
                     header_from="Example.COM", auth=dkim_xml("Example.COM", "PASS") + spf_xml("EXAMPLE.com", "SoftFail"))
    record = parse_one(aggregate_xml([rec])).records[0]
    assert (record.disposition, record.dkim, record.spf, record.header_from) == ("quarantine", "pass", "fail", "example.com")
    assert record.source_ip == "2001:db8::1"  # canonical IPv6 text
    assert record.dkim_results[0]["domain"] == "example.com" and record.dkim_results[0]["result"] == "pass"
    assert record.spf_results[0]["result"] == "softfail"


def test_missing_evaluation_fields_take_the_usual_defaults() -> None:
    rec = record_xml(disposition=None, dkim=None, spf=None, header_from=None)
    record = parse_one(aggregate_xml([rec])).records[0]
    assert (record.disposition, record.dkim, record.spf, record.header_from) == ("none", "fail", "fail", "")


def test_envelope_from_is_not_taken_from_a_helo_result() -> None:
    rec = record_xml(auth=spf_xml("mx.relay.example", scope="helo"))
    assert parse_one(aggregate_xml([rec])).records[0].envelope_from is None


def test_report_id_written_like_a_message_id_is_cleaned() -> None:
    assert parse_one(aggregate_xml(report_id="&lt;abc123@receiver.example&gt;")).report_id == "abc123"


@pytest.mark.parametrize(("org", "email", "expected"), [
    ("Mail.Receiver.EXAMPLE.com", "x@y.example", "example.com"),
    ("Receiver Inc.", "x@y.example", "Receiver Inc."),
    ("", "dmarc@reports.receiver.example.org", "example.org"),
    ("Yahoo", "x@y.example", "Yahoo"),
])
def test_org_name_is_the_reporters_organisational_domain(org: str, email: str, expected: str) -> None:
    assert parse_one(aggregate_xml(org=org, email=email)).org_name == expected


def test_several_auth_results_and_override_reasons() -> None:
    reason = ("<reason><type>Forwarded</type><comment>list</comment></reason>"
              "<reason><type></type><comment></comment></reason>")
    auth = dkim_xml("example.com") + dkim_xml("esp.example.net", "fail", None) + spf_xml("esp.example.net")
    record = parse_one(aggregate_xml([record_xml(reason=reason, auth=auth)])).records[0]
    assert [r["domain"] for r in record.dkim_results] == ["example.com", "esp.example.net"]
    assert record.dkim_results[1]["selector"] is None
    assert record.policy_override_reasons == [{"type": "forwarded", "comment": "list"}, {"type": None, "comment": None}]


def test_identical_auth_results_are_shared_between_records() -> None:
    auth = dkim_xml("example.com") + spf_xml("example.com")
    first, second = parse_one(aggregate_xml([record_xml("192.0.2.1", auth=auth), record_xml("192.0.2.2", auth=auth)])).records
    assert first.dkim_results[0] is second.dkim_results[0]  # memory: one dict per distinct result
    assert first.dkim_results is not second.dkim_results  # but each record has its own list


def test_escaped_characters_are_decoded() -> None:
    reason = "<reason><type>local_policy</type><comment>a &amp; b &#233;</comment></reason>"
    record = parse_one(aggregate_xml([record_xml(reason=reason)])).records[0]
    assert record.policy_override_reasons[0]["comment"] == "a & b \u00e9"


def test_comments_and_processing_instructions_are_ignored() -> None:
    rec = record_xml().replace("<count>", "<!-- note --><?pi x?><count>")
    record = parse_one(aggregate_xml([rec])).records[0]
    assert record.count == 1


def test_reporter_errors_are_kept() -> None:
    event = parse_one(aggregate_xml(metadata_extra="<error>some records dropped</error><error>second</error>"))
    assert event.errors[:2] == ["some records dropped", "second"]


# --- bad values ------------------------------------------------------------------

@pytest.mark.parametrize(("ip", "count", "why"), [
    ("not-an-ip", 1, "source_ip 'not-an-ip' is not an IP address"),
    ("192.0.2.300", 1, "is not an IP address"),
    ("", 1, "source_ip None is not an IP address"),
    ("192.0.2.7", "abc", "count 'abc' is not a whole number"),
    ("192.0.2.7", "-5", "count '-5' is not a whole number"),
    ("192.0.2.7", "1.5", "count '1.5' is not a whole number"),
])
def test_a_bad_record_is_skipped_with_the_reason(ip: str, count: str, why: str) -> None:
    event = parse_one(aggregate_xml([record_xml("192.0.2.1", 4), record_xml(ip, count), record_xml("192.0.2.3", 5)]))
    assert [r.source_ip for r in event.records] == ["192.0.2.1", "192.0.2.3"]
    assert any(e.startswith("record 2: ") and why in e and "record skipped" in e for e in event.errors), event.errors


def test_record_without_row_is_skipped() -> None:
    event = parse_one(aggregate_xml(["<record><identifiers><header_from>x</header_from></identifiers></record>"]))
    assert event.records == [] and "record 1: no <row>; record skipped" in event.errors


@pytest.mark.parametrize(("begin", "end", "message"), [
    ("yesterday", 1700086399, "date_range <begin> 'yesterday' is not a Unix time"),
    (1700000000, "1700000000000", "date_range <end> '1700000000000' is not a Unix time"),  # milliseconds
    (1700000000, "99999999999999999999999", "is not a Unix time"),
    ("-86400", 1700086399, "is not a Unix time"),
])
def test_bad_dates_make_the_report_unparseable(begin, end, message) -> None:
    assert message in unparseable(aggregate_xml(begin=begin, end=end))


def test_fractional_and_iso_dates_are_accepted() -> None:
    event = parse_one(aggregate_xml(begin="1700000000.250", end="2023-11-15T22:13:19Z"))
    assert event.begin == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert event.end == datetime(2023, 11, 15, 22, 13, 19, tzinfo=timezone.utc)


def test_end_before_begin_is_noted() -> None:
    event = parse_one(aggregate_xml(begin=1700086399, end=1700000000))
    assert any("ends" in e and "before it begins" in e for e in event.errors)


def test_bad_pct_is_noted_and_dropped() -> None:
    event = parse_one(aggregate_xml(policy_extra="<pct>150</pct>"))
    assert event.pct is None and any("pct '150'" in e for e in event.errors)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"report_id": ""}, "has no <report_id>"),
    ({"domain": ""}, "has no <policy_published><domain>"),
    ({"org": "", "email": ""}, "names no reporting organisation"),
    ({"date_range": ""}, "has no date_range <begin>"),
])
def test_missing_required_fields(kwargs: dict, message: str) -> None:
    assert message in unparseable(aggregate_xml(**kwargs))


def test_missing_p_is_noted_not_fatal() -> None:
    event = parse_one(aggregate_xml(p=None))
    assert event.policy is None and "policy_published has no <p>" in event.errors


def test_missing_sections() -> None:
    no_metadata = b"<feedback><policy_published><domain>example.com</domain></policy_published></feedback>"
    assert "has no <report_metadata>" in unparseable(no_metadata)
    no_policy = aggregate_xml().replace(b"<policy_published><domain>example.com</domain><p>reject</p></policy_published>", b"")
    assert "has no <policy_published>" in unparseable(no_policy)


def test_report_without_records_is_kept_with_a_note() -> None:
    event = parse_one(aggregate_xml([]))
    assert event.records == [] and "report has no <record>" in event.errors


# --- broken XML ------------------------------------------------------------------

def test_invalid_xml_is_repaired_and_noted() -> None:
    rec = record_xml(header_from="bad<xml.example")
    event = parse_one(aggregate_xml([rec, record_xml("192.0.2.2")]))
    assert [r.header_from for r in event.records] == ["", "example.com"]
    assert any(e.startswith("invalid XML repaired:") for e in event.errors)


def test_truncated_xml_is_refused() -> None:
    data = aggregate_xml([record_xml("192.0.2.1"), record_xml("192.0.2.2")])
    cut = data[: data.rindex(b"<record>") + 20]
    assert "incomplete: the XML ends inside <feedback> after 1 records" in unparseable(cut)


@pytest.mark.parametrize(("data", "message"), [
    (b"<html><body>hello</body></html>", "no <feedback> element (the document is <html>)"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "(the document is <rss>)"),
    (b"<", "no <feedback> element"),
])
def test_xml_that_is_not_a_report(data: bytes, message: str) -> None:
    assert message in unparseable(data)


def test_json_rendering_of_the_event() -> None:
    event = parse_one(aggregate_xml())
    rendered = json.loads(json.dumps(event.to_dict()))
    assert rendered["kind"] == "dmarc_aggregate"
    assert rendered["begin"] == "2023-11-14T22:13:20Z" and rendered["end"] == "2023-11-15T22:13:19Z"
    assert rendered["records"][0]["source_ip"] == "192.0.2.1"
