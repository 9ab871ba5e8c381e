"""Bounces of several recipients: each recipient gets the reason of its
own reply (issue 10: old Sendmail transcripts gave every recipient the
same reason), and the DSN's own status outranks prose found elsewhere in
the notice (a scanner's disclaimer)."""

from __future__ import annotations

import re

import pytest

from parsers import parse_bytes
from parsers.events import BounceEvent

SENDMAIL_TWO_SESSIONS = """Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.com>
To: <news@example.com>
Subject: Returned mail: see transcript for details
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

The original message was received at Mon, 2 Mar 2026 10:00:00 +0000
from localhost [127.0.0.1]

   ----- The following addresses had permanent fatal errors -----
<ann@one.example.org>
    (reason: 550 5.1.1 <ann@one.example.org>... User unknown)
<bob@two.example.net>
    (reason: 552 5.2.2 Mailbox full)

   ----- Transcript of session follows -----
... while talking to mx.one.example.org.:
>>> RCPT To:<ann@one.example.org>
<<< 550 5.1.1 <ann@one.example.org>... User unknown
550 5.1.1 <ann@one.example.org>... User unknown
... while talking to mx.two.example.net.:
>>> DATA
<<< 552 5.2.2 Mailbox full
554 5.0.0 Service unavailable

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.com
Arrival-Date: Mon, 2 Mar 2026 10:00:00 +0000

Final-Recipient: RFC822; ann@one.example.org
Action: failed
Status: 5.1.1
Last-Attempt-Date: Mon, 2 Mar 2026 10:00:05 +0000

Final-Recipient: RFC822; bob@two.example.net
Action: failed
Status: 5.2.2
Last-Attempt-Date: Mon, 2 Mar 2026 10:00:05 +0000

--B1--
"""


def _variant(without_reason_lines: bool, generic_status: bool) -> bytes:
    text = SENDMAIL_TWO_SESSIONS
    if without_reason_lines:
        text = re.sub(r"(?m)^    \(reason: .*\)$\n", "", text)
    if generic_status:
        text = re.sub(r"(?m)^Status: 5\.[12]\.[12]$", "Status: 5.0.0", text)
    return text.encode()


@pytest.mark.parametrize("without_reason_lines", [False, True])
@pytest.mark.parametrize("generic_status", [False, True])
def test_each_recipient_of_a_sendmail_transcript_gets_its_own_reason(without_reason_lines: bool,
                                                                        generic_status: bool) -> None:
    events = parse_bytes(_variant(without_reason_lines, generic_status))
    got = {e.recipient: (e.reason, e.hard_or_soft) for e in events if isinstance(e, BounceEvent)}
    assert got == {"ann@one.example.org": ("userunknown", "hard"), "bob@two.example.net": ("mailboxfull", "soft")}


DISCLAIMER_DSN = """Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@gw.example.net>
To: news@example.com
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="D"

--D
Content-Type: text/plain

Delivery to the following recipient failed permanently:

    carol@example.net

This e-mail has been scanned for viruses and malware by ExampleScan. An infected
attachment would have been removed.

--D
Content-Type: message/delivery-status

Reporting-MTA: dns; gw.example.net

Final-Recipient: rfc822; carol@example.net
Action: failed
Status: 5.1.1

--D--
"""


def test_a_disclaimer_in_the_notice_does_not_outrank_the_dsn_status() -> None:
    [event] = parse_bytes(DISCLAIMER_DSN.encode())
    assert isinstance(event, BounceEvent)
    assert (event.reason, event.hard_or_soft, event.status) == ("userunknown", "hard", "5.1.1")


def test_bounce_events_carry_a_confidence_in_their_json() -> None:
    [event] = parse_bytes(DISCLAIMER_DSN.encode())
    assert event.to_dict()["confidence"] in ("high", "medium", "low")


OLD_SENDMAIL_LINES = """Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.com>
To: news@example.com
Subject: Returned mail: User unknown

   ----- Transcript of session follows -----
550 <ann@one.example.org>... User unknown
552 <bob@two.example.net>... Mailbox full

   ----- Recipients of this delivery -----
ann@one.example.org
bob@two.example.net

   ----- Unsent message follows -----
Received: from localhost by relay.example.com
Subject: June
"""

OLD_SENDMAIL_SESSIONS = """Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.com>
To: news@example.com
Subject: Returned mail: User unknown

   ----- Transcript of session follows -----
While talking to mx.one.example.org:
>>> RCPT To:<ann@one.example.org>
<<< 550 <ann@one.example.org>... User unknown
550 <ann@one.example.org>... User unknown
While talking to mx.two.example.net:
>>> DATA
<<< 552 Requested mail action aborted: mailbox full
554 <bob@two.example.net>... Service unavailable

   ----- Recipients of this delivery -----
ann@one.example.org
bob@two.example.net

   ----- Unsent message follows -----
Received: from localhost by relay.example.com
Subject: June
"""


def test_old_sendmail_reply_lines_each_answer_for_their_recipient() -> None:
    # no transcript says which command "User unknown" answered: a filter's verdict (soft),
    # as for one recipient; the point is that bob's "Mailbox full" stays bob's
    events = parse_bytes(OLD_SENDMAIL_LINES.encode())
    got = {e.recipient: e.reason for e in events if isinstance(e, BounceEvent)}
    assert got == {"ann@one.example.org": "filtered", "bob@two.example.net": "mailboxfull"}


def test_old_sendmail_sessions_each_answer_for_their_recipient() -> None:
    events = parse_bytes(OLD_SENDMAIL_SESSIONS.encode())
    got = {e.recipient: (e.reason, e.hard_or_soft) for e in events if isinstance(e, BounceEvent)}
    assert got == {"ann@one.example.org": ("userunknown", "hard"), "bob@two.example.net": ("mailboxfull", "soft")}
