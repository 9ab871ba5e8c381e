"""Hostile and broken input through parsers.parse_bytes, the entry point the
daemon uses: every input gives `unparseable` or a correct event, never an
exception, and stays within bounded memory. Hypothesis supplies random bytes
and random mutations of valid bounces and complaints; the hand-made cases
cover what real mailboxes deliver (truncated MIME, lying charsets, 8-bit
headers, deep nesting, huge attachments and headers)."""

from __future__ import annotations

import base64
import json
import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import parse_bytes
from parsers.events import AnyEvent, Event, UnparseableEvent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KINDS = {"bounce", "feedback", "auto_reply", "delivery_success", "not_bounce", "dmarc_aggregate", "dmarc_failure",
         "tls_report", "unparseable"}
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def base(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


ARF = "arf-abuse-yahoo-style.eml"
DSN = "dsn-postfix-hard-and-soft.eml"
EXIM = "bounce-exim-plain.eml"
VACATION = "autoreply-out-of-office.eml"
BASES = [ARF, DSN, EXIM, VACATION, "arf-opt-out.eml"]


def checked(data: bytes) -> list[AnyEvent]:
    """parse_bytes must answer with typed events that serialise as UTF-8 JSON.
    An exception inside a parser is turned into `unparseable: parser error`
    by parse_bytes so the daemon survives; here it counts as the bug it is."""
    events = parse_bytes(data)
    assert isinstance(events, list) and events
    for event in events:
        assert isinstance(event, Event)
        assert event.kind in KINDS
        if isinstance(event, UnparseableEvent):
            assert not event.error.startswith("parser error"), event.error
        json.dumps(event.to_dict(), ensure_ascii=False).encode("utf-8")  # raises on lone surrogates
    return events


def summary(events: Sequence[Event]) -> list[tuple]:
    return [(e.kind, getattr(e, "recipient", None), getattr(e, "feedback_type", None), getattr(e, "hard_or_soft", None))
            for e in events]


EXPECTED = {name: summary(parse_bytes(base(name))) for name in BASES}


def test_bases_are_what_the_fuzzing_assumes():
    assert EXPECTED[ARF] == [("feedback", "reader-417@example.net", "abuse", None)]
    assert [k for k, *_ in EXPECTED[DSN]] == ["bounce", "bounce"]
    assert EXPECTED[VACATION][0][0] == "auto_reply"


# --- hypothesis ---------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes(data):
    checked(data)


@FUZZ
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), st.text(max_size=80)),
                max_size=12),
       st.binary(max_size=500))
def test_random_headers_and_body(fields, body):
    head = "".join(f"{name}: {value.replace(chr(10), ' ').replace(chr(13), ' ')}\n" for name, value in fields)
    checked(head.encode("utf-8", "surrogatepass") + b"\n" + body)


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("delete_line"), st.floats(0, 1)),
    st.tuples(st.just("duplicate_line"), st.floats(0, 1)),
    st.tuples(st.just("insert_line"), st.floats(0, 1), st.binary(max_size=120)),
    st.tuples(st.just("swap_lines"), st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("content_type"), st.floats(0, 1), st.sampled_from([
        b"Content-Type: multipart/report", b"Content-Type: multipart/mixed; boundary=", b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; charset=utf-7", b"Content-Type: text/plain; charset=\"x-\x00\"",
        b"Content-Type: message/feedback-report", b"Content-Type: message/delivery-status",
        b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Type: multipart/alternative; boundary=\"==arf-5d1c0e\"",
    ])),
)


def mutate(data: bytes, mutation: tuple) -> bytes:
    lines = data.split(b"\n")
    at = lambda fraction, size: min(int(fraction * size), max(size - 1, 0))  # noqa: E731
    kind = mutation[0]
    if kind == "truncate":
        return data[: int(mutation[1] * len(data))]
    if kind == "flip":
        i = at(mutation[1], len(data))
        return data[:i] + bytes([mutation[2]]) + data[i + 1:]
    i = at(mutation[1], len(lines))
    if kind == "delete_line":
        del lines[i]
    elif kind == "duplicate_line":
        lines.insert(i, lines[i])
    elif kind == "insert_line":
        lines.insert(i, mutation[2].replace(b"\n", b" "))
    elif kind == "swap_lines":
        j = at(mutation[2], len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "content_type":
        lines.insert(i, mutation[2])
    return b"\n".join(lines)


@FUZZ
@given(st.sampled_from(BASES), st.lists(MUTATIONS, min_size=1, max_size=5))
def test_random_mutations_of_valid_messages(name, mutations):
    data = base(name)
    for mutation in mutations:
        data = mutate(data, mutation)
    checked(data)


@FUZZ
@given(st.sampled_from([ARF, DSN, EXIM, "arf-opt-out.eml"]),
       st.lists(st.tuples(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True), st.binary(max_size=100)), max_size=8),
       st.text(max_size=120))
