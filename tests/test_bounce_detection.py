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


def test_a_bounce_with_bare_cr_line_ends_reads_like_its_lf_form() -> None:
    data = _mail("From: Postmaster <postmaster@mx.example.net>\nSubject: Undelivered Mail Returned to Sender\n",
                 "<joe@example.net>: host mx.example.net said: 550 5.1.1 <joe@example.net>: User unknown\n")
    [lf] = parse_bytes(data)
    [cr] = parse_bytes(data.replace(b"\n", b"\r"))
    assert isinstance(lf, BounceEvent) and isinstance(cr, BounceEvent)
    assert (cr.recipient, cr.reason, cr.status) == (lf.recipient, lf.reason, lf.status)
    assert (lf.recipient, lf.reason, lf.status) == ("joe@example.net", "userunknown", "5.1.1")


@pytest.mark.parametrize("phrase", [
    "Ihre Nachricht konnte nicht zugestellt werden.",
    "Votre message n'a pas pu être remis aux destinataires suivants.",
    "Su mensaje no se pudo entregar a los siguientes destinatarios.",
    "Non è stato possibile recapitare il messaggio.",
    "Uw bericht kon niet worden afgeleverd.",
])
def test_notice_phrases_in_other_languages(phrase: str) -> None:
    data = _mail("Return-Path: <>\nFrom: Mail System <system@mx.example.net>\nSubject: Notice\n",
                 f"{phrase}\n\n<joe@example.net>:\nmailbox unavailable\n")  # no SMTP reply: the phrase is the sign
    [event] = parse_bytes(data)
    assert isinstance(event, BounceEvent) and event.hard_or_soft == "hard"
