"""Human-readable bounces of MTAs that send no (or no usable) DSN: the
recipient lines and the remote server's reply are found in the notice text.
Every message here is written for these tests, in the shape of what the
named MTA sends."""

from __future__ import annotations

import json
from typing import Any

from parsers.bounce import parse_bounce
from parsers.bounce.plaintext import cut_original, read_notice
from parsers.mime import parse_message


def bounce(headers: str, body: str) -> list:
    data = (headers.strip("\n") + "\n\n" + body).encode()
    result = parse_bounce(parse_message(data), data)
    assert result is not None, "not recognised as a bounce"
    return result


QMAIL = """\
Hi. This is the qmail-send program at mail.sender.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.org>:
192.0.2.10 does not like recipient.
Remote host said: 550 5.1.1 <nobody@example.org>... No such user
Giving up on 192.0.2.10.

<stuffed@example.org>:
192.0.2.10 does not like recipient.
Remote host said: 552 5.2.2 <stuffed@example.org>... Over quota
Giving up on 192.0.2.10.

--- Below this line is a copy of the message.

Return-Path: <news@sender.example>
Message-ID: <qm-1@sender.example>
From: news@sender.example
To: nobody@example.org
Subject: hello

hello
"""


def test_qmail_two_recipients() -> None:
    events = bounce("From: MAILER-DAEMON@mail.sender.example\nTo: news@sender.example\nSubject: failure notice", QMAIL)
    assert [(e.recipient, e.reason, e.hard_or_soft) for e in events] == [
        ("nobody@example.org", "userunknown", "hard"),
        ("stuffed@example.org", "mailboxfull", "soft"),
    ]
    assert events[0].status == "5.1.1"
    assert events[0].reply_code == 550
    assert events[0].remote_mta == "192.0.2.10"
    assert events[0].smtp_agent == "qmail"
    # the quoted original is read for the message id and the sender
    assert events[0].original_message_id == "<qm-1@sender.example>"
    assert events[0].original_mail_from == "news@sender.example"


EXIM = """\
This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  someone@example.net
    host mx.example.net [192.0.2.20]
    SMTP error from remote mail server after MAIL FROM:<news@sender.example> SIZE=2048:
    550 5.7.1 Access denied

------ This is a copy of the message, including all the headers. ------

Return-path: <news@sender.example>
Message-Id: <ex-1@sender.example>
From: news@sender.example
To: someone@example.net
Subject: hello

hello
"""


def test_exim_refusal_of_mail_from_is_the_sender_rejected() -> None:
    (event,) = bounce(
        "From: Mail Delivery System <Mailer-Daemon@relay.sender.example>\nTo: news@sender.example\n"
        "Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: someone@example.net",
        EXIM,
    )
    assert (event.recipient, event.reason, event.status, event.reply_code) == ("someone@example.net", "rejected", "5.7.1", 550)
    assert event.remote_mta == "mx.example.net"
    assert event.smtp_agent == "Exim"
    assert event.original_message_id == "<ex-1@sender.example>"


def test_exim_local_part_only_uses_x_failed_recipients() -> None:
    body = EXIM.replace("  someone@example.net\n", "  someone\n")
    (event,) = bounce(
        "From: Mail Delivery System <Mailer-Daemon@relay.sender.example>\nTo: news@sender.example\n"
        "Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: someone@example.net",
        body,
    )
    assert event.recipient == "someone@example.net"


POSTFIX_NOTICE_ONLY = """\
This is the mail system at host relay.sender.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<far@example.com>: connect to mx.example.com[192.0.2.30]:25: Connection timed out
"""


def test_postfix_notice_connection_timeout_in_a_final_bounce_is_expired() -> None:
    (event,) = bounce(
        "From: MAILER-DAEMON@relay.sender.example (Mail Delivery System)\nTo: news@sender.example\n"
        "Subject: Undelivered Mail Returned to Sender",
        POSTFIX_NOTICE_ONLY,
    )
    assert (event.recipient, event.reason, event.hard_or_soft) == ("far@example.com", "expired", "soft")
    assert event.smtp_agent == "Postfix"


SENDMAIL = """\
The original message was received at Mon, 3 Mar 2025 10:00:00 +0000
from relay.sender.example [198.51.100.7]

   ----- The following addresses had permanent fatal errors -----
<nobody@example.jp>
    (reason: 550 Unknown user nobody@example.jp)

   ----- Transcript of session follows -----
... while talking to mx.example.jp.:
>>> DATA
<<< 550 Unknown user nobody@example.jp
554 5.0.0 Service unavailable
"""


