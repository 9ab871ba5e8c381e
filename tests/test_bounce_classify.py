"""Reason and hard/soft from (reply code, enhanced status, text): the
classifier the bounce parser and the sender share."""

from __future__ import annotations

import pytest

from parsers.bounce.classify import Classification, classify, hard_or_soft
from parsers.bounce.status import find_reply_code, find_status, pick_status
from parsers.bounce.vendors import infer_command


@pytest.mark.parametrize(
    ("reply", "status", "text", "reason"),
    [
        # the text names the reason, whatever the code says
        (550, "5.1.1", "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in local recipient table",
         "userunknown"),
        (550, "5.7.1", "550 5.7.1 Mailbox is full, try again later", "mailboxfull"),
        (452, "4.2.2", "452 4.2.2 The email account you wrote to is over quota", "mailboxfull"),
        (554, "5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org", "blocked"),
        (550, "5.7.26", "550-5.7.26 This message fails to pass SPF checks for the sending domain", "authfailure"),
        (550, "5.7.1", "550 5.7.1 Message rejected: DMARC policy of the sender's domain says reject", "authfailure"),
        (550, "5.7.25", "550 5.7.25 The sending IP does not have a PTR record", "requireptr"),
        (554, None, "554 Message rejected because it looks like spam (score 12.3)", "spamdetected"),
        (550, None, "550 Virus found in attachment: Win.Test.EICAR", "virusdetected"),
        (554, "5.7.1", "554 5.7.1 <b@example.net>: Relay access denied", "norelaying"),
        (421, "4.7.0", "421 4.7.0 Too many concurrent connections from your host, try later", "toomanyconn"),
        (550, "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "suspend"),
        (550, "5.1.6", "550 5.1.6 Recipient has moved to another address", "hasmoved"),
        (550, None, "550 Host or domain name not found. Name service error for name=nope.example type=A", "hostunknown"),
        (451, None, "451 Temporary lookup failure: DNS error while resolving the MX", "networkerror"),
        (550, "5.1.10", "550 5.1.10 Recipient address has null MX", "notaccept"),
        (552, "5.3.4", "552 5.3.4 Message size exceeds fixed limit", "mesgtoobig"),
        (554, None, "554 Duplicate header 'DKIM-Signature' found", "notcompliantrfc"),
        (530, "5.7.0", "530 5.7.0 Must issue a STARTTLS command first", "failedstarttls"),
        (550, None, "550 Unauthenticated senders not allowed, please turn on SMTP authentication", "securityerror"),
        (451, "4.7.650", "451 4.7.650 The mail server has been temporarily rate limited due to IP reputation", "badreputation"),
        (553, "5.1.8", "553 5.1.8 Domain of sender address nobody@nowhere.example does not exist", "rejected"),
        # no telling phrase: the status code decides
        (550, "5.2.2", "550 5.2.2 requested action aborted", "mailboxfull"),
        (550, "5.1.2", "550 5.1.2 bad destination system", "hostunknown"),
        (554, "5.7.9", "554 5.7.9 Message not accepted. See the error codes page", "policyviolation"),
        # neither text nor status: the basic reply code or nothing
        (551, None, "551 not our customer", "hasmoved"),
        (503, None, "503 Improper sequence of commands", "syntaxerror"),
        (550, None, "550 Requested action not taken", "onhold"),
    ],
)
def test_reason(reply: int | None, status: str | None, text: str, reason: str) -> None:
    assert classify(reply, status, text).reason == reason


def test_status_found_in_text_when_not_given() -> None:
    assert classify(550, None, "550 5.2.2 no room left").reason == "mailboxfull"


def test_two_x_x_is_delivered() -> None:
    assert classify(250, "2.0.0", "250 2.0.0 OK queued as 12345").reason == "delivered"


@pytest.mark.parametrize(
    ("command", "text", "reason"),
    [
        ("CONN", "554 Access denied", "blocked"),  # refusing the connection refuses the client host
        ("HELO", "550 Rejected", "blocked"),
        ("MAIL", "550 5.7.1 Access denied", "rejected"),  # refusing MAIL FROM refuses the sender
        ("DATA", "554 5.7.0 Header error", "policyviolation"),
    ],
)
def test_command_decides_a_generic_refusal(command: str, text: str, reason: str) -> None:
    assert classify(None, None, text, command=command).reason == reason


def test_user_unknown_after_data_is_a_filter_unless_status_says_address() -> None:
    assert classify(550, None, "550 Unknown user someone@example.jp", command="DATA").reason == "filtered"
    assert classify(550, "5.1.1", "550 5.1.1 Unknown user", command="DATA").reason == "userunknown"
    assert classify(550, None, "550 Unknown user someone@example.jp", command="RCPT").reason == "userunknown"


def test_specific_phrase_outranks_a_lesser_one() -> None:
    # "duplicate DKIM header" is a format problem, not an authentication failure
    assert classify(554, None, "554 Transaction failed: Duplicate header 'DKIM-Signature'.").reason == "notcompliantrfc"
    # a spam verdict whose advice mentions SPF records is still a spam verdict
    text = "Your email was rejected due to spam classification. Set up SPF records for your domain."
    assert classify(None, None, text).reason == "spamdetected"


def test_hard_only_when_the_address_is_dead() -> None:
    assert classify(550, "5.1.1", "550 5.1.1 no such user").hard_or_soft == "hard"
    assert classify(550, "5.2.2", "550 5.2.2 mailbox full").hard_or_soft == "soft"
    assert classify(421, None, "421 too many connections").hard_or_soft == "soft"
    assert hard_or_soft("notaccept", 550, "5.1.10") == "hard"
    assert hard_or_soft("notaccept", None, "4.0.0") == "soft"  # temporarily not accepting may change


def test_empty_input_is_onhold_not_an_error() -> None:
    assert classify(None, None, "") == Classification("onhold", "soft")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 user unknown", "5.1.1"),
        ("host 192.0.2.1 said 550 user unknown", None),  # an IP address is not a status code
        ("Sorry (#5.4.4)", "5.4.4"),
        ("version 1.5.2.10 deployed", None),
    ],
)
def test_find_status(text: str, expected: str | None) -> None:
    assert find_status(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 user unknown", 550),
        ("host mx.example.com[192.0.2.1] said: 452 4.2.2 over quota", 452),
        ("host 192.0.2.153 refused", None),
        ("message size 550 bytes", None),
    ],
)
def test_find_reply_code(text: str, expected: int | None) -> None:
    assert find_reply_code(text) == expected


