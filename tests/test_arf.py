"""ARF feedback reports (RFC 5965 / 6650 / 6591) and the providers' own
complaint formats: parsers.arf.parse_arf, read through parsers.mime."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from parsers import tracking
from parsers.arf import parse_arf
from parsers.events import FeedbackEvent, UnparseableEvent
from parsers.mime import parse_message

ORIGINAL = """\
Return-Path: <news@example.com>
Received: from mta1.example.com (mta1.example.com [192.0.2.25])
\tby mx.example.net; Mon, 15 Jun 2026 09:58:40 +0000
From: Example Shop <news@example.com>
To: {to}
Subject: Spring sale
Date: Mon, 15 Jun 2026 09:58:30 +0000
Message-ID: <sale-77a1@mta1.example.com>
Feedback-ID: promo:cust42:news:shop
{extra}MIME-Version: 1.0
Content-Type: text/plain

Sale!
"""


def arf(report_fields: str, *, to: str = "reader@example.net", extra: str = "", text: str | None = None,
        original_type: str = "message/rfc822", with_original: bool = True, report_type: str = "message/feedback-report",
        outer_report_type: str = "feedback-report", subject: str = "FW: Spring sale") -> bytes:
    """An ARF message: human part, machine part, original message."""
    human = text if text is not None else "This is an email abuse report for a message from 192.0.2.25."
    parts = [
        f"--B\nContent-Type: text/plain; charset=us-ascii\n\n{human}\n",
        f"--B\nContent-Type: {report_type}\n\n{report_fields.strip()}\n",
    ]
    if with_original:
        parts.append(f"--B\nContent-Type: {original_type}\n\n" + ORIGINAL.format(to=to, extra=extra))
    head = (
        "From: FBL <fbl@feedback.example.org>\nTo: abuse@example.com\n"
        f"Subject: {subject}\nDate: Mon, 15 Jun 2026 10:05:11 +0000\n"
        "Message-ID: <fbl-42@feedback.example.org>\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={outer_report_type}; boundary="B"\n\n'
    )
    return (head + "".join(parts) + "--B--\n").encode()


def run(data: bytes):
    return parse_arf(parse_message(data), data)


STANDARD = """\
Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <bounce-a0b1@example.com>
Original-Rcpt-To: <reader@example.net>
Arrival-Date: Mon, 15 Jun 2026 11:58:40 +0200
Reporting-MTA: dns; mx1.feedback.example.org
Source-IP: 192.0.2.25
Reported-Domain: Example.COM
Reported-Domain: example.org
"""


def test_standard_report_gives_every_field():
    [event] = run(arf(STANDARD))
    assert isinstance(event, FeedbackEvent)
    assert event.recipient == "reader@example.net"
    assert event.feedback_type == "abuse"
    assert event.source_ip == "192.0.2.25"
    assert event.reported_domain == "example.com"  # the first one, lower-cased
    assert event.original_mail_from == "bounce-a0b1@example.com"
    assert event.feedback_id == "promo:cust42:news:shop"
    assert event.original_message_id == "<sale-77a1@mta1.example.com>"
    assert event.arrival_date == datetime(2026, 6, 15, 9, 58, 40, tzinfo=timezone.utc)
    assert event.user_agent == "ExampleFBL/1.0"
    assert event.reporting_mta == "mx1.feedback.example.org"
    assert event.tracking is None


def test_one_event_per_original_recipient():
    fields = STANDARD.replace("Original-Rcpt-To: <reader@example.net>\n",
                              "Original-Rcpt-To: a@example.net\nOriginal-Rcpt-To: B@Example.ORG\n"
                              "Original-Rcpt-To: a@example.net\n")
    events = run(arf(fields))
    assert [e.recipient for e in events] == ["a@example.net", "B@example.org"]  # duplicates folded, domain lower-cased
    assert {e.source_ip for e in events} == {"192.0.2.25"}


@pytest.mark.parametrize("written, expected", [
    ("Abuse", "abuse"), ("  NOT-SPAM", "not-spam"), ("fraud; phishing kit", "fraud"), ("auth-failure", "auth-failure"),
    ("virus", "virus"), ("other", "other"), ("opt-out", "opt-out"), ("X-Vendor-Type", "x-vendor-type"),
])
def test_feedback_type_is_lower_cased_first_token(written, expected):
    [event] = run(arf(f"Feedback-Type: {written}\nUser-Agent: t/1\nVersion: 1\nOriginal-Rcpt-To: r@example.net\n"))
    assert event.feedback_type == expected


def test_opt_out_names_removal_recipient():
    [event] = run(arf("Feedback-Type: opt-out\nUser-Agent: t/1\nVersion: 0.1\nRemoval-Recipient: leaver@example.net\n",
                      to="<Undisclosed Recipients>"))
    assert (event.feedback_type, event.recipient) == ("opt-out", "leaver@example.net")


def test_recipient_from_the_original_message_when_the_report_names_none():
    [event] = run(arf("Feedback-Type: abuse\nUser-Agent: t/1\nVersion: 1\n", to="Reader <only.one@example.net>"))
    assert event.recipient == "only.one@example.net"


def test_recipient_is_null_when_the_original_has_several_or_none():
    [several] = run(arf("Feedback-Type: abuse\nVersion: 1\n", to="a@example.net, b@example.net"))
    assert several.recipient is None
    [redacted] = run(arf("Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: redacted\n", to="<redacted>"))
    assert redacted.recipient is None
    [headers_only] = run(arf("Feedback-Type: abuse\nVersion: 1\n", to="undisclosed-recipients:;",
                             original_type="text/rfc822-headers"))
    assert headers_only.recipient is None


def test_headers_only_original_still_gives_message_id_and_feedback_id():
    [event] = run(arf(STANDARD, original_type="text/rfc822-headers"))
    assert event.original_message_id == "<sale-77a1@mta1.example.com>"
    assert event.feedback_id == "promo:cust42:news:shop"


def test_mail_from_falls_back_to_the_original_return_path():
    [event] = run(arf("Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: r@example.net\n"))
    assert event.original_mail_from == "news@example.com"


def test_tracking_token_in_the_embedded_message():
    token = tracking.encode("<sale-77a1@mta1.example.com>", "192.0.2.25", "spring")
    [event] = run(arf(STANDARD, extra=f"X-Repmon-Track: {token}\n"))
    assert event.tracking is not None
    assert (event.tracking.message_id, event.tracking.source_ip, event.tracking.campaign) == (
        "<sale-77a1@mta1.example.com>", "192.0.2.25", "spring")


def test_tracking_token_from_a_verp_return_path():
    token = tracking.encode("m1", "198.51.100.7", "c9")
    fields = STANDARD.replace("<bounce-a0b1@example.com>", "<" + tracking.verp_address("b", token, "example.com") + ">")
    [event] = run(arf(fields))
    assert event.tracking.campaign == "c9" and event.tracking.source_ip == "198.51.100.7"


def test_bad_values_become_null_not_errors():
    fields = ("Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: r@example.net\nSource-IP: 999.1.1.1\n"
              "Arrival-Date: yesterday-ish\nReporting-MTA: \n")
    [event] = run(arf(fields))
    assert (event.source_ip, event.arrival_date, event.reporting_mta) == (None, None, None)


def test_ipv6_source_and_bracketed_address():
    [event] = run(arf("Feedback-Type: abuse\nVersion: 1\nSource-IP: [2001:DB8::25]\nOriginal-Rcpt-To: r@example.net\n"))
    assert event.source_ip == "2001:db8::25"


def test_arrival_date_without_zone_is_taken_as_utc():
    [event] = run(arf("Feedback-Type: abuse\nVersion: 1\nReceived-Date: Mon, 15 Jun 2026 09:00:00 PST\n"))
    assert event.arrival_date == datetime(2026, 6, 15, 17, 0, tzinfo=timezone.utc)


def test_auth_failure_report_is_feedback_of_type_auth_failure():
    fields = ("Feedback-Type: auth-failure\nUser-Agent: dmarc/1\nVersion: 1\nAuth-Failure: dmarc\n"
              "Source-IP: 203.0.113.2\nReported-Domain: example.com\nDelivery-Result: reject\n")
    [event] = run(arf(fields, original_type="text/rfc822-headers"))
    assert event.feedback_type == "auth-failure"
    assert event.recipient == "reader@example.net"


# --- malformed reports ---------------------------------------------------------------

def test_missing_feedback_type_is_read_from_the_human_text():
    [event] = run(arf("User-Agent: t/1\nVersion: 1\nOriginal-Rcpt-To: r@example.net\n",
                      text="This is an opt-out request from one of our users."))
    assert event.feedback_type == "opt-out"
    [event] = run(arf("User-Agent: t/1\nVersion: 1\n", text="A user reported this message as not spam."))
    assert event.feedback_type == "not-spam"


def test_missing_feedback_type_without_any_hint_counts_as_abuse():
    [event] = run(arf("User-Agent: t/1\nVersion: 1\nOriginal-Rcpt-To: r@example.net\n", text="See attachment.",
                      subject="Report"))
    assert isinstance(event, FeedbackEvent)
    assert event.feedback_type == "abuse"


def test_report_without_the_original_message():
    [event] = run(arf(STANDARD, with_original=False))
    assert (event.recipient, event.feedback_type, event.original_message_id) == ("reader@example.net", "abuse", None)


def test_fields_in_a_text_plain_part_are_read():
    [event] = run(arf("Feedback-Type: fraud\nVersion: 1\nOriginal-Rcpt-To: r@example.net\n", report_type="text/plain",
                      text="Report follows."))
    assert (event.feedback_type, event.recipient) == ("fraud", "r@example.net")


def test_declared_report_without_machine_part_or_hint_is_unparseable_with_reason():
    data = arf("Version: 1\n", report_type="application/octet-stream", text="See attachment.", subject="Report")
    [event] = run(data)
    assert isinstance(event, UnparseableEvent)
    assert "message/feedback-report" in event.error


def test_declared_report_without_machine_part_but_a_clear_complaint_text():
    data = arf("Version: 1\n", report_type="application/octet-stream", text="This is a spam complaint.")
    [event] = run(data)
    assert isinstance(event, FeedbackEvent) and event.feedback_type == "abuse"
    assert event.recipient == "reader@example.net"


def test_feedback_report_part_in_a_mixed_container_is_found():
    data = arf(STANDARD, outer_report_type="nothing").replace(b"multipart/report; report-type=nothing", b"multipart/mixed")
    [event] = run(data)
    assert event.feedback_type == "abuse"


# --- what is not a complaint ----------------------------------------------------------

def test_ordinary_mail_and_dsn_are_not_complaints():
    plain = b"From: a@example.com\nTo: b@example.org\nSubject: hello\n\nhi\n"
    assert run(plain) is None
    dsn = (b"From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\n\n'
           b"--D\nContent-Type: text/plain\n\nfailed\n--D\nContent-Type: message/delivery-status\n\n"
           b"Reporting-MTA: dns; example.org\n\nFinal-Recipient: rfc822; x@example.net\nAction: failed\nStatus: 5.1.1\n"
           b"--D--\n")
    assert run(dsn) is None


def test_an_arf_quoted_inside_a_bounce_is_not_a_complaint():
    inner = arf(STANDARD).decode()
    dsn = ("From: MAILER-DAEMON@example.org\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
           'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\n\n'
           "--D\nContent-Type: text/plain\n\nfailed\n--D\nContent-Type: message/delivery-status\n\n"
           "Reporting-MTA: dns; example.org\n\nFinal-Recipient: rfc822; abuse@example.com\nAction: failed\nStatus: 5.1.1\n\n"
           "--D\nContent-Type: message/rfc822\n\n" + inner + "\n--D--\n").encode()
    assert run(dsn) is None


# --- Microsoft JMRP ---------------------------------------------------------------------

JMRP = b"""\
From: staff@hotmail.example.com
To: jmrp@example.com
Subject: complaint about message from 192.0.2.44
Date: Tue, 16 Jun 2026 08:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="J"

