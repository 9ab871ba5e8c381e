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
    assert first.diagnostic and "User unknown" in first.diagnostic
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


def test_remote_user_unknown_of_unknown_stage_is_a_filter() -> None:
    # no reply code, no stage: the Diagnostic-Code still quotes the remote server
    data = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.0.0\n"
               "Diagnostic-Code: The email account that you tried to reach does not exist.\n")
    (event,) = events_of(data)
    assert (event.reason, event.hard_or_soft) == ("filtered", "soft")
    # a non-SMTP diagnostic type: the destination MTA's own directory lookup
    data = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.0.0\n"
               "Diagnostic-Code: X-Notes; User gone (gone@example.org) not listed in Domino Directory\n")
    (event,) = events_of(data)
    assert (event.reason, event.hard_or_soft) == ("userunknown", "hard")


def test_powermta_bounce_category_settles_a_user_unknown_of_unknown_stage() -> None:
    record = ("Final-Recipient: rfc822;gone@example.org\nAction: failed\nStatus: 5.0.0 (undefined status)\n"
              "Remote-MTA: dns;mx.example.org (192.0.2.123)\n"
              "Diagnostic-Code: smtp;554 delivery error: dd This user doesn't have a example.org account\n")
    (event,) = events_of(dsn(record))
    assert event.reason == "filtered"  # the server's words alone: a refusal of unknown stage
    (event,) = events_of(dsn(record + "X-PowerMTA-BounceCategory: bad-mailbox\n"))
    assert (event.reason, event.hard_or_soft) == ("userunknown", "hard")
    # where the reply says nothing, the category is the reason
    (event,) = events_of(dsn("Final-Recipient: rfc822;full@example.org\nAction: failed\nStatus: 5.0.0\n"
                             "Diagnostic-Code: smtp;550 Requested action not taken\n"
                             "X-PowerMTA-BounceCategory: quota-issues\n"))
    assert event.reason == "mailboxfull"


def test_mbox_file_of_two_bounces_gives_the_events_of_both() -> None:
    first = dsn("Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n")
    second = dsn("Final-Recipient: rfc822; full@example.net\nAction: failed\nStatus: 5.2.2\n")
    # the second "From " line follows the first message's closing boundary directly
    data = (b"From MAILER-DAEMON  Thu Jul  2 12:05:05 2020\n" + first
            + b"From double-bounce@mx.relay.example  Thu Jul  2 12:05:06 2020\n" + second)
    events = [e for e in parse_bytes(data) if isinstance(e, BounceEvent)]
    assert [(e.recipient, e.reason) for e in events] == [("gone@example.org", "userunknown"),
                                                         ("full@example.net", "mailboxfull")]
    # a body line starting with "From " is no separator
    assert len(parse_bytes(b"From MAILER-DAEMON  Thu Jul  2 12:05:05 2020\n"
                           + first.replace(b"Delivery to some", b"From the relay: delivery to some"))) == 1


def test_gateway_notice_without_reason_is_explained_by_the_bounce_it_returns() -> None:
    returned = (
        "From: relay@sender.example\nTo: gone@example.jp\nSubject: hello\nMIME-Version: 1.0\n"
        "Content-Type: text/plain\n\n"
        "The original message was received at Mon, 3 Mar 2025 10:00:00 +0900\n\n"
        "----- The following addresses had permanent fatal errors -----\n<gone@example.jp>\n\n"
        "----- Transcript of the session follows -----\n... while talking to mx.example.jp.:\n"
        ">>> RCPT To:<gone@example.jp>\n<<< 550 5.1.1 <gone@example.jp>... Invalid recipient\n"
    )
    data = (
        "From: postmaster@gateway.example\nTo: news@sender.example\nSubject: Mail could not be delivered\n"
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"GW\"\n\n"
        "--GW\nContent-Type: text/plain\n\n"
        "The following mail could not be delivered.\n"
        "Reason:  Unable to deliver message to <gone@example.jp> (and other recipients in the same domain).\n\n"
        "--GW\nContent-Type: message/rfc822\n\n" + returned + "\n--GW--\n"
    ).encode()
    (event,) = events_of(data)
    assert (event.recipient, event.reason, event.hard_or_soft, event.status) == (
        "gone@example.jp", "userunknown", "hard", "5.1.1")


def test_mailing_list_loop_alert_is_a_failure_notice() -> None:
    data = (
        b"From: friends-admin@lists.example.jp\nTo: friends-admin@lists.example.jp\n"
        b"Subject: Loop Alert: Duplicated Message-ID (friends ML)\nX-MLServer: fml [fml 4.0.3 release]\n"
        b"Message-Id: <202501010000.FML00001.friends@lists.example.jp>\n\n"
        b"Duplicated Message-ID in <friends@lists.example.jp>.\n\n\nOriginal mail as follows:\n\n"
        b"   From: <someone@sender.example>\n   To: <friends@lists.example.jp>\n   Subject: hello\n"
        b"   Message-ID: <m-1@sender.example>\n\n   hello\n"
    )
    (event,) = events_of(data)
    assert (event.recipient, event.reason, event.smtp_agent) == ("friends@lists.example.jp", "systemerror", "FML")
    # an ordinary post to the list, by the same server, is not a bounce
    post = data.replace(b"friends-admin@lists.example.jp\nTo", b"someone@sender.example\nTo").replace(
        b"Loop Alert: Duplicated Message-ID (friends ML)", b"[friends:00042] loop trip photos")
    assert parse_bounce(parse_message(post), post) is None
    # an administrator's address alone is no sign: people write "rejected" too
    memo = (b"From: it-admin@company.example\nTo: staff@company.example\nSubject: Budget request rejected\n\n"
            b"Please see me about the numbers.\n")
    assert parse_bounce(parse_message(memo), memo) is None
