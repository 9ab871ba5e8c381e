"""The tracking token (issue 14). v1 was plain base32 of
message-id|source-ip|campaign: a 91-octet VERP local part (RFC 5321 allows
64), the campaign name readable by recipients, and nothing authenticated it,
so a forged bounce could pause any lane. v2 is a short opaque queue key with
an HMAC tag, resolved through the sender's queue."""

from __future__ import annotations

import base64
import random
import re
from datetime import UTC, datetime

import pytest

from monitor.storage.rows import attribute_row, event_row
from parsers import parse_bytes, tracking
from sender.message import Tracker, TrackingError, max_mail_from_local
from sender.queue import NewMessage, attribute, enqueue, resolve_tracking

SECRET = b"0123456789abcdef0123456789abcdef"
DOT_STRING = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MESSAGE_ID = "9f86d081884c7d65.6f1e2a3b@news.example.com"


def test_v1_return_paths_were_over_the_rfc_5321_limit():
    """The defect: what the sender stamped before v2."""
    token = tracking.encode(MESSAGE_ID, "192.0.2.10", "spring-newsletter")
    address = tracking.verp_address("bounces", token, "bounce.example.com")
    assert len(address.rpartition("@")[0]) > 64
    assert tracking.return_path_problem(address) is not None
    assert base64.b32encode(b"spring-newsletter").decode().lower()[:16] in token or "spring" in str(
        tracking.decode(token))  # and anyone can read the campaign


@pytest.mark.parametrize("local", ["bounces", "b", "bounce.mail", "x" * max_mail_from_local()])
def test_every_generated_return_path_is_valid(local):
    tracker = Tracker(SECRET)
    rng = random.Random(5321)
    keys = [0, 1, 127, 128, 16383, 16384, 2**31, 2**40 + 7, 2**63 - 1] + [rng.randrange(2**48) for _ in range(2000)]
    for key in keys:
        address = tracker.return_path(f"{local}@bounce.example.com", key)
        local_part = address.rpartition("@")[0]
        assert len(local_part.encode()) <= 64, address
        assert DOT_STRING.fullmatch(local_part), address
        assert tracking.return_path_problem(address) is None
        token = local_part.partition("+rm-")[2]
        assert tracking.verify_v2(token, SECRET) == key


def test_a_mail_from_too_long_for_verp_is_refused_not_sent_invalid():
    with pytest.raises(TrackingError, match="at most"):
        Tracker(SECRET).return_path("x" * (max_mail_from_local() + 1) + "@bounce.example.com", 2**63 - 1)


def test_the_token_is_opaque_and_short():
    token = Tracker(SECRET).token(123_456)
    assert token.startswith("v2.") and len(token) <= 32
    raw = base64.b32decode(token[3:].upper() + "=" * (-len(token[3:]) % 8))
    assert b"spring" not in raw and b"192.0.2" not in raw and b"@" not in raw


def test_only_the_secret_verifies_a_token():
    token = Tracker(SECRET).token(42)
    assert tracking.verify_v2(token, SECRET) == 42
    assert tracking.verify_v2(token, b"another-installation-secret-0000") is None
    body = token[3:]
    for i in range(len(body)):  # any single changed character fails the tag (or the format)
        swapped = body[:i] + ("a" if body[i] != "a" else "b") + body[i + 1:]
        assert tracking.verify_v2("v2." + swapped, SECRET) is None
    forged = "v2." + base64.b32encode(bytes([42]) + b"\0" * 10).decode().rstrip("=").lower()
    assert tracking.read_v2(forged) is not None and tracking.verify_v2(forged, SECRET) is None


def _bounce_for(token: str, recipient: str = "bob@example.org") -> bytes:
    return f"""From: MAILER-DAEMON@mx.example.org
To: bounces+rm-{token}@bounce.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

<{recipient}>: host mx.example.org said: 550 5.1.1 user unknown

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--B
Content-Type: text/rfc822-headers

From: news@example.com
To: {recipient}
Message-ID: <{MESSAGE_ID}>
X-Repmon-Track: {token}

--B--
""".replace("\n", "\r\n").encode()


