"""The classifier's data tables (parsers/bounce/tables/): every row is
tested. Reference phrase rows and provider rows are tested one by one from
the tables themselves (a row that can never decide is a dead row: it must
be removed or its order fixed); the regular-expression rules are tested by
the messages in test_bounce_classify.py and below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parsers import parse_bytes
from parsers.bounce import reasons as R
from parsers.bounce.assemble import bounce_host_of
from parsers.bounce.classify import STEPS, classify, evidence_order, use_evidence_order
from parsers.bounce.knowledge import TABLES, TIERS, ProviderReply, load
from parsers.events import BounceEvent
from parsers.mime import parse_message

KNOWLEDGE = load()
REFERENCE_ROWS = [(group.reason, phrase) for group in KNOWLEDGE.reference for phrase in group.phrases]


@pytest.fixture
def only() -> Iterator[object]:
    """Run the classifier with the given evidence steps alone."""
    def use(*steps: str) -> None:
        use_evidence_order(steps)
    yield use
    use_evidence_order(None)


@pytest.mark.parametrize(("reason", "phrase"), REFERENCE_ROWS, ids=[f"{r}:{p.strip()[:40]}" for r, p in REFERENCE_ROWS])
def test_every_reference_phrase_states_its_reason(only, reason: str, phrase: str) -> None:
    only("reference")
    reply = f"550 <someone@example.org>... {phrase}x message refused"
    assert classify(None, None, reply).reason == reason


def _provider_rows() -> list[ProviderReply]:
    return list(KNOWLEDGE.providers)


@pytest.mark.parametrize("row", _provider_rows(), ids=lambda r: f"{r.provider}:{r.reason}:{' + '.join(r.phrase).strip()[:40]}")
def test_every_provider_reply_states_its_reason_from_that_provider(only, row: ProviderReply) -> None:
    only("provider")
    host = "mx1." + KNOWLEDGE.provider_hosts[row.provider][0]
    reply = " ".join(str(part) for part in (row.code, row.status) if part) + f" {' '.join(row.phrase)} (mx1)"
    assert classify(row.code, row.status, reply, remote_host=host).reason == row.reason


def test_provider_rows_need_the_provider(only) -> None:
    # Facebook's reply codes are short tokens that mean nothing from another server
    only("provider")
    assert classify(550, None, "550 pol-p1 denied", remote_host="mx.example.net").reason == R.ONHOLD
    assert classify(550, None, "550 pol-p1 denied", remote_host="mx.facebook.com").reason == R.BLOCKED


def test_provider_named_by_a_marker_in_the_reply(only) -> None:
    only("provider")
    reply = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    assert classify(550, "5.1.10", reply).reason == R.USERUNKNOWN


def test_tables_are_complete_and_consistent() -> None:
    assert set(evidence_order()) <= set(STEPS)
    assert set(KNOWLEDGE.rules) == set(TIERS)
    for tier, rules in KNOWLEDGE.rules.items():
        assert rules, tier
        for rule in rules:
            assert rule.reason in R.ALL_REASONS and rule.anchors, rule
            assert all(anchor == anchor.lower() for anchor in rule.anchors), rule
    assert (TABLES / "LICENSE-sisimai").is_file()  # the reference tables' notice travels with them


def test_unknown_reason_in_a_table_is_refused(tmp_path: Path) -> None:
    for folder in ("reasons", "providers"):
        (tmp_path / folder).mkdir()
    (tmp_path / "order.toml").write_text((TABLES / "order.toml").read_text())
    (tmp_path / "reasons" / "x.toml").write_text('reason = "nosuchreason"\n')
    with pytest.raises(ValueError, match="nosuchreason"):
        load(tmp_path)


# --- rows added for the issue "bounce classification that holds on mail it has never seen"

@pytest.mark.parametrize(("reply", "reason"), [
    # hostunknown: Exim's router found no route; plain "no such host"
    ("550 Unrouteable address", R.HOSTUNKNOWN),
    ("Delivery failed: no such host or domain (example.invalid)", R.HOSTUNKNOWN),
    # mailboxfull: the mailbox's own size limit, not the message's
    ("552 the mailbox is over its size limit", R.MAILBOXFULL),
    ("452 Mailbox size limit exceeded for joe", R.MAILBOXFULL),
    ("mailbox exceeds the allowed size", R.MAILBOXFULL),
    # expired: the sending MTA stopped retrying
    ("Delivery attempts exhausted for <joe@example.org>", R.EXPIRED),
    ("maximum connection attempts exceeded, giving up", R.EXPIRED),
    # virusdetected: a scanner's disclaimer is no finding; "spam or virus" is a spam verdict
    ("550 5.1.1 no such user here. This notice was scanned for viruses by ExampleScan", R.USERUNKNOWN),
    ("554 Rejected: message contains spam or virus patterns", R.SPAMDETECTED),
    ("554 Rejected: message contains a virus or spam content", R.VIRUSDETECTED),
    # mailboxfull: storage the mailbox would exceed; a mail file over its size; messages stored
    ("452 4.2.2 recipient rejected: mailbox would exceed the maximum allowed storage", R.MAILBOXFULL),
    ("552 mail file size exceeds the maximum allowed for this user", R.MAILBOXFULL),
    ("452 user has too many messages on the server", R.MAILBOXFULL),
    # suspend: an inactive recipient, not an unknown one
    ("550 recipient rejected: temporarily inactive", R.SUSPEND),
    # norelaying: the relay refusal is the verdict, whatever cause or remedy follows
    ("554 is not permitted to relay through this server without authentication", R.NORELAYING),
    ("550 Relaying denied. Client host name lookup failed [192.0.2.9]", R.NORELAYING),
    # filtered: the recipient blocked this sender (not the recipient's server)
    ("550 you have been blocked by the recipient", R.FILTERED),
    # requireptr: the client's name lookup failed
    ("554 Access denied. Client name lookup failed [192.0.2.9]", R.REQUIREPTR),
    # rejected: the envelope sender's address black-listed; a valid sender domain required
    ("550 Access denied: sender address is blacklisted", R.REJECTED),
    ("550 your e-mail address has been blacklisted", R.REJECTED),
    ("550 connections not accepted from servers without a valid sender domain", R.REJECTED),
    ("550 this server does not accept mail from bulk@example.com", R.REJECTED),
    ("550 bad sender ip address 192.0.2.9", R.BLOCKED),
    # notaccept only for a host that takes no mail at all
    ("554 we do not accept mail from dynamic ips", R.BLOCKED),
    ("554 example.org does not accept mail (null MX)", R.NOTACCEPT),
    # hostunknown vs a lookup to retry; Exim's unroutable domain
    ("550 mail domain mentioned in email address is unknown", R.HOSTUNKNOWN),
    ("451 host not found, try again", R.NETWORKERROR),
    ("550 unrouteable mail domain \"example.invalid\"", R.NETWORKERROR),
    # toomanyconn: connection counts and rates, not message rates
    ("421 4.7.0 connection rate limit exceeded, try again later", R.TOOMANYCONN),
    ("421 too many concurrent SMTP connections from this IP", R.TOOMANYCONN),
    # blocked: the sending host judged a spam source; access refused for the client's IP
    ("554 sorry, your remotehost looks suspiciously like spammer", R.BLOCKED),
    ("554 dynamic/zombied/spam IPs blocked", R.BLOCKED),
    ("550 server access forbidden by your IP 192.0.2.9", R.BLOCKED),
    # spamdetected: a named spam filter's verdict
    ("550 blocked by SpamAssassin (score 12.3)", R.SPAMDETECTED),
    ("550 message refused by Trustwave SEG SpamProfiler", R.SPAMDETECTED),
    # userunknown: more plain phrasings, and older European notices
    ("550 The recipient's mailbox is unknown", R.USERUNKNOWN),
    ("550 sorry, no account by that name", R.USERUNKNOWN),
    ("550 joe does not have an account here", R.USERUNKNOWN),
    ("550 Benutzer unbekannt", R.USERUNKNOWN),
    ("550 Destinataire inconnu", R.USERUNKNOWN),
    ("550 Usuario desconocido", R.USERUNKNOWN),
    ("550 Utente sconosciuto", R.USERUNKNOWN),
    ("550 Gebruiker onbekend", R.USERUNKNOWN),
    # hostunknown: neither MX nor A
    ("550 No MX or A records for example.invalid", R.HOSTUNKNOWN),
])
def test_added_phrase_rows(reply: str, reason: str) -> None:
    assert classify(None, None, reply).reason == reason


def test_message_size_limit_stays_a_message_size() -> None:
    assert classify(552, "5.3.4", "552 5.3.4 Message size exceeds fixed maximum message size").reason == R.MESGTOOBIG


@pytest.mark.parametrize(("code", "status", "reply", "reason"), [
    # RFC 3463 x.3.1: the system is full, whatever else the reply mentions
    (452, "4.3.1", "452 4.3.1 Insufficient system storage, rate limited", R.SYSTEMFULL),
    # RFC 7372 x.7.25: no PTR record, though the reply says "blocked"
    (550, "5.7.25", "550 5.7.25 Client host blocked: the sending IP has no reverse DNS", R.REQUIREPTR),
    # RFC 7505 x.1.10 null MX
    (556, "5.1.10", "556 5.1.10 recipient rejected", R.NOTACCEPT),
])
def test_decisive_status_outranks_the_text(code: int, status: str, reply: str, reason: str) -> None:
    verdict = classify(code, status, reply)
    assert (verdict.reason, verdict.confidence) == (reason, "high")


def test_google_reputation_deferral_is_not_speeding() -> None:
    reply = ("421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP "
             "address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.")
    verdict = classify(421, "4.7.28", reply, remote_host="gmail-smtp-in.l.google.com")
    assert verdict.reason == R.BLOCKED and verdict.hard_or_soft == "soft" and verdict.confidence == "high"


def test_google_daily_quota_is_speeding_by_its_documented_use_of_5_4_5() -> None:
    reply = "550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits"
    assert classify(550, "5.4.5", reply, remote_host="smtp.gmail.com").reason == R.SPEEDING


def test_microsoft_recipient_not_found_is_a_missing_mailbox_not_a_null_mx() -> None:
    reply = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    verdict = classify(550, "5.1.10", reply, remote_host="mail.protection.outlook.com")
    assert (verdict.reason, verdict.hard_or_soft) == (R.USERUNKNOWN, "hard")


def test_notice_text_never_outranks_the_dsn_status() -> None:
    disclaimer = "This message was scanned for viruses and malware by ExampleScan."
    assert classify(None, "5.1.1", disclaimer, text_is_notice=True).reason == R.USERUNKNOWN
    # a diagnostic of its own still speaks first
    assert classify(550, "5.1.1", "550 5.1.1 message contains a virus").reason == R.VIRUSDETECTED


def test_notice_naming_the_actual_problem_outranks_an_expiry_status() -> None:
    # RFC 3463 asks for the actual problem's code where known; x.4.7 is the code of last resort
    notice = "Deferred: Connection refused by mx.example.org. Message could not be delivered for 5 days"
    assert classify(None, "4.4.7", notice, text_is_notice=True).reason == R.BLOCKED
    assert classify(None, "5.4.7", "Name server: example.org.: host name lookup failure",
                    text_is_notice=True).reason == R.NETWORKERROR


@pytest.mark.parametrize(("reply", "confidence"), [
    ("550 5.1.1 <joe@example.org>: Recipient address rejected: User unknown in local recipient table", "high"),
    ("550 5.1.1 refused", "medium"),
    ("550 refused", "low"),
    ("", "low"),
])
def test_confidence(reply: str, confidence: str) -> None:
    assert classify(None, None, reply).confidence == confidence


@pytest.mark.parametrize(("code", "status", "reply", "command", "reason"), [
    # a timeout is the session running out of time, not a refusal of the client
    (421, "4.4.2", "421 4.4.2 mx.example.org Error: timeout exceeded", "CONN", R.NETWORKERROR),
    (421, "4.7.0", "421 4.7.0 Timeout - closing connection", "CONN", R.NETWORKERROR),
    (421, None, "421 Time-out waiting for data from client", None, R.NETWORKERROR),
    # RFC 3463 4.4.1 / 4.4.2 as transient failures: the sending MTA's own record
    (None, "4.4.1", "No answer from host", "CONN", R.EXPIRED),
    (None, "4.4.2", "Bad connection", None, R.NETWORKERROR),
    # under class 5 the same detail is a server's answer, read by its text
    (550, "5.4.1", "550 5.4.1 Recipient address rejected: Access denied", "RCPT", R.USERUNKNOWN),
])
def test_timeouts_and_connection_codes(code: int | None, status: str | None, reply: str, command: str | None,
                                       reason: str) -> None:
    assert classify(code, status, reply, command=command).reason == reason


AOL_OWN_BOUNCE = b"""Received: from omr-a01.mx.aol.example (omr-a01.mx.aol.example [192.0.2.1])
\tby imb-a01.mx.aol.com (Mail Bouncer) with ESMTPS id 9E99; Tue, 2 May 2026 01:16:59 -0400 (EDT)
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@aol.com>
To: news@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="A"

