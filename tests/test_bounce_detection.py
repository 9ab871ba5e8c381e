"""Which messages the bounce parser takes as bounces: rows added for
issue 10 (bounces other parsers' suites hold that were not detected)."""

from __future__ import annotations

import pytest

from parsers import parse_bytes
from parsers.events import BounceEvent


def _mail(headers: str, body: str) -> bytes:
    return (headers + "To: news@example.com\nContent-Type: text/plain; charset=utf-8\n\n" + body).encode()


@pytest.mark.parametrize("subject", [
    "Unzustellbar: Juni", "Nicht zustellbar: Juni", "Non remis : juin", "Message non distribué",
    "Messaggio non recapitabile", "No entregado: junio", "Onbestelbaar: juni", "Unable to deliver your message",
    "Nondeliverable mail", "Non-delivery of: June",
])
def test_bounce_titles_in_several_languages(subject: str) -> None:
    data = _mail(f"From: Postmaster <postmaster@mx.example.net>\nSubject: {subject}\n",
                 "<joe@example.net>\n550 5.1.1 mailbox unavailable\n")
    [event] = parse_bytes(data)
    assert isinstance(event, BounceEvent) and event.reason == "userunknown"


@pytest.mark.parametrize("phrase", [
    "I'm sorry to have to inform you that your message could not be delivered to one or more recipients.",
    "Hi. This is the qmail-send program at mx.example.net.",
    "The following addresses had permanent fatal errors",
    "Your message did not reach the following recipients",
])
def test_notice_phrases_with_an_empty_return_path(phrase: str) -> None:
    data = _mail("Return-Path: <>\nFrom: Mail System <system@mx.example.net>\nSubject: Notice\n",
                 f"{phrase}\n\n<joe@example.net>:\nSorry, no mailbox here by that name.\n")
    [event] = parse_bytes(data)
    assert isinstance(event, BounceEvent) and event.hard_or_soft == "hard"