def test_parsers_find_v2_tokens_but_never_attribute_them_without_the_secret():
    token = Tracker(SECRET).token(7)
    data = _bounce_for(token)
    assert tracking.find_in_bytes(data) is None  # parsers hold no secret
    assert tracking.find_tokens(data) == [token]
    (event,) = parse_bytes(data)
    assert event.kind == "bounce" and event.tracking is None


def test_old_v1_tokens_still_decode_read_only():
    token = tracking.encode(MESSAGE_ID, "192.0.2.10", "spring")
    found = tracking.find_in_bytes(_bounce_for(token))
    assert found is not None and (found.message_id, found.source_ip, found.campaign) == (
        MESSAGE_ID, "192.0.2.10", "spring")


def test_tokens_resolve_through_the_queue_and_forgeries_attribute_nothing(sqlite_engine):
    with sqlite_engine.begin() as conn:
        enqueue(conn, [NewMessage("spring", "default", f"u{i}@example.org", "bounces@bounce.example.com",
                                  f"m{i}@example.com", b"Subject: x\r\n", b"hi\r\n", None, False) for i in range(3)])
        conn.exec_driver_sql("UPDATE sender_message SET source_ip = '192.0.2.10' WHERE id = 2")
    tracker = Tracker(SECRET)
    with sqlite_engine.connect() as conn:
        assert resolve_tracking(conn, [2])[2].source_ip == "192.0.2.10"
        genuine = tracking.find_tokens(_bounce_for(tracker.token(2)))
        found = attribute(conn, genuine, SECRET)
        assert found is not None and (found.message_id, found.source_ip, found.campaign) == (
            "m1@example.com", "192.0.2.10", "spring")
        forged = tracking.find_tokens(_bounce_for(Tracker(b"attacker-guess-attacker-guess-00").token(2)))
        assert attribute(conn, forged, SECRET) is None
        v1 = tracking.find_tokens(_bounce_for(tracking.encode("m1@example.com", "192.0.2.10", "spring")))
        assert attribute(conn, v1, SECRET) is None  # no tag: never attributed
        assert attribute(conn, [tracker.token(999)], SECRET) is None  # genuine but unknown row


def test_an_internationalized_address_round_trips_to_its_bounce():
    """SMTPUTF8: the sender's Return-Path stays ASCII, and the bounce names
    the UTF-8 recipient, so it can be suppressed."""
    recipient = "jöhn@exämple.com"
    address = Tracker(SECRET).return_path("bounces@bounce.example.com", 9)
    assert address.isascii() and tracking.return_path_problem(address) is None
    (event,) = parse_bytes(_bounce_for(Tracker(SECRET).token(9), recipient).replace(
        b"rfc822; " + recipient.encode(), b"utf-8; " + recipient.encode()))
    assert event.recipient == recipient


def test_a_stored_event_is_attributed_only_from_a_verified_token(sqlite_engine):
    token = Tracker(b"attacker-guess-attacker-guess-00").token(1)  # a forged bounce
    (event,) = parse_bytes(_bounce_for(token))
    row = event_row(event, message_pk=None, occurred_at=datetime.now(UTC))
    with sqlite_engine.begin() as conn:
        enqueue(conn, [NewMessage("spring", "default", "bob@example.org", "bounces@bounce.example.com",
                                  "m0@example.com", b"Subject: x\r\n", b"hi\r\n", None, False)])
        conn.exec_driver_sql("UPDATE sender_message SET source_ip = '192.0.2.10'")
    with sqlite_engine.connect() as conn:
        forged = attribute_row(dict(row), attribute(conn, tracking.find_tokens(_bounce_for(token)), SECRET))
        genuine = attribute_row(dict(row), attribute(conn, [Tracker(SECRET).token(1)], SECRET))
    assert forged["kind"] == "bounce" and forged["recipient"] == "bob@example.org"  # stored ...
    assert (forged["tracking_source_ip"], forged["campaign"], forged["sending_ip"]) == (None, None, None)  # ... not ours
    assert (genuine["tracking_message_id"], genuine["sending_ip"], genuine["campaign"]) == (
        "m0@example.com", "192.0.2.10", "spring")
