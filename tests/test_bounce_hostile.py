"""Hostile input: every regular expression that reads a bounce or an
auto-reply must run in linear time (issue 14). Each case here hung (or
took tens of seconds) with the quadratic patterns it replaced; the timeout
is generous so that a slow shared machine never fails a correct parser."""

from __future__ import annotations

import pytest

from parsers import parse_bytes
from parsers.bounce.plaintext import _BARE_TAIL_RE, read_notice
from parsers.bounce.vendors import command_of_transcript
from parsers.events import BounceEvent
from parsers.html import strip_tags

pytestmark = pytest.mark.timeout(60)

FLOOD = 200_000


def _mail(headers: str, content_type: str, body: str) -> bytes:
    return (f"{headers}\nMIME-Version: 1.0\nContent-Type: {content_type}; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n{body}\n").encode()


BOUNCE_HEADERS = ("From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: sender@example.com\n"
                  "Subject: Undelivered Mail Returned to Sender\nReturn-Path: <>")


def test_strip_tags_keeps_text_and_unclosed_angles() -> None:
    assert strip_tags("<p>Mailbox <b>full</b></p>") == " Mailbox  full  "
    assert strip_tags("a < b and c") == "a < b and c"
    assert strip_tags("<<<x") == "<<<x"
    assert strip_tags("x<y>z<") == "x z<"


def test_strip_tags_on_a_flood_of_open_angles() -> None:
    text = "550 5.1.1 " + "<" * FLOOD
    assert strip_tags(text) == text


def test_html_bounce_with_a_flood_of_open_angles_is_classified() -> None:
    body = "<html><body>550 5.1.1 &lt;user@example.org&gt; user unknown<br>" + "<" * FLOOD + "</body></html>"
    events = parse_bytes(_mail(BOUNCE_HEADERS, "text/html", body))
    assert events and isinstance(events[0], BounceEvent)
    assert events[0].reason == "userunknown"


def test_plain_bounce_whose_diagnostic_is_a_flood_of_open_angles() -> None:
    body = "<user@example.org>: host mx.example.org said: 550 5.1.1 " + "<" * FLOOD
    events = parse_bytes(_mail(BOUNCE_HEADERS, "text/plain", body))
    assert events and isinstance(events[0], BounceEvent)
    assert events[0].hard_or_soft == "hard"


def test_html_autoreply_with_a_flood_of_open_angles() -> None:
    headers = "From: Someone <someone@example.org>\nTo: sender@example.com\nSubject: Out of office\nAuto-Submitted: auto-replied"
    events = parse_bytes(_mail(headers, "text/html", "<p>I am away.</p>" + "<" * FLOOD))
    assert [e.kind for e in events] == ["auto_reply"]


def test_transcript_after_many_blank_lines() -> None:
    text = ">>> RCPT TO:<user@example.org>" + "\n" * FLOOD + "<<< 550 5.1.1 no such user"
    assert command_of_transcript(text) == "RCPT"


def test_recipient_line_with_a_long_blank_tail() -> None:
    assert _BARE_TAIL_RE.match(" " * FLOOD + "(reason: x) y") is None
    assert _BARE_TAIL_RE.match(" " * FLOOD + "(expanded from <a@example.org>)  ")
    assert read_notice("user@example.org" + " " * FLOOD).recipients[0].address == "user@example.org"


def test_returned_message_marker_after_a_long_blank_run() -> None:
    body = ("<user@example.org>: 550 5.1.1 user unknown\n\n" + " " * FLOOD + "x original message\n"
            "--- Below this line is a copy of the message.\n\nSubject: hello\n")
    [event] = parse_bytes(_mail(BOUNCE_HEADERS, "text/plain", body))
    assert isinstance(event, BounceEvent) and event.reason == "userunknown"