def test_header_noise_keeps_the_same_events(name, junk, subject):
    """Extra header fields (8-bit, encoded words, anything) and a random
    subject in the top header block do not change what a report says."""
    data = base(name)
    noise = b"".join(k.encode() + b": " + v.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for k, v in junk)
    subject_line = b"Subject: " + subject.replace("\n", " ").replace("\r", " ").encode("utf-8", "surrogatepass") + b"\n"
    head, sep, rest = data.partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n") if not line.startswith(b"Subject:"))
    assert summary(checked(noise + head + b"\n" + subject_line + sep + rest)) == EXPECTED[name]


CONTENT_TYPES = ["text/plain", "text/html", "message/rfc822", "message/feedback-report", "message/delivery-status",
                 "text/rfc822-headers", "application/octet-stream", "application/gzip", "application/zip",
                 "message/global", "text/rfc822-header"]
LEAF_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"Feedback-Type: abuse\nOriginal-Rcpt-To: r@example.net\n",
                     b"Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; r@example.net\nAction: failed\nStatus: 5.1.1\n",
                     b"From: a@example.com\nX-Repmon-Track: v1.abcdefgh\n\nhi\n", b"PK\x03\x04", b"\x1f\x8b\x08\x00",
                     b'<?xml version="1.0"?><feedback>', b'{"notificationType":"Complaint"']),
)


@st.composite
def mime_leaf(draw) -> bytes:
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=utf-7", "; charset=x-bogus", '; charset="utf\x00"']))
    cte = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "x-uuencode", "bogus"]))
    head = f"Content-Type: {ctype}{charset}\n" + (f"Content-Transfer-Encoding: {cte}\n" if cte else "")
    return head.encode() + b"\n" + draw(LEAF_BODIES)


def mime_container(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw) -> bytes:
        kind = draw(st.sampled_from(["multipart/mixed", "multipart/report; report-type=feedback-report",
                                     "multipart/report; report-type=delivery-status", "multipart/alternative", "message/rfc822"]))
        parts = draw(st.lists(children, min_size=0, max_size=4))
        if kind == "message/rfc822":
            return b"Content-Type: message/rfc822\n\nFrom: x@example.com\n" + (parts[0] if parts else b"\nhello")
        boundary = draw(st.sampled_from(["b1", "b2", "=_x", ""]))
        body = b"".join(b"--" + boundary.encode() + b"\n" + p + b"\n" for p in parts)
        closing = draw(st.booleans())
        return (f'Content-Type: {kind}; boundary="{boundary}"\n\n').encode() + body + (
            b"--" + boundary.encode() + b"--\n" if closing else b"")
    return build()


MIME_TREES = st.recursive(mime_leaf(), mime_container, max_leaves=12)


@FUZZ
@given(MIME_TREES)
def test_random_mime_trees(tree):
    checked(b"From: fbl@example.org\nTo: abuse@example.com\nSubject: t\nMIME-Version: 1.0\n" + tree)


ARF_FIELDS = (
    "From: fbl@feedback.example.org\nTo: abuse@example.com\nSubject: report\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
    "--B\nContent-Type: text/plain\n\nreport\n--B\nContent-Type: message/feedback-report\n\n"
    "Feedback-Type: {type}\nVersion: 1\nOriginal-Rcpt-To: {rcpt}\nSource-IP: {ip}\nArrival-Date: {date}\n"
    "Reported-Domain: {domain}\n--B--\n"
)


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


@FUZZ
@given(st.sampled_from(["abuse", "fraud", "virus", "other", "not-spam", "opt-out", "auth-failure"]),
       st.text(max_size=60).map(one_line), st.text(max_size=60).map(one_line), st.text(max_size=60).map(one_line),
       st.text(max_size=60).map(one_line))