--A
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--A
Content-Type: message/delivery-status

Reporting-MTA: dns; imb-a01.mx.aol.com

Final-Recipient: rfc822; joe@example.org
Action: failed
Status: 5.4.4
Diagnostic-Code: X-Postfix; Name service error for name=example.org type=MX: Malformed or unexpected name server reply

--A--
"""


def test_a_providers_own_bounce_reads_its_documented_replies() -> None:
    # no Remote-MTA: the server that wrote the bounce (its first Received) is AOL's
    [event] = parse_bytes(AOL_OWN_BOUNCE)
    assert isinstance(event, BounceEvent)
    # AOL's documented meaning; the status (5.4.4, unable to route) names another reason: medium
    assert (event.reason, event.confidence) == (R.NOTACCEPT, "medium")
    assert bounce_host_of(parse_message(AOL_OWN_BOUNCE)) == "imb-a01.mx.aol.com"


def test_gmail_named_by_its_gsmtp_tag() -> None:
    reply = "421-4.7.28 [192.0.2.1] Our system has detected an unusual rate of mail originating from your IP. x11si1 - gsmtp"
    assert classify(421, "4.7.28", reply).reason == R.BLOCKED


def test_unusual_rate_of_unsolicited_mail_is_a_verdict_on_the_ip_not_a_rate_limit() -> None:
    reply = "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address"
    assert classify(421, "4.7.28", reply).reason == R.BLOCKED
    assert classify(421, None, "421 unusual rate of messages from your account, slow down").reason == R.SPEEDING
