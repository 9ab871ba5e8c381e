"""parsers.mime's fast reader must build exactly the Message tree of the
stdlib FeedParser (compat32) it replaces: same raw header fields, same
payload text, same default types, for well-formed and broken MIME alike
(on shapes it does not handle it hands the input to the stdlib parser)."""

from __future__ import annotations

import email
import email.policy
import random
from pathlib import Path

import pytest

from parsers import mime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tree(message):
    payload = message._payload
    children = [tree(part) for part in payload] if isinstance(payload, list) else payload
    return message._headers, message.get_default_type(), children


def assert_same_tree(data: bytes) -> None:
    expected = tree(email.message_from_bytes(data, policy=email.policy.compat32))
    assert tree(mime._message_from_bytes(data)) == expected


def uses_fast_reader(data: bytes) -> bool:
    try:
        mime._FastReader(data.decode("ascii", "surrogateescape")).part(0, (), False, 0)
    except mime._Unusual:
        return False
    return True


DSN = (
    b"From: MAILER-DAEMON@mx.example.net\nTo: a@example.com\nSubject: Undelivered\n"
    b"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n"
    b'\tboundary="B1"\n\npreamble\n--B1\nContent-Type: text/plain; charset=us-ascii\n\n'
    b"The mail could not be delivered.\n\n--B1\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; x@example.org\n"
    b"Action: failed\nStatus: 5.1.1\n\n--B1\nContent-Type: message/rfc822\n\n"
    b"Return-Path: <a@example.com>\nSubject: hello\n =?utf-8?q?w=C3=B6rld?=\n"
    b"Content-Type: multipart/alternative; boundary=B2\n\n--B2\nContent-Type: text/plain\n\n"
    b"hi\n--B2\nContent-Type: text/html\n\n<p>hi</p>\n--B2--\nepilogue\n--B1--\n"
)

SHAPES = {
    "well-formed DSN": DSN,
    "CRLF line ends": DSN.replace(b"\n", b"\r\n"),
    "lone CR line ends": DSN.replace(b"\n", b"\r"),
    "close boundary missing": DSN.rsplit(b"--B1--", 1)[0],
    "inner close boundary missing": DSN.replace(b"--B2--\n", b""),
    "truncated inside the original": DSN[: DSN.index(b"<p>hi")],
    "no start boundary": DSN.replace(b"\n--B1\n", b"\n-- B1\n"),
    "no boundary parameter": DSN.replace(b'\tboundary="B1"', b"\tx=y"),
    "repeated boundary line": DSN.replace(b"--B1\nContent-Type: message/delivery", b"--B1\n--B1\nContent-Type: message/delivery"),
    "nested multipart with the outer boundary": DSN.replace(b"boundary=B2", b"boundary=B1"),
    "boundary with a suffix of the other": DSN.replace(b"boundary=B2", b"boundary=B1--"),
    "boundary line with blanks": DSN.replace(b"--B1\nContent-Type: message/rfc822", b"--B1 \t\nContent-Type: message/rfc822"),
    "delivery-status blank line runs": DSN.replace(b"Reporting-MTA: dns; mx.example.net\n\n",
                                                   b"\n\nReporting-MTA: dns; mx.example.net\n\n\n"),
    "delivery-status with a body line": DSN.replace(b"Action: failed\n", b"Action: failed\nnot a field\n"),
    "delivery-status with a content type": DSN.replace(b"Action: failed\n", b"Content-Type: multipart/mixed\n"),
    "mbox From line first": b"From a@example.com Mon Jan  1 00:00:00 2024\n" + DSN,
    "From line among the headers": DSN.replace(b"To: a@example.com\n", b"To: a@example.com\nFrom b Mon\n"),
    "From line last in the headers": b"Subject: x\nFrom b Mon\n\nbody\n",
    "first line a continuation": b" folded\nSubject: x\n\nbody\n",
    "field without a name": b"Subject: x\n: nameless\n\nbody\n",
    "no blank line before the body": b"Subject: x\nthis is body text\nmore\n",
    "headers only": b"Subject: x\nFrom: y@example.com",
    "digest parts default to message/rfc822": (
        b"Content-Type: multipart/digest; boundary=D\n\n--D\n\nSubject: one\n\nfirst\n--D\n\nSubject: two\n\nsecond\n--D--\n"
    ),
    "8-bit header and body bytes": DSN.replace(b"Subject: hello", b"Subject: h\xc3\xa9llo \xff").replace(b"hi\n", b"h\xe9\n"),
    "non-ASCII content type": DSN.replace(b"Content-Type: text/html", b"Content-Type: text/html; name=\xe9"),
    "empty message/rfc822": b"Content-Type: multipart/mixed; boundary=E\n\n--E\nContent-Type: message/rfc822\n\n--E--\n",
}