def test_sendmail_transcript_user_unknown_after_data_is_filtered() -> None:
    (event,) = bounce(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.sender.example>\nTo: news@sender.example\n"
        "Subject: Returned mail: see transcript for details",
        SENDMAIL,
    )
    assert event.recipient == "nobody@example.jp"
    assert event.reason == "filtered"  # refused after DATA, all recipients having been accepted
    assert event.reply_code == 550
    assert event.smtp_agent == "Sendmail"


def test_sendmail_transcript_user_unknown_at_rcpt_is_userunknown() -> None:
    body = SENDMAIL.replace(">>> DATA", ">>> RCPT To:<nobody@example.jp>")
    (event,) = bounce(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.sender.example>\nTo: news@sender.example\n"
        "Subject: Returned mail: see transcript for details",
        body,
    )
    assert (event.reason, event.hard_or_soft) == ("userunknown", "hard")


EXCHANGE_2003 = """\
Your message

  To:      first@example.co.jp
  Subject: Quarterly report
  Sent:    Mon, 3 Mar 2025 10:00:00 +0900

did not reach the following recipient(s):

first@example.co.jp on Mon, 3 Mar 2025 10:00:05 +0900
    The e-mail account does not exist at the organization this message was sent to.
    MSEXCH:IMS:EXAMPLE:NEKO:MAIL 0 (000C05A6) Unknown Recipient
second@example.co.jp on Mon, 3 Mar 2025 10:00:05 +0900
    The recipient's mailbox is full and can't accept messages now.
    MSEXCH:IMS:EXAMPLE:NEKO:MAIL 0 (000C05A6) Mailbox full
"""


def test_exchange_2003_recipient_on_date_lines() -> None:
    events = bounce(
        "From: System Administrator <postmaster@example.co.jp>\nTo: news@sender.example\n"
        "Subject: Undeliverable: Quarterly report",
        EXCHANGE_2003,
    )
    assert [(e.recipient, e.reason) for e in events] == [
        ("first@example.co.jp", "userunknown"),
        ("second@example.co.jp", "mailboxfull"),
    ]
    assert events[0].smtp_agent == "Exchange2003"
    assert not events[0].diagnostic.startswith("on ")  # the "on <date>" tail is not the diagnostic


GMAIL_STYLE = """\
** Message not delivered **

There was a problem delivering your message to list@groups.example. See the technical details below.

The response was:

Your message was rejected because it appears to be spam. Contact the list owner.
"""


def test_lead_in_paragraph_is_the_diagnostic() -> None:
    (event,) = bounce(
        "From: Mail Delivery Subsystem <mailer-daemon@mail.example>\nTo: news@sender.example\n"
        "Subject: Delivery Status Notification (Failure)",
        GMAIL_STYLE,
    )
    assert (event.recipient, event.reason) == ("list@groups.example", "spamdetected")


def test_notice_naming_nobody_falls_back_to_the_original_recipient() -> None:
    body = (
        "Message could not be delivered to mobile.\nError: No valid recipients for this MM\n\n"
        "Original Message:\nFrom: news@sender.example\nTo: 5550100@mms.example\nSubject: hi\n\nhi\n"
    )
    (event,) = bounce("From: MMS NDR <sysadmin@mms.example>\nTo: news@sender.example\nSubject: Undeliverable Message", body)
    assert (event.recipient, event.reason) == ("5550100@mms.example", "userunknown")


def test_greeting_of_the_sender_is_not_a_recipient() -> None:
    body = (
        "Hello news@sender.example,\n\n"
        "We could not deliver your message to the group you tried to contact; it may not exist,\n"
        "or you may not have permission to post messages to it.\n\n"
        "----- Original message -----\n"
        "From: news@sender.example\nTo: team@groups.example\nMessage-ID: <g-1@sender.example>\nSubject: hi\n\nhi\n"
    )
    (event,) = bounce(
        "From: Mail Delivery Subsystem <mailer-daemon@mail.example>\nTo: news@sender.example\n"
        "Subject: Delivery Status Notification (Failure)",
        body,
    )
    assert event.recipient == "team@groups.example"
    assert event.reason == "rejected"


SES_BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bouncedRecipients": [
            {"emailAddress": "gone@example.org", "action": "failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
        ],
        "reportingMTA": "dns; a1-2.smtp-out.example.amazonses.com",
    },
    "mail": {"source": "news@sender.example", "destination": ["gone@example.org"]},
}