def test_arf_with_random_field_values(feedback_type, rcpt, ip, date, domain):
    fields = ARF_FIELDS.format(type=feedback_type.upper(), rcpt=rcpt, ip=ip, date=date, domain=domain)
    data = fields.encode("utf-8", "surrogatepass")
    feedback = [e for e in checked(data) if e.kind == "feedback"]
    assert len(feedback) == 1
    event = feedback[0]
    assert event.feedback_type == feedback_type
    assert event.arrival_date is None or event.arrival_date.tzinfo is not None
    if event.source_ip is not None:
        import ipaddress

        ipaddress.ip_address(event.source_ip)


# --- hand-made cases ----------------------------------------------------------------------

def test_truncated_arf_keeps_the_complaint():
    data = base(ARF)
    cut = data.index(b"Subject: Summer catalogue is here\nDate")  # inside the embedded message's header
    assert summary(checked(data[:cut])) == EXPECTED[ARF]


def test_truncated_dsn_keeps_the_recipients_it_reached():
    data = base(DSN)
    cut = data.index(b"--4R1vQ82mZbz4wx.1781252140/mta2.example.com\nContent-Description: Undelivered Message Headers")
    events = checked(data[:cut])
    assert [(e.kind, e.recipient) for e in events] == [("bounce", "nobody-here@example.net"), ("bounce", "full.box@example.org")]


def test_truncated_in_the_middle_of_the_header():
    for data in (base(ARF)[:300], b"From: a@example.com\nSubject: =?utf-8?B?w6", b"Received: from x\n\t(by"):
        checked(data)


@pytest.mark.parametrize("charset", ["x-unknown", "utf-16", "utf-7", "unicode_escape", "rot13", "utf\x008", "undefined",
                                     "idna", "punycode", "\"\"", "iso-8859-1; format=flowed"])
def test_wrong_and_unknown_charsets(charset):
    data = base(VACATION).replace(b'charset="utf-8"', b'charset="' + charset.encode() + b'"')
    assert summary(checked(data)) == EXPECTED[VACATION]
    header = f"Subject: =?{charset}?Q?caf=C3=A9?= =?{charset}?B?w6k=?=\n".encode()
    checked(b"From: a@example.com\n" + header + b"\nbody\n")


def test_arf_whose_human_part_lies_about_its_charset():
    data = base(ARF).replace(b'Content-Type: text/plain; charset="us-ascii"',
                             b'Content-Type: text/plain; charset="x-mac-klingon"')
    assert summary(checked(data)) == EXPECTED[ARF]


def test_eight_bit_headers_are_decoded_not_replaced():
    utf8 = checked(b"From: Ren\xc3\xa9 <r@example.com>\nSubject: caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n\nhi\n")
    assert utf8[0].subject == "café 日本"
    latin1 = checked(b"From: r@example.com\nSubject: caf\xe9 cr\xe8me\n\nhi\n")
    assert latin1[0].subject == "café crème"
    mixed = checked(b"From: r@example.com\nSubject: \xc3\xa9t\xc3\xa9 =?utf-8?q?=C3=A0?= \xe6\x97\xa5\n\nhi\n")
    assert mixed[0].subject == "été à 日"


@pytest.mark.parametrize("word", [b"=?utf-7?Q?+2AA-?=", b"=?unicode_escape?Q?=5Cud800?=", b"=?raw_unicode_escape?Q?=5Cudc80?="])
def test_charsets_that_decode_to_lone_surrogates(word):
    [event] = checked(b"From: a@example.com\nSubject: x " + word + b" y\n\nbody\n")
    assert event.subject.startswith("x ") and event.subject.endswith(" y")


def test_binary_and_nul_bytes_in_headers():
    checked(b"From: \x00\x01\x02 <a@example.com>\nSubject: \xff\xfe\xfd\x00\nMessage-ID: <\xed\xa0\x80@x>\n\n\x00\xff")


def nested(levels: int, innermost: bytes) -> bytes:
    data = innermost
    for level in range(levels):
        data = (f"From: relay{level}@example.org\nSubject: Fwd level {level}\nMIME-Version: 1.0\n"
                "Content-Type: message/rfc822\n\n").encode() + data
    return data


def test_message_rfc822_nested_20_deep():
    [event] = checked(nested(20, b"From: x@example.com\nSubject: innermost\n\nhello\n"))
    assert event.kind == "not_bounce" and event.subject == "Fwd level 19"


