"""Our fast DNS reply decoder agrees with dnspython, and refuses malformed input."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.signals.dnsclient import read_reply
from monitor.signals.dnswire import (
    WireError,
    answer_values,
    answers_question,
    decode_reply,
    encode_query,
    make_question,
    read_name,
)

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(label, min_size=1, max_size=6).map(lambda parts: ".".join(parts) + ".bl.test")
octets = st.integers(min_value=0, max_value=255)
ipv4 = st.tuples(octets, octets, octets, octets).map(lambda t: ".".join(map(str, t)))
txts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=400)


def _reply(qname: str, rdtype: str, values: list[str], *, extra_owner: str | None = None,
           rcode: int = dns.rcode.NOERROR, authority: bool = True) -> tuple[dns.message.Message, bytes]:
    query = dns.message.make_query(qname, rdtype)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    if values:
        if rdtype == "TXT":
            quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
            response.answer.append(dns.rrset.from_text(qname + ".", 60, "IN", "TXT", *quoted))
        else:
            response.answer.append(dns.rrset.from_text(qname + ".", 60, "IN", rdtype, *values))
    if extra_owner:
        response.answer.append(dns.rrset.from_text(extra_owner + ".", 60, "IN", "A", "127.0.0.2"))
    if authority:
        response.authority.append(dns.rrset.from_text("bl.test.", 60, "IN", "NS", "ns1.bl.test."))
    return query, response.to_wire()


@settings(max_examples=150, deadline=None)
@given(qname=names, addresses=st.lists(ipv4, max_size=5, unique=True))
def test_a_answers_match_dnspython(qname, addresses):
    query, wire = _reply(qname, "A", addresses)
    question, _ = make_question(qname, "A")
    ours = decode_reply(wire)
    theirs = dns.message.from_wire(wire)
    assert answers_question(ours, query.id, question)
    expected = sorted(r.address for rrset in theirs.answer for r in rrset)
    assert sorted(answer_values(ours, question)) == expected


@settings(max_examples=100, deadline=None)
@given(qname=names, texts=st.lists(txts, min_size=1, max_size=3, unique=True))
def test_txt_answers_match_dnspython(qname, texts):
    query, wire = _reply(qname, "TXT", texts)
    question, _ = make_question(qname, "TXT")
    theirs = dns.message.from_wire(wire)
    expected = sorted(b"".join(r.strings).decode("utf-8", "replace") for rrset in theirs.answer for r in rrset)
    assert sorted(answer_values(decode_reply(wire), question)) == expected


def test_records_of_other_names_are_ignored():
    query, wire = _reply("2.0.2.192.zen.bl.test", "A", [], extra_owner="9.9.9.9.zen.bl.test")
    question, _ = make_question("2.0.2.192.zen.bl.test", "A")
    assert answer_values(decode_reply(wire), question) == []


def test_cname_chain_is_followed():
    query = dns.message.make_query("alias.bl.test", "A")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("alias.bl.test.", 60, "IN", "CNAME", "real.bl.test."))
    response.answer.append(dns.rrset.from_text("real.bl.test.", 60, "IN", "A", "127.0.0.4"))
    question, _ = make_question("alias.bl.test", "A")
    assert answer_values(decode_reply(response.to_wire()), question) == ["127.0.0.4"]


def test_reply_to_another_question_is_not_accepted():
    query, wire = _reply("a.bl.test", "A", ["127.0.0.2"])
    other, _ = make_question("b.bl.test", "A")
    assert not answers_question(decode_reply(wire), query.id, other)
    same, _ = make_question("A.BL.TEST", "A")  # case does not matter
    assert answers_question(decode_reply(wire), query.id, same)
    assert not answers_question(decode_reply(wire), (query.id + 1) % 65536, same)


def test_query_encoding_is_what_dnspython_reads():
    question, wire_question = make_question("4.3.2.1.zen.spamhaus.org", "A")
    message = dns.message.from_wire(encode_query(4242, wire_question))
    assert message.id == 4242 and message.flags & dns.flags.RD
    assert str(message.question[0].name) == "4.3.2.1.zen.spamhaus.org."


@pytest.mark.parametrize("rcode, outcome", [(dns.rcode.NXDOMAIN, "nxdomain"), (dns.rcode.SERVFAIL, "servfail"),
                                            (dns.rcode.REFUSED, "refused"), (dns.rcode.FORMERR, "rcode")])
def test_rcodes(rcode, outcome):
    _, wire = _reply("x.bl.test", "A", [], rcode=rcode)
    question, _ = make_question("x.bl.test", "A")
    assert read_reply(decode_reply(wire), question).outcome == outcome


def test_pointer_loop_is_refused():
    data = b"\x00" * 12 + b"\xc0\x0c"  # a name pointing at itself
    with pytest.raises(WireError):
        read_name(data, 12)


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200), noise=st.binary(max_size=40))
def test_truncated_or_garbled_replies_raise_wire_error_only(cut, noise):
    _, wire = _reply("10.2.0.192.zen.bl.test", "A", ["127.0.0.2", "127.0.0.4"])
    for data in (wire[:cut], wire[:cut] + noise):
        try:
            reply = decode_reply(data)
            question, _ = make_question("10.2.0.192.zen.bl.test", "A")
            answer_values(reply, question)
        except WireError:
            pass


def test_a_record_with_wrong_length_is_an_error():
    _, wire = _reply("x.bl.test", "A", ["127.0.0.2"], authority=False)
    # rdlength is the last 2 bytes before the 4-byte address: make it 3 and drop one byte
    broken = wire[:-6] + struct.pack("!H", 3) + wire[-4:-1]
    question, _ = make_question("x.bl.test", "A")
    with pytest.raises(WireError):
        answer_values(decode_reply(broken), question)


def test_question_less_reply_is_accepted_only_as_a_truncation_signal():
    question, _ = make_question("x.bl.test", "A")
    truncated = struct.pack("!HHHHHH", 77, 0x8000 | 0x0200 | 0x0100, 0, 0, 0, 0)
    assert answers_question(decode_reply(truncated), 77, question)
    assert decode_reply(truncated).truncated
    not_truncated = struct.pack("!HHHHHH", 77, 0x8000 | 0x0100, 0, 0, 0, 0)
    assert not answers_question(decode_reply(not_truncated), 77, question)
    assert not answers_question(decode_reply(truncated), 78, question)
