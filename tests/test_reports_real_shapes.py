"""Shapes of real DMARC reports that repmon once failed on, and the ones it
reads better than parsedmarc; every report here is written by the test.

- Google, Yahoo, AOL, Comcast and mail.ru write DKIM results without a
  <selector>; such a result once shared its dict with an SPF result of the
  same domain and result (KeyError: 'scope').
- A zip entry with an empty name (IndexError in zipfile's is_dir).
- A record without <policy_evaluated>: dkim/spf stay absent, with a note.
- Invalid UTF-8 in a domain: the bad bytes are dropped, as parsedmarc drops them.
- A count above 10**9: the report is refused.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from parsers import parse_bytes
from parsers.events import DmarcAggregateEvent, FeedbackEvent, TlsReportEvent, UnparseableEvent
from tests.fixtures._reports import TLS_REPORT, aggregate_xml, dkim_xml, parse_one, record_xml, spf_xml, unparseable


def test_dkim_result_without_selector_next_to_spf_result_of_the_same_domain() -> None:
    # Google's shape: <dkim><domain>example.com</domain><result>pass</result></dkim>, then SPF pass for it
    auth = dkim_xml("example.com", "pass", selector=None) + spf_xml("example.com", "pass", scope=None)
    second = dkim_xml("example.com", "pass", selector=None) + spf_xml("example.com", "pass", scope="mfrom")
    event = parse_one(aggregate_xml([record_xml("192.0.2.1", 3, auth=auth), record_xml("192.0.2.2", 4, auth=second)]))
    first, other = event.records
    assert first.dkim_results == [{"domain": "example.com", "selector": None, "result": "pass", "human_result": None}]
    assert first.spf_results == [{"domain": "example.com", "scope": None, "result": "pass", "human_result": None}]
    assert other.spf_results[0]["scope"] == "mfrom" and "selector" not in other.spf_results[0]
    assert first.envelope_from == "example.com"


def test_spf_first_then_dkim_without_selector() -> None:
    auth = spf_xml("example.com", "pass", scope=None) + dkim_xml("example.com", "pass", selector=None)
    event = parse_one(aggregate_xml([record_xml(auth=auth), record_xml("192.0.2.9", auth=auth)]))
    for record in event.records:
        assert set(record.dkim_results[0]) == {"domain", "selector", "result", "human_result"}
        assert set(record.spf_results[0]) == {"domain", "scope", "result", "human_result"}


def test_override_reason_never_shares_a_dict_with_an_auth_result() -> None:
    reason = "<reason><type>forwarded</type><comment>pass</comment></reason>"
    event = parse_one(aggregate_xml([record_xml(reason=reason, auth=dkim_xml("forwarded", "pass", selector=None))]))
    record = event.records[0]
    assert record.policy_override_reasons == [{"type": "forwarded", "comment": "pass"}]
    assert record.dkim_results[0]["domain"] == "forwarded"


def test_zip_entry_with_an_empty_name() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(""), aggregate_xml())
    [event] = parse_bytes(buffer.getvalue())
    assert isinstance(event, DmarcAggregateEvent) and len(event.records) == 1


def test_record_without_policy_evaluated_keeps_dkim_and_spf_absent() -> None:
    bare = ("<record><row><source_ip>192.0.2.5</source_ip><count>7</count></row>"
            "<identifiers><header_from>example.com</header_from></identifiers>"
            "<auth_results>" + spf_xml("example.com", "pass") + "</auth_results></record>")
    event = parse_one(aggregate_xml([bare, record_xml("192.0.2.6", 2)]))
    unevaluated, evaluated = event.records
    assert (unevaluated.disposition, unevaluated.dkim, unevaluated.spf) == (None, None, None)
    assert unevaluated.spf_results[0]["result"] == "pass"  # what the report does say is kept
    assert (evaluated.dkim, evaluated.spf) == ("pass", "pass")
    assert any("record 1: no <policy_evaluated>" in e and "left absent" in e for e in event.errors), event.errors


def test_policy_evaluated_without_results_still_reads_as_fail() -> None:
    # an empty <policy_evaluated> is the reporter's (parsedmarc reads it the same way)
    record = parse_one(aggregate_xml([record_xml(disposition=None, dkim=None, spf=None)])).records[0]
    assert (record.disposition, record.dkim, record.spf) == ("none", "fail", "fail")


def test_invalid_utf8_in_domains_is_dropped() -> None:
    data = aggregate_xml([record_xml(header_from="exa@FF@mple.org", auth=dkim_xml("b@E9@ad.example", "pass"))],
                         domain="ex@C3@(ample.com")
    event = parse_one(data.replace(b"@FF@", b"\xff").replace(b"@E9@", b"\xe9").replace(b"@C3@", b"\xc3"))
    assert event.domain == "ex(ample.com"
    assert event.records[0].header_from == "example.org"
    assert event.records[0].dkim_results[0]["domain"] == "bad.example"


@pytest.mark.parametrize("count", ["9223372036854775807", "1000000001", "9" * 5000])
def test_a_count_above_a_billion_refuses_the_report(count: str) -> None:
    error = unparseable(aggregate_xml([record_xml("192.0.2.1", 5), record_xml("192.0.2.2", count)]))
    assert "record 2: count" in error and "1,000,000,000" in error and "report refused" in error


def test_a_count_of_a_billion_is_kept() -> None:
    assert parse_one(aggregate_xml([record_xml(count=10**9)])).records[0].count == 10**9


# --- what repmon reads and parsedmarc does not -------------------------------------

def test_utf8_bom_before_the_xml_declaration() -> None:
    [event] = parse_bytes(b"\xef\xbb\xbf" + aggregate_xml())
    assert isinstance(event, DmarcAggregateEvent)


def test_gzip_inside_gzip() -> None:
    [event] = parse_bytes(gzip.compress(gzip.compress(aggregate_xml())))
    assert isinstance(event, DmarcAggregateEvent)


def test_zip_whose_first_entry_is_a_folder() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("reports/", b"")
        archive.writestr("reports/receiver.example!example.com!1700000000!1700086399.xml", aggregate_xml())
    [event] = parse_bytes(buffer.getvalue())
    assert isinstance(event, DmarcAggregateEvent)


def test_uncompressed_tlsrpt_attachment() -> None:
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["From"] = "tlsrpt@receiver.example"
    msg["Subject"] = "Report Domain: example.com Submitter: receiver.example Report-ID: <r1@receiver.example>"
    msg.attach(MIMEText("This is an SMTP TLS report."))
    msg.attach(MIMEApplication(json.dumps(TLS_REPORT).encode(), "tlsrpt+json"))
    events = parse_bytes(msg.as_bytes())
    assert [type(e) for e in events] == [TlsReportEvent]


def test_arf_abuse_report_is_a_complaint_not_a_dmarc_failure() -> None:
    raw = (b"From: fbl@isp.example\r\nTo: abuse@example.com\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nA complaint about DMARC-passing mail.\r\n"
           b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: fbl/1.0\r\n"
           b"Version: 1\r\nSource-IP: 192.0.2.25\r\nReported-Domain: example.com\r\n"
           b"Original-Rcpt-To: reader@isp.example\r\n"
           b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@example.com\r\nTo: reader@isp.example\r\n"
           b"Subject: news\r\n\r\n--b--\r\n")
    events = parse_bytes(raw)
    [complaint] = events
    assert isinstance(complaint, FeedbackEvent), events
    assert complaint.feedback_type == "abuse"
    assert not any(isinstance(e, UnparseableEvent) for e in events)


def test_tls_report_with_a_5000_digit_count_is_unparseable_with_the_reason() -> None:
    data = b'{"organization-name": "x", "policies": [{"summary": {"total-successful-session-count": ' + b"9" * 5000 + b"}}]}"
    [event] = parse_bytes(data)
    assert isinstance(event, UnparseableEvent) and event.error.startswith("JSON cannot be read: Exceeds the limit")