--J
Content-Type: message/rfc822
Content-Disposition: inline

X-HmXmrOriginalRecipient: <reader@outlook.example.com>
Authentication-Results: outlook.example.com; spf=pass (sender IP is 192.0.2.44) smtp.mailfrom=news@example.com
Return-Path: news@example.com
From: News <news@example.com>
To: reader@outlook.example.com
Subject: Deals
Message-ID: <deal-1@example.com>

Deals!
--J--
"""


def test_jmrp_complaint():
    [event] = run(JMRP)
    assert (event.recipient, event.feedback_type, event.source_ip) == ("reader@outlook.example.com", "abuse", "192.0.2.44")
    assert event.original_message_id == "<deal-1@example.com>"
    assert event.original_mail_from == "news@example.com"


def test_jmrp_source_ip_from_authentication_results_when_subject_has_none():
    [event] = run(JMRP.replace(b"complaint about message from 192.0.2.44", b"complaint"))
    assert event.source_ip == "192.0.2.44"


# --- Amazon SES -------------------------------------------------------------------------

def ses_notification(document: dict, *, fold_at: int | None = None) -> bytes:
    body = json.dumps(document, separators=(",", ":"))
    if fold_at:
        body = body[:fold_at] + "!\n " + body[fold_at:]  # how some MTAs break over-long lines
    return ("From: SES <no-reply@sns.example.com>\nTo: ops@example.com\nSubject: AWS Notification Message\n"
            "Content-Type: text/plain; charset=UTF-8\n\n" + body + "\n\n--\nunsubscribe: https://sns.example.com/u\n").encode()


SES_COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {
        "complainedRecipients": [{"emailAddress": "Reader@Example.NET"}, {"emailAddress": "second@example.org"}],
        "timestamp": "2026-06-15T01:49:01.000Z", "feedbackId": "0101-abc", "userAgent": "Example Mail",
        "complaintFeedbackType": "Abuse", "arrivalDate": "2026-06-15T01:48:00.000Z",
    },
    "mail": {
        "timestamp": "2026-06-15T01:40:00.000Z", "source": "news@example.com", "sourceIp": "192.0.2.9",
        "messageId": "0101-ses-id",
        "headers": [{"name": "Feedback-ID", "value": "a:b:c:shop"}, {"name": "Message-ID", "value": "<m-1@example.com>"}],
        "commonHeaders": {"messageId": "<m-1@example.com>"},
    },
}


def test_ses_complaint_notification():
    events = run(ses_notification(SES_COMPLAINT, fold_at=120))
    assert [e.recipient for e in events] == ["Reader@example.net", "second@example.org"]
    event = events[0]
    assert (event.feedback_type, event.source_ip, event.original_mail_from) == ("abuse", "192.0.2.9", "news@example.com")
    assert (event.feedback_id, event.original_message_id) == ("a:b:c:shop", "<m-1@example.com>")
    assert event.arrival_date == datetime(2026, 6, 15, 1, 48, tzinfo=timezone.utc)
    assert event.user_agent == "Example Mail"


def test_ses_complaint_without_type_inside_an_sns_envelope():
    document = json.loads(json.dumps(SES_COMPLAINT))
    del document["complaint"]["complaintFeedbackType"]
    envelope = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(document)}
    [first, _] = run(ses_notification(envelope))
    assert first.feedback_type == "abuse"


def test_ses_bounce_and_delivery_notifications_are_not_complaints():
    for kind in ("Bounce", "Delivery"):
        document = {"notificationType": kind, "mail": SES_COMPLAINT["mail"], kind.lower(): {}}
        assert run(ses_notification(document)) is None
    assert run(ses_notification({"notificationType": "Complaint"})) is None  # nothing to report


# --- the shared corpus -------------------------------------------------------------------

@pytest.mark.evaluation
def test_every_feedback_row_of_the_corpus(shared_dir):
    """Each corpus row of kind feedback: one FeedbackEvent with the labelled
    feedback type for the labelled recipient (by position when unnamed)."""
    from parsers import parse_bytes

    corpus = shared_dir / "corpus" / "bounces"
    rows = [json.loads(line) for line in (corpus / "labels.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "feedback"]
    assert rows
    wrong = []
    for row in rows:
        events = [e for e in parse_bytes((corpus / row["file"]).read_bytes()) if isinstance(e, FeedbackEvent)]
        if row["recipient"] is None:
            index = (row.get("recipient_index") or 1) - 1
            match = events[index] if index < len(events) else None
        else:
            match = next((e for e in events if e.recipient == row["recipient"]), None)
        if match is None or match.feedback_type != row["feedback_type"]:
            wrong.append((row["file"], row["recipient"], row["feedback_type"], match))
    assert wrong == []