def test_amazon_ses_json_bounce() -> None:
    (event,) = bounce(
        "From: SES <no-reply@sns.amazonaws.com>\nTo: ops@sender.example\nSubject: AWS Notification Message",
        json.dumps(SES_BOUNCE),
    )
    assert (event.recipient, event.reason, event.status, event.reply_code) == ("gone@example.org", "userunknown", "5.1.1", 550)
    assert event.remote_mta == "a1-2.smtp-out.example.amazonses.com"
    assert event.smtp_agent == "AmazonSES"


def test_amazon_ses_json_complaint_is_not_a_bounce() -> None:
    complaint = {"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "x@example.org"}]}}
    data = ("From: SES <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message\n\n" + json.dumps(complaint)).encode()
    assert parse_bounce(parse_message(data), data) is None


def test_amazon_ses_delivery_is_a_delivery_success() -> None:
    delivery = {"notificationType": "Delivery",
                "delivery": {"recipients": ["ok@example.org"], "smtpResponse": "250 2.6.0 Message received"}}
    data = ("From: SES <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message\n\n" + json.dumps(delivery)).encode()
    events = parse_bounce(parse_message(data), data)
    assert events is not None
    (event,) = events
    assert (event.kind, event.recipient, event.status) == ("delivery_success", "ok@example.org", "2.6.0")


def test_cut_original_at_marker_or_at_quoted_headers() -> None:
    assert cut_original("notice\n--- Below this line is a copy of the message.\nReturn-Path: <a@b.example>\n") == "notice\n"
    assert cut_original("notice line\nReceived: from x by y\nSubject: s\n") == "notice line\n"
    assert cut_original("nothing quoted here\n") == "nothing quoted here\n"


def test_read_notice_kinds_of_recipient_lines() -> None:
    notice = read_notice(
        "Could not be delivered to: <a@example.org>\n"
        "   b@example.org\n"
        "<c@example.org>: host mx said: 550 nope\n"
        "For further assistance, please contact <help@relay.example>\n"
    )
    assert [r.address for r in notice.recipients] == ["a@example.org", "b@example.org", "c@example.org"]


def test_amazon_ses_arrival_date_is_when_ses_accepted_the_message() -> None:
    notification = {**SES_BOUNCE, "mail": {**SES_BOUNCE["mail"], "timestamp": "2025-03-03T10:00:00.000Z"}}
    (event,) = bounce("From: SES <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message", json.dumps(notification))
    assert event.arrival_date is not None and event.arrival_date.isoformat() == "2025-03-03T10:00:00+00:00"


def test_marker_found_after_letters_that_lower_case_to_two() -> None:
    # "İ".lower() is two characters: positions must still point into the original text
    text = "İstanbul relay could not deliver\n--- Below this line is a copy of the message.\nReturn-Path: <a@b.example>\n"
    assert cut_original(text) == "İstanbul relay could not deliver\n"


def test_amazon_ses_names_the_original_message() -> None:
    mail = {**SES_BOUNCE["mail"], "commonHeaders": {"messageId": "<ses-1@sender.example>"}}
    (event,) = bounce("From: SES <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message",
                      json.dumps({**SES_BOUNCE, "mail": mail}))
    assert (event.original_message_id, event.original_mail_from) == ("<ses-1@sender.example>", "news@sender.example")


POSTFIX_NO_STAGE = """\
This is the Postfix program at host relay.sender.example.

I'm sorry to have to inform you that the message returned
below could not be delivered to one or more destinations.

<gone@example.or.jp>: host mx.example.or.jp[192.0.2.22] said: 550
    <gone@example.or.jp>: User unknown
"""


def test_user_unknown_echoing_the_address_without_a_stage_is_a_filter() -> None:
    headers = ("From: MAILER-DAEMON@relay.sender.example (Mail Delivery System)\nTo: news@sender.example\n"
               "Subject: Undelivered Mail Returned to Sender")
    (event,) = bounce(headers, POSTFIX_NO_STAGE)
    assert (event.recipient, event.reason, event.hard_or_soft) == ("gone@example.or.jp", "filtered", "soft")
    # Postfix naming the command settles it
    (event,) = bounce(headers, POSTFIX_NO_STAGE.replace("User unknown", "User unknown (in reply to RCPT TO command)"))
    assert (event.reason, event.hard_or_soft) == ("userunknown", "hard")
