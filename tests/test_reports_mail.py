"""Reports carried by mail, built here: aggregate/TLS attachments of every
usual MIME type, ARF auth-failure and plain-text DMARC failure reports, and
mails that must not be taken for reports."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime, timezone
from email import message_from_bytes
from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pytest

from parsers.events import DmarcAggregateEvent, DmarcFailureEvent, TlsReportEvent, UnparseableEvent
from parsers.mime import parse_message
from parsers.reports import parse_report_mail
from tests.fixtures._reports import (
    FEEDBACK_FIELDS,
    REPORT_NAME,
    TLS_REPORT,
    aggregate_xml,
    arf_mail,
    attachment,
    make_zip,
    report_mail,
    zip_bomb,
)


def events_of(raw: bytes) -> Any:
    return parse_report_mail(parse_message(raw))


@pytest.mark.parametrize(("content_type", "data", "filename"), [
    ("application/zip", make_zip({f"{REPORT_NAME}.xml": aggregate_xml()}), f"{REPORT_NAME}.zip"),
    ("application/x-zip-compressed", make_zip({"r.xml": aggregate_xml()}), "report.zip"),
    ("application/gzip", gzip.compress(aggregate_xml()), f"{REPORT_NAME}.xml.gz"),
    ("application/x-gzip", gzip.compress(aggregate_xml()), None),
    ("application/octet-stream", gzip.compress(aggregate_xml()), "report.bin"),
    ("application/xml", aggregate_xml(), f"{REPORT_NAME}.xml"),
    ("text/xml", aggregate_xml(), None),
])
def test_aggregate_attachment_of_any_type(content_type: str, data: bytes, filename: str | None) -> None:
    events = events_of(report_mail(attachment(data, content_type, filename)))
    assert events is not None and len(events) == 1
    assert isinstance(events[0], DmarcAggregateEvent) and events[0].report_id == "rpt-1"


@pytest.mark.parametrize(("content_type", "data"), [
    ("application/tlsrpt+gzip", gzip.compress(json.dumps(TLS_REPORT).encode())),
    ("application/tlsrpt+json", json.dumps(TLS_REPORT).encode()),
    ("application/json", json.dumps(TLS_REPORT).encode()),
])
def test_tls_report_attachment(content_type: str, data: bytes) -> None:
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg["Subject"] = "Report Domain: example.com Submitter: receiver.example Report-ID: <tls-1>"
    msg["TLS-Report-Domain"] = "example.com"
    msg.attach(MIMEText("This is an aggregate TLS report."))
    msg.attach(attachment(data, content_type, "receiver.example!example.com!1738368000!1738454399!001.json.gz"))
    events = events_of(msg.as_bytes())
    assert events is not None and len(events) == 1 and isinstance(events[0], TlsReportEvent)
    assert events[0].report_id == "tls-1" and events[0].policies[0].failed_session_count == 1


def test_attachment_left_base64_encoded_is_decoded() -> None:
    raw = (
        b"From: dmarc@receiver.example\nTo: dmarc@example.com\nSubject: Report Domain: example.com\n"
        b"MIME-Version: 1.0\nContent-Type: application/octet-stream; name=report.xml.gz\n\n"
    ) + base64.encodebytes(gzip.compress(aggregate_xml()))
    events = events_of(raw)
    assert events is not None and isinstance(events[0], DmarcAggregateEvent)


def test_two_reports_in_one_mail() -> None:
    raw = report_mail(attachment(gzip.compress(aggregate_xml(report_id="a")), "application/gzip", "a.xml.gz"),
                      attachment(make_zip({"b.xml": aggregate_xml(report_id="b")}), "application/zip", "b.zip"))
    assert [e.report_id for e in events_of(raw)] == ["a", "b"]


def test_broken_report_in_a_report_mail_is_unparseable_with_the_attachment_name() -> None:
    raw = report_mail(attachment(gzip.compress(aggregate_xml())[:100], "application/gzip", f"{REPORT_NAME}.xml.gz"))
    events = events_of(raw)
    assert len(events) == 1 and isinstance(events[0], UnparseableEvent)
    assert events[0].error.startswith(f"attachment '{REPORT_NAME}.xml.gz': gzip archive is truncated")


def test_zip_bomb_attachment() -> None:
    events = events_of(report_mail(attachment(zip_bomb(16), "application/zip", f"{REPORT_NAME}.zip")))
    assert len(events) == 1 and "decompression bomb" in events[0].error


def test_ordinary_mail_is_not_a_report() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.com", "Lunch?"
    msg.set_content("<b>not xml</b> { not json }")
    assert events_of(msg.as_bytes()) is None


def test_unrelated_attachments_are_left_alone() -> None:
    raw = report_mail(
        attachment(make_zip({"invoice.pdf": b"%PDF-1.4"}), "application/zip", "invoice.zip"),
        attachment(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "logo.svg"),
        attachment(b'{"order": 12}', "application/json", "order.json"),
        subject="Your invoice", body="Please find attached.",
    )
    assert events_of(raw) is None


def test_report_inside_an_enclosed_message_is_not_read() -> None:
    """A bounce of a report we sent: the report is in the returned message."""
    returned = message_from_bytes(report_mail(attachment(gzip.compress(aggregate_xml()), "application/gzip",
                                                         f"{REPORT_NAME}.xml.gz")))
    bounce = MIMEMultipart("report", report_type="delivery-status")
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce.attach(MIMEText("delivery failed"))
    bounce.attach(MIMEMessage(returned))
    assert events_of(bounce.as_bytes()) is None


# --- DMARC failure reports ---------------------------------------------------------

def test_arf_auth_failure_report() -> None:
    events = events_of(arf_mail())
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, DmarcFailureEvent)
    assert (event.reported_domain, event.source_ip, event.feedback_type, event.auth_failure) == (
        "example.com", "198.51.100.23", "auth-failure", "dkim,spf")
    assert event.arrival_date == datetime(2023, 11, 15, 9, 20, 30, tzinfo=timezone.utc)
    assert (event.original_mail_from, event.original_rcpt_to) == ("bounce@example.com", "user@receiver.example")
    assert (event.delivery_result, event.dkim_domain, event.identity_alignment) == ("reject", "example.com", "none")
    assert event.subject == "Your weekly offers" and event.original_message_id == "<abc@example.com>"
    assert event.user_agent == "Receiver-DMARC/2.0"
    assert json.loads(json.dumps(event.to_dict()))["arrival_date"] == "2023-11-15T09:20:30Z"


def test_base64_encoded_feedback_report_part() -> None:
    events = events_of(arf_mail(encoding="base64"))
    assert events[0].reported_domain == "example.com" and events[0].source_ip == "198.51.100.23"


def test_missing_fields_are_filled_from_the_enclosed_message() -> None:
    fields = "Feedback-Type: auth-failure\r\nSource-IP: 2001:DB8::7\r\n"
    event = events_of(arf_mail(fields))[0]
    assert event.reported_domain == "example.com"  # From of the failed message
    assert event.source_ip == "2001:db8::7"
    assert event.auth_failure == "dmarc"  # sent to a DMARC ruf= address
    assert event.arrival_date == datetime(2023, 11, 15, 9, 25, tzinfo=timezone.utc)  # the report's Date
    assert event.delivery_result is None


def test_unknown_delivery_result_and_bad_ip() -> None:
    fields = FEEDBACK_FIELDS.replace("Delivery-Result: reject", "Delivery-Result: bounced-ish").replace(
        "Source-IP: 198.51.100.23", "Source-IP: somewhere")
    event = events_of(arf_mail(fields))[0]
    assert event.delivery_result == "other" and event.source_ip is None


def test_arf_abuse_report_is_not_a_failure_report() -> None:
    assert events_of(arf_mail(FEEDBACK_FIELDS.replace("auth-failure", "abuse"))) is None


EXIM_TEXT = """A message claiming to be from you has failed the published DMARC policy for your domain.

  Sender Domain: example.com
  Sender IP Address: 203.0.113.5
  Received date: Mon, 07 Apr 2025 23:16:09 +0200
  SPF Alignment: yes
  DKIM Alignment: no
  DMARC Results: Reject