def test_dsn_returning_a_message_nested_20_deep():
    data = base(DSN).replace(b"Content-Type: text/rfc822-headers\n\n",
                             b"Content-Type: message/rfc822\n\n" + nested(20, b"From: x@example.com\n\nhi\n"))
    assert summary(checked(data)) == EXPECTED[DSN]


def test_nesting_far_beyond_the_limits():
    checked(nested(3000, b"From: x@example.com\n\nhi\n"))
    multipart = b"x\n"
    for level in range(3000):
        head = b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (level, level)
        multipart = head + multipart + b"\n--b%d--\n" % level
    checked(b"From: x@example.com\nMIME-Version: 1.0\n" + multipart)


def test_fifty_megabyte_attachment_in_a_bounce_in_bounded_memory():
    """A DSN returning a message with a 50 MB attachment: the bounce is still
    read correctly, and the parser's peak memory stays below 10x the input."""
    attachment = base64.encodebytes(random.Random(7).randbytes(37 * 1024 * 1024))
    original = (b"From: news@example.com\nTo: nobody-here@example.net\nSubject: big\nMIME-Version: 1.0\n"
                b'Content-Type: multipart/mixed; boundary="ATT"\n\n--ATT\nContent-Type: text/plain\n\nsee attached\n'
                b"--ATT\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
                b'Content-Disposition: attachment; filename="big.bin"\n\n' + attachment + b"--ATT--\n")
    data = base(DSN).replace(b"Content-Type: text/rfc822-headers\n\n", b"Content-Type: message/rfc822\n\n" + original)
    del attachment, original
    assert len(data) > 50_000_000
    tracemalloc.start()
    try:
        events = checked(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary(events) == EXPECTED[DSN]
    assert peak < 10 * len(data), f"peak {peak / 1e6:.0f} MB for {len(data) / 1e6:.0f} MB of input"


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n", b"\x00" * 64, b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
                                  random.Random(1).randbytes(20000), b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"])
def test_empty_and_binary_files_are_unparseable(data):
    [event] = checked(data)
    assert isinstance(event, UnparseableEvent) and event.error


def test_multipart_without_boundary():
    for name in (ARF, DSN):
        data = base(name)
        head, sep, rest = data.partition(b"\n\n")
        head = b"\n".join(line for line in head.split(b"\n") if b"boundary=" not in line)
        head = head.replace(b"report-type=feedback-report;", b"report-type=feedback-report")
        events = checked(head + sep + rest)
        if name == ARF:  # the fields are still found in the undivided body
            assert [(e.kind, e.feedback_type) for e in events] == [("feedback", "abuse")]
    checked(b"From: a@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n")


def test_huge_header_line_and_many_headers():
    huge = b"From: a@example.com\nX-Huge: " + b"a" * 10_000_000 + b"\nSubject: still here\n\nbody\n"
    [event] = checked(huge)
    assert event.subject == "still here"
    received = b"".join(b"Received: from h%d by relay\n" % i for i in range(100_000))
    many = b"From: a@example.com\n" + received + b"Subject: x\n\nb\n"
    checked(many)
    words = b"From: a@example.com\nSubject: " + b"=?utf-8?b?w6k=?= " * 200_000 + b"\n\nbody\n"
    [event] = checked(words)
    assert event.subject.startswith("éééé")


def test_thousands_of_parts_and_recipients():
    parts = b"".join(b"--X\nContent-Type: text/plain\n\npart %d\n" % i for i in range(20_000))
    checked(b"From: a@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=X\n\n" + parts + b"--X--\n")
    rcpts = b"".join(b"Original-Rcpt-To: user%d@example.org\n" % i for i in range(20_000))
    data = base("arf-opt-out.eml").replace(b"Original-Rcpt-To: <m.rossi@isp.example.org>\n", rcpts)
    events = checked(data)
    assert len(events) == 20_000 and events[-1].recipient == "user19999@example.org"


def test_crlf_and_cr_only_line_endings():
    crlf = base(ARF).replace(b"\n", b"\r\n")
    assert summary(checked(crlf)) == EXPECTED[ARF]
    checked(base(DSN).replace(b"\n", b"\r"))


def test_mbox_from_line_before_the_header():
    assert summary(checked(b"From MAILER-DAEMON Fri Jun 12 08:15:40 2026\n" + base(DSN))) == EXPECTED[DSN]
