"""SMTP TLS reports (RFC 8460) built here, read by parsers.reports."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from parsers.events import TlsReportEvent, UnparseableEvent
from parsers.reports import parse_report_bytes

REPORT = {
    "organization-name": "Receiver Inc.",
    "date-range": {"start-datetime": "2025-02-01T00:00:00Z", "end-datetime": "2025-02-01T23:59:59Z"},
    "contact-info": "tlsrpt@receiver.example",
    "report-id": "2025-02-01T00:00:00Z_example.com",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"],
                "policy-domain": "Example.COM",
                "mx-host": "mx.example.com",
            },
            "summary": {"total-successful-session-count": 900, "total-failure-session-count": 12},
            "failure-details": [
                {"result-type": "certificate-expired", "sending-mta-ip": "198.51.100.4",
                 "receiving-mx-hostname": "mx.example.com", "receiving-ip": "192.0.2.10",
                 "failed-session-count": 10, "additional-info-uri": "https://receiver.example/why"},
                {"result-type": "sts-policy-fetch-error", "sending-mta-ip": "", "receiving-ip": "",
                 "failed-session-count": 2, "failure-reason-code": "HTTP 404"},
            ],
        },
        {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "news.example.com"},
            "summary": {"total-successful-session-count": 40, "total-failure-session-count": 0},
        },
    ],
}


def encode(document) -> bytes:
    return json.dumps(document).encode()


def parse_tls(document) -> TlsReportEvent:
    events = parse_report_bytes(encode(document))
    assert len(events) == 1 and isinstance(events[0], TlsReportEvent), events
    return events[0]


def refused(document) -> str:
    data = document if isinstance(document, bytes) else encode(document)
    events = parse_report_bytes(data)
    assert len(events) == 1 and isinstance(events[0], UnparseableEvent), events
    return events[0].error


def changed(path: list, value) -> dict:
    """REPORT with the value at `path` replaced (or removed when value is ...)."""
    document = copy.deepcopy(REPORT)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


def test_report_fields() -> None:
    event = parse_tls(REPORT)
    assert (event.report_id, event.organization_name, event.contact_info) == (
        "2025-02-01T00:00:00Z_example.com", "Receiver Inc.", "tlsrpt@receiver.example")
    assert event.begin == datetime(2025, 2, 1, tzinfo=timezone.utc)
    assert event.end == datetime(2025, 2, 1, 23, 59, 59, tzinfo=timezone.utc)
    sts, none = event.policies
    assert (sts.policy_domain, sts.policy_type, sts.successful_session_count, sts.failed_session_count) == (
        "example.com", "sts", 900, 12)
    assert sts.policy_strings[1] == "mode: enforce" and sts.mx_host_patterns == ["mx.example.com"]
    assert sts.failure_details[0] == {
        "result_type": "certificate-expired", "sending_mta_ip": "198.51.100.4",
        "receiving_mx_hostname": "mx.example.com", "receiving_ip": "192.0.2.10",
        "failed_session_count": 10, "additional_information": "https://receiver.example/why",
    }
    # blank strings are fields that do not apply, not values
    assert sts.failure_details[1] == {"result_type": "sts-policy-fetch-error", "failed_session_count": 2,
                                      "failure_reason_code": "HTTP 404"}
    assert (none.policy_domain, none.policy_type, none.failure_details) == ("news.example.com", "no-policy-found", [])
    assert event.errors == []


def test_json_rendering() -> None:
    rendered = json.loads(json.dumps(parse_tls(REPORT).to_dict()))
    assert rendered["kind"] == "tls_report" and rendered["begin"] == "2025-02-01T00:00:00Z"
    assert rendered["policies"][0]["failed_session_count"] == 12


def test_utf8_bom_and_whitespace() -> None:
    events = parse_report_bytes(b"\xef\xbb\xbf\n  " + encode(REPORT))
    assert isinstance(events[0], TlsReportEvent)


@pytest.mark.parametrize(("path", "value", "message"), [
    (["organization-name"], ..., "organization-name is missing"),
    (["organization-name"], 42, "organization-name is a number, not text"),
    (["report-id"], "  ", "report-id is empty"),
    (["policies"], {"a": 1}, "policies must be a list, not an object"),
    (["policies", 0, "summary"], ..., "policies[0].summary is missing"),
    (["policies", 0, "policy", "policy-domain"], ..., "policies[0].policy.policy-domain is missing"),
    (["policies", 1], "sts", "policies[1] is text, not an object"),
    (["policies", 0, "summary", "total-successful-session-count"], "900",
     "policies[0].summary.total-successful-session-count is '900', not a whole number"),
    (["policies", 0, "summary", "total-failure-session-count"], -1, "is -1, not a whole number"),
    (["policies", 0, "summary", "total-failure-session-count"], 1.5, "is 1.5, not a whole number"),
    (["policies", 0, "summary", "total-failure-session-count"], True, "is True, not a whole number"),
    (["policies", 0, "summary", "total-failure-session-count"], 2**70, "not a whole number"),
    (["policies", 0, "failure-details", 0, "failed-session-count"], "ten",
     "policies[0].failure-details[0].failed-session-count is 'ten'"),
    (["policies", 0, "failure-details", 0, "result-type"], ..., "policies[0].failure-details[0] has no result-type"),
    (["policies", 0, "failure-details"], "none", "failure-details is text, not a list"),
])
def test_bad_reports_are_refused_with_the_field(path: list, value, message: str) -> None:
    assert message in refused(changed(path, value))


def test_unknown_policy_type_is_kept_and_noted() -> None:
    event = parse_tls(changed(["policies", 0, "policy", "policy-type"], "dane"))
    assert event.policies[0].policy_type == "dane"
    assert any("policy-type 'dane' is not one of" in e for e in event.errors)


def test_missing_or_bad_dates_are_noted() -> None:
    event = parse_tls(changed(["date-range"], ...))
    assert event.begin is None and "date-range is missing" in event.errors
    event = parse_tls(changed(["date-range", "end-datetime"], "tomorrow"))
    assert event.end is None and any("'tomorrow' is not an RFC 3339 date-time" in e for e in event.errors)


def test_offset_dates_are_converted_to_utc() -> None:
    event = parse_tls(changed(["date-range", "start-datetime"], "2025-02-01T02:00:00+02:00"))
    assert event.begin == datetime(2025, 2, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(("data", "message"), [
    (b'{"organization-name": "x", ', "JSON cannot be read"),
    (b'{"feedback": {"report_metadata": {}}}', "JSON is not an SMTP TLS report (no organization-name or policies; "
                                               "found an object with keys feedback)"),
    (b"[1, 2, 3]", "JSON is not an SMTP TLS report (no organization-name or policies; found list)"),
    (b'{"organization-name": "\xff\xfe"}', "JSON is not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON is nested too deeply"),
])
def test_json_that_is_not_a_tls_report(data: bytes, message: str) -> None:
    assert message in refused(data)
