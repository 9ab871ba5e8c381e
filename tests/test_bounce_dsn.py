"""RFC 3464 delivery status notifications: every recipient of the report
becomes an event, with the fields the DSN states and the original message
it returns. The messages here are made by hand for these tests."""

from __future__ import annotations

from datetime import datetime, timezone

from parsers import parse_bytes, tracking
from parsers.bounce import parse_bounce
from parsers.events import BounceEvent, DeliverySuccessEvent
from parsers.mime import parse_message

TOKEN = tracking.encode("<msg-42@sender.example>", "198.51.100.7", "spring-sale")


def dsn(per_recipient: str, *, notice: str = "Delivery to some recipients failed.\n",
        original_headers: str = "", report_header: str = "") -> bytes:
    """A multipart/report DSN around the given per-recipient blocks."""
    original_headers = original_headers or (
        "Return-Path: <bounces+rm-" + TOKEN + "@sender.example>\n"
        "From: Shop <news@sender.example>\n"
        "To: someone@example.org\n"
        "Message-ID: <msg-42@sender.example>\n"
        "X-Repmon-Track: " + TOKEN + "\n"
        "Subject: Spring sale\n"
    )
    return (
        "Return-Path: <>\n"
        "From: MAILER-DAEMON@mx.relay.example (Mail Delivery System)\n"
        "To: bounces+rm-" + TOKEN + "@sender.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"BOUNDARY\"\n"
        "\n"
        "--BOUNDARY\n"
        "Content-Type: text/plain\n"
        "\n" + notice + "\n"
        "--BOUNDARY\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.relay.example\n"
        "Arrival-Date: Mon, 3 Mar 2025 10:00:00 +0000\n" + report_header +
        "\n" + per_recipient + "\n"
        "--BOUNDARY\n"
        "Content-Type: text/rfc822-headers\n"
        "\n" + original_headers + "\n"
        "--BOUNDARY--\n"
    ).encode()


def events_of(data: bytes) -> list:
    result = parse_bounce(parse_message(data), data)
    assert result is not None
    return result


def test_multi_recipient_dsn_gives_one_event_per_recipient() -> None:
    data = dsn(
        "Final-Recipient: rfc822; gone@example.org\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Remote-MTA: dns; mx.example.org\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\n"
        "\n"
        "Final-Recipient: rfc822; full@example.org\n"
        "Action: failed\n"
        "Status: 5.2.2\n"
        "Remote-MTA: dns; mx.example.org\n"
        "Diagnostic-Code: smtp; 552 5.2.2 <full@example.org>: mailbox full\n"
        "\n"
        "Final-Recipient: rfc822; blocked@example.net\n"
        "Action: failed\n"
        "Status: 5.7.1\n"
        "Remote-MTA: dns; mx.example.net\n"
        "Diagnostic-Code: smtp; 554 5.7.1 Service unavailable; Client host [198.51.100.7] blocked using\n"
        "    bl.example-dnsbl.org\n"
    )
    events = events_of(data)
    assert [e.recipient for e in events] == ["gone@example.org", "full@example.org", "blocked@example.net"]
    assert [e.reason for e in events] == ["userunknown", "mailboxfull", "blocked"]
    assert [e.hard_or_soft for e in events] == ["hard", "soft", "soft"]
    first = events[0]
    assert isinstance(first, BounceEvent)
    assert first.status == "5.1.1"
    assert first.reply_code == 550
    assert first.remote_mta == "mx.example.org"
    assert first.action == "failed"
    assert first.arrival_date == datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)
    assert first.original_message_id == "<msg-42@sender.example>"
    assert first.original_mail_from == f"bounces+rm-{TOKEN}@sender.example"
    assert "User unknown" in first.diagnostic
    # a folded Diagnostic-Code is read whole
    assert "bl.example-dnsbl.org" in events[2].diagnostic


def test_tracking_token_comes_back_from_the_returned_headers() -> None:
    events = events_of(dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"))
    assert events[0].tracking is not None
    assert events[0].tracking.message_id == "<msg-42@sender.example>"
    assert events[0].tracking.source_ip == "198.51.100.7"
    assert events[0].tracking.campaign == "spring-sale"


def test_tracking_token_from_the_verp_address_alone() -> None:
    # the returned headers are gone; only the bounce's VERP recipient carries the token
    data = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n",
               original_headers="Subject: Spring sale\nFrom: news@sender.example\n")
    assert events_of(data)[0].tracking.campaign == "spring-sale"