@pytest.mark.parametrize("name", SHAPES)
def test_same_tree_as_the_stdlib_parser(name):
    assert_same_tree(SHAPES[name])


def test_common_defects_stay_on_the_fast_reader():
    # truncated originals are everyday bounce content: they must not cost a
    # second parse by the stdlib
    for name in ("well-formed DSN", "CRLF line ends", "close boundary missing", "truncated inside the original",
                 "no start boundary", "no boundary parameter"):
        assert uses_fast_reader(SHAPES[name]), name
    assert not uses_fast_reader(SHAPES["nested multipart with the outer boundary"])


def mutations(data: bytes, rng: random.Random, count: int):
    """Variants of a message with lines cut, dropped, repeated, indented and
    boundary lines altered: the damage real bounces carry."""
    for _ in range(count):
        lines = data.split(b"\n")
        for _ in range(rng.randint(1, 4)):
            if not lines:
                break
            at = rng.randrange(len(lines))
            boundaries = [i for i, line in enumerate(lines) if line.startswith(b"--")]
            operation = rng.randrange(8)
            if operation == 0:
                lines = lines[:at]
            elif operation == 1:
                del lines[at]
            elif operation == 2:
                lines.insert(at, lines[rng.randrange(len(lines))])
            elif operation == 3:
                lines.insert(at, b"")
            elif operation == 4:
                lines[at] = b" " + lines[at]
            elif operation == 5:
                lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)]
            elif boundaries and operation == 6:
                lines.insert(at, lines[rng.choice(boundaries)])
            elif boundaries:
                i = rng.choice(boundaries)
                lines[i] = lines[i] + rng.choice([b"--", b"  ", b"x", b"--\r", b"\r"])
        variant = b"\n".join(lines)
        yield variant.replace(b"\n", b"\r\n") if rng.random() < 0.3 else variant


def test_same_tree_on_damaged_messages():
    rng = random.Random(20240601)
    sources = [DSN, *(path.read_bytes() for path in sorted(EXAMPLES.glob("*.eml")))]
    for source in sources:
        for variant in mutations(source, rng, 150):
            assert_same_tree(variant)


def test_same_tree_on_the_bounce_corpus(shared_dir):
    files = sorted((shared_dir / "corpus" / "bounces" / "emails").glob("*.eml"))
    assert files
    for path in files:
        assert_same_tree(path.read_bytes())


def test_headers_are_decoded_on_access():
    msg = mime.parse_message(b"Subject: =?utf-8?q?caf=C3=A9?=\nX-Folded: a\n b\nSubject: second\n\nbody\n")
    assert msg.raw_headers[0] == ("Subject", "=?utf-8?q?caf=C3=A9?=")
    assert msg.header("subject") == "café"
    assert msg.header_all("SUBJECT") == ["café", "second"]
    assert msg.headers == [("Subject", "café"), ("X-Folded", "a b"), ("Subject", "second")]
    assert msg.fields({"x-folded"}) == [("X-Folded", "a b")]
    assert msg.header("missing") is None