def test_pick_status_prefers_the_servers_own_code() -> None:
    # the reporting MTA wrote a generic code, the remote reply a precise one
    assert pick_status("5.0.0", "550 5.7.1 Relaying denied") == "5.7.1"
    # in a chain of replies the innermost is the cause
    assert pick_status("4.4.7", "554 4.4.7 expired <421 4.4.2 Connection timed out>") == "4.4.2"
    # an "other" detail in the reply does not replace a precise field
    assert pick_status("5.1.1", "550 #5.1.0 Address rejected") == "5.1.1"
    assert pick_status(None, "no code here") is None


def test_user_unknown_as_a_remote_reply_without_code_is_a_filter_but_not_in_the_mtas_own_words() -> None:
    text = "The email account that you tried to reach does not exist."
    # a DSN's Diagnostic-Code field: the remote server's words, stage unknown
    assert classify(None, "5.0.0", text, remote_reply=True).reason == "filtered"
    # the same words written by the reporting MTA about its own mailboxes
    assert classify(None, "5.0.0", text).reason == "userunknown"
    assert classify(None, "5.0.0", text, remote_reply=True, command="RCPT").reason == "userunknown"


def test_local_delivery_agents_unknown_user_is_a_missing_mailbox() -> None:
    text = "mail.local: unknown user: neko 554 <neko@example.net>... Service unavailable"
    assert classify(554, "5.5.0", text).reason == "userunknown"


def test_other_mailbox_status_is_the_recipient_sides_filter() -> None:
    # x.2.0: the mailbox exists, something about it refused the message
    assert classify(550, "5.2.0", "550 5.2.0 Requested action not taken").reason == "filtered"
    assert classify(None, "5.2.0", "").reason == "filtered"


def test_bare_transaction_failed_is_a_system_error_whatever_the_command() -> None:
    assert classify(554, None, "554 Transaction failed", command="MAIL").reason == "systemerror"
    assert classify(554, None, "554 5.7.1 Transaction failed: spam content", command="DATA").reason == "spamdetected"


def test_provider_code_for_a_refused_content() -> None:
    text = "550 5.2.0 Mail rejete. Mail rejected. OFR_506 [506]"
    assert classify(550, "5.2.0", text, command="DATA").reason == "spamdetected"


def test_a_quoted_server_reply_outranks_the_relays_category_label() -> None:
    text = "5.1.0 - Unknown address error 550-'5.7.1 <bounce@sender.example>... Access denied' (delivery attempts: 0)"
    assert classify(550, "5.7.1", text).reason == "securityerror"
    text = "5.1.0 - Unknown address error 550-'5.1.1 <a@example.org>: Recipient address rejected: User unknown'"
    assert classify(550, "5.1.1", text).reason == "userunknown"


def test_destination_domain_refusing_the_sender_is_rejected() -> None:
    text = "541 5.4.1 Mail rejected by destination domain"
    assert classify(541, "5.4.1", text, command="RCPT").reason == "rejected"


def test_pipe_program_named_in_a_refusal_is_not_a_mailer_failure() -> None:
    # sendmail refused to run the .forward program: the system said no, the program never ran
    refused = '554 "|exec /usr/bin/procmail -f- || exit 75 #neko"... Service unavailable'
    assert classify(554, "5.5.0", refused).reason == "systemerror"
    assert classify(None, None, 'procmail: Couldn\'t create "/var/spool/mail/neko"').reason == "mailererror"


@pytest.mark.parametrize(
    ("context", "command"),
    [
        ("550 <a@example.org>: User unknown", None),  # echoing the address is what filters after DATA do too
        ("550 <a@example.org>: Recipient address rejected: User unknown in local recipient table", None),
        ("Reason: Remote SMTP server has rejected address", "RCPT"),
        ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "RCPT"),
        ("192.0.2.1 does not like recipient. Remote host said: 550 no such user", "RCPT"),
        ("host mx.example.org said: 550 User unknown (in reply to RCPT TO command)", "RCPT"),
    ],
)
def test_smtp_command_only_from_what_names_the_stage(context: str, command: str | None) -> None:
    assert infer_command(context, "") == command