def test_delayed_and_failed_are_told_apart() -> None:
    data = dsn(
        "Final-Recipient: rfc822; slow@example.org\n"
        "Action: delayed\n"
        "Status: 4.4.1\n"
        "Diagnostic-Code: smtp; 421 4.4.1 connect to mx.example.org: Connection timed out\n"
        "Will-Retry-Until: Wed, 5 Mar 2025 10:00:00 +0000\n"
        "\n"
        "Final-Recipient: rfc822; gone@example.org\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    delayed, failed = events_of(data)
    assert (delayed.action, delayed.hard_or_soft) == ("delayed", "soft")
    assert delayed.reason == "expired"  # the host never answered: still queued, expiring
    assert (failed.action, failed.reason, failed.hard_or_soft) == ("failed", "userunknown", "hard")


def test_delivered_dsn_is_a_delivery_success() -> None:
    data = dsn(
        "Final-Recipient: rfc822; happy@example.org\n"
        "Action: delivered\n"
        "Status: 2.0.0\n"
        "Remote-MTA: dns; mx.example.org\n"
        "Diagnostic-Code: smtp; 250 2.0.0 OK\n"
    )
    (event,) = events_of(data)
    assert isinstance(event, DeliverySuccessEvent)
    assert (event.recipient, event.status, event.remote_mta) == ("happy@example.org", "2.0.0", "mx.example.org")
    assert event.original_message_id == "<msg-42@sender.example>"


def test_sloppy_dsn_without_blank_lines_between_records() -> None:
    # per-message fields glued to the first record, Action before Final-Recipient,
    # two records without a blank line: all seen in the wild
    data = dsn(
        "Action: failed\n"
        "Final-Recipient: rfc822; one@example.org\n"
        "Status: 5.1.1\n"
        "Final-Recipient: rfc822; two@example.org\n"
        "Action: failed\n"
        "Status: 5.2.2\n",
    )
    events = events_of(data)
    assert [(e.recipient, e.reason) for e in events] == [("one@example.org", "userunknown"), ("two@example.org", "mailboxfull")]


def test_original_recipient_when_final_recipient_is_not_an_address() -> None:
    data = dsn(
        "Original-Recipient: rfc822; alias@example.org\n"
        "Final-Recipient: x-local; /var/mail/alias\n"
        "Action: failed\n"
        "Status: 5.2.2\n"
        "Diagnostic-Code: x-unix; mailbox is full\n"
    )
    (event,) = events_of(data)
    assert (event.recipient, event.reason) == ("alias@example.org", "mailboxfull")


def test_missing_diagnostic_is_taken_from_the_notice_text() -> None:
    notice = (
        "<gone@example.org>: host mx.example.org[192.0.2.25] said: 550 5.1.1 <gone@example.org>:\n"
        "    Recipient address rejected: User unknown (in reply to RCPT TO command)\n"
    )
    data = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.0.0\n", notice=notice)
    (event,) = events_of(data)
    assert event.reason == "userunknown"
    assert event.reply_code == 550
    assert event.status == "5.1.1"  # the server's own code beats the generic field
    assert event.remote_mta == "mx.example.org"


def test_generic_status_field_yields_to_the_reply_code() -> None:
    data = dsn(
        "Final-Recipient: rfc822; someone@example.org\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 5.7.1 Message rejected: relaying denied\n"
    )
    (event,) = events_of(data)
    assert (event.status, event.reason) == ("5.7.1", "norelaying")


def test_dispatch_through_parse_bytes() -> None:
    events = parse_bytes(dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"))
    assert [e.kind for e in events] == ["bounce"]
    assert events[0].to_dict()["reason"] == "userunknown"


def test_ordinary_mail_is_not_a_bounce() -> None:
    data = (
        b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: lunch?\n\n"
        b"Are you free at noon? My message to carol could not be delivered, by the way.\n"
    )
    assert parse_bounce(parse_message(data), data) is None


def test_vacation_reply_is_not_a_bounce() -> None:
    data = (
        b"From: Bob <bob@example.net>\nTo: news@sender.example\nSubject: Out of office: Spring sale\n"
        b"Auto-Submitted: auto-replied\n\nI am away until Monday and will read your mail then.\n"
    )
    assert parse_bounce(parse_message(data), data) is None


def _wrap_in_bounce(inner: bytes, per_recipient: str | None) -> bytes:
    """`inner` returned inside another message: a double bounce when the
    outer message has a DSN of its own, a forwarded bounce when not."""
    outer_report = (
        "--OUTER\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; outer.example\n\n" + per_recipient + "\n"
    ) if per_recipient else ""
    return (
        "From: MAILER-DAEMON@outer.example\nTo: postmaster@sender.example\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"OUTER\"\n\n"
        "--OUTER\nContent-Type: text/plain\n\nSee the attached message.\n\n"
        + outer_report +
        "--OUTER\nContent-Type: message/rfc822\n\n"
    ).encode() + inner + b"\n--OUTER--\n"


def test_double_bounce_reports_the_outer_recipients_only() -> None:
    inner = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n")
    data = _wrap_in_bounce(inner, "Final-Recipient: rfc822; bounces@sender.example\nAction: failed\nStatus: 5.2.2\n")
    assert [(e.recipient, e.reason) for e in events_of(data)] == [("bounces@sender.example", "mailboxfull")]


def test_forwarded_bounce_is_read_from_the_attachment() -> None:
    inner = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n")
    data = _wrap_in_bounce(inner, None)
    assert [(e.recipient, e.reason) for e in events_of(data)] == [("gone@example.org", "userunknown")]