------ This is a copy of the headers that were received before the error was detected.

Received: from [203.0.113.5] by mx.receiver.example
From: <ceo@example.com>
Subject: Urgent payment
Message-Id: <x1@example.com>
"""


def test_plain_text_failure_report() -> None:
    msg = MIMEMultipart("report")
    msg["Subject"] = "DMARC Forensic Report for example.com from IP 203.0.113.5"
    msg["From"] = "no-reply@mx.receiver.example"
    msg.attach(MIMEText(EXIM_TEXT))
    events = events_of(msg.as_bytes())
    assert len(events) == 1
    event = events[0]
    assert (event.reported_domain, event.source_ip, event.feedback_type, event.auth_failure) == (
        "example.com", "203.0.113.5", "auth-failure", "dmarc")
    assert event.arrival_date == datetime(2025, 4, 7, 21, 16, 9, tzinfo=timezone.utc)
    assert event.subject == "Urgent payment" and event.identity_alignment == "spf"


def test_text_mentioning_dmarc_without_the_fields_is_not_a_report() -> None:
    msg = EmailMessage()
    msg["Subject"] = "About DMARC"
    msg.set_content("We set up DMARC yesterday. Sender Domain: example.com, no IP given.")
    assert events_of(msg.as_bytes()) is None


def test_a_mail_about_dmarc_with_an_unrelated_archive_is_not_a_report() -> None:
    raw = report_mail(attachment(make_zip({"slides.pdf": b"%PDF-1.4"}), "application/zip", "dmarc-talk.zip"),
                      subject="Re: our DMARC rollout", body="Slides attached.")
    assert events_of(raw) is None
