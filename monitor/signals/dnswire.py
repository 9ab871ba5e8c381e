"""The DNS wire format for the one thing blocklist polling does 10,000 times a
cycle: a single-question query and the A / TXT records of its answer.

dnspython's full message parser costs ~100 us per reply (it builds Name and
RRset objects for every section); this decoder reads the header, checks the
question and walks the answer section only, which is ~10x cheaper. Names are
still encoded by dnspython (escapes, IDNA, length limits). A test compares
this decoder with dnspython's on generated messages.

Strict by design: anything malformed raises WireError, which the client turns
into an error outcome - never into "not listed".
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import dns.name
import dns.rdatatype

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")
FLAG_QR = 0x8000
FLAG_TC = 0x0200
FLAG_RD = 0x0100
OPCODE_MASK = 0x7800
CLASS_IN = 1
TYPE_A = dns.rdatatype.A.value
TYPE_AAAA = dns.rdatatype.AAAA.value
TYPE_CNAME = dns.rdatatype.CNAME.value
TYPE_TXT = dns.rdatatype.TXT.value
MAX_POINTER_HOPS = 64

Labels = tuple[bytes, ...]  # lower-cased labels, root excluded


class WireError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Question:
    labels: Labels
    rdtype: int


@dataclass(slots=True)
class Record:
    owner: Labels
    rdtype: int
    rdata_offset: int
    rdata_length: int


@dataclass(slots=True)
class WireReply:
    id: int
    flags: int
    question: Question | None
    records: list[Record] = field(default_factory=list)  # the answer section
    data: bytes = b""

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)


def make_question(name: str, rdtype: int | str) -> tuple[Question, bytes]:
    """The question and its wire form (name, type, class IN)."""
    parsed = dns.name.from_text(name)
    code = dns.rdatatype.RdataType.make(rdtype).value
    labels = tuple(label.lower() for label in parsed.labels if label)
    wire = parsed.to_wire()
    assert wire is not None  # without a file argument to_wire returns the bytes
    return Question(labels, code), wire + struct.pack("!HH", code, CLASS_IN)


def encode_query(query_id: int, question_wire: bytes) -> bytes:
    """A recursive query (RD set), no EDNS: replies stay small and plain."""
    return HEADER.pack(query_id, FLAG_RD, 1, 0, 0, 0) + question_wire


def read_name(data: bytes, offset: int) -> tuple[Labels, int]:
    """Decode a possibly compressed name; returns (labels, offset after the name)."""
    labels: list[bytes] = []
    end: int | None = None
    hops = 0
    size = len(data)
    while True:
        if offset >= size:
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                raise WireError("truncated compression pointer")
            pointer = ((length & 0x3F) << 8) | data[offset + 1]
            if end is None:
                end = offset + 2
            hops += 1
            if hops > MAX_POINTER_HOPS or pointer >= size:
                raise WireError("bad compression pointer")
            offset = pointer
            continue
        if length & 0xC0:
            raise WireError("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > size:
            raise WireError("label runs past the end of the message")
        labels.append(data[offset:offset + length].lower())
        offset += length
    return tuple(labels), (end if end is not None else offset)


def decode_reply(data: bytes) -> WireReply:
    if len(data) < HEADER.size:
        raise WireError("message shorter than a DNS header")
    query_id, flags, qdcount, ancount, _nscount, _arcount = HEADER.unpack_from(data)
    offset = HEADER.size
    question = None
    for index in range(qdcount):
        labels, offset = read_name(data, offset)
        if offset + 4 > len(data):
            raise WireError("truncated question")
        rdtype, _rdclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        if index == 0:
            question = Question(labels, rdtype)
    reply = WireReply(query_id, flags, question if qdcount == 1 else None, data=data)
    for _ in range(ancount):
        owner, offset = read_name(data, offset)
        if offset + RR_FIXED.size > len(data):
            raise WireError("truncated resource record")
        rdtype, rdclass, _ttl, rdlength = RR_FIXED.unpack_from(data, offset)
        offset += RR_FIXED.size
        if offset + rdlength > len(data):
            raise WireError("record data runs past the end of the message")
        if rdclass == CLASS_IN:
            reply.records.append(Record(owner, rdtype, offset, rdlength))
        offset += rdlength
    return reply


def answers_question(reply: WireReply, query_id: int, question: Question) -> bool:
    """A reply to *this* query: our id, a response, a standard query, same question.

    A truncated reply may come without its question section (some servers
    send just the header); it is accepted only as the signal to retry over
    TCP - it carries no answers, and the TCP reply is checked in full.
    """
    if reply.id != query_id or not reply.flags & FLAG_QR or reply.flags & OPCODE_MASK:
        return False
    if reply.question is None and reply.truncated and not reply.records:
        return True
    return reply.question == question


def answer_values(reply: WireReply, question: Question) -> list[str]:
    """The A/AAAA addresses or TXT strings for the question's name, following CNAMEs.

    Records owned by other names are ignored: a resolver padding the answer
    section with unrelated records must not turn them into a listing.
    """
    names = {question.labels}
    values: list[str] = []
    data = reply.data
    for record in reply.records:
        if record.owner not in names:
            continue
        start, length = record.rdata_offset, record.rdata_length
        if record.rdtype == TYPE_CNAME:
            target, _ = read_name(data, start)
            names.add(target)
        elif record.rdtype != question.rdtype:
            continue
        elif record.rdtype == TYPE_A:
            if length != 4:
                raise WireError("A record with a bad length")
            values.append(socket.inet_ntop(socket.AF_INET, data[start:start + 4]))
        elif record.rdtype == TYPE_AAAA:
            if length != 16:
                raise WireError("AAAA record with a bad length")
            values.append(socket.inet_ntop(socket.AF_INET6, data[start:start + 16]))
        elif record.rdtype == TYPE_TXT:
            values.append(_read_txt(data, start, length))
    return values


def _read_txt(data: bytes, start: int, length: int) -> str:
    chunks = []
    offset, end = start, start + length
    while offset < end:
        size = data[offset]
        offset += 1
        if offset + size > end:
            raise WireError("TXT string runs past its record")
        chunks.append(data[offset:offset + size])
        offset += size
    return b"".join(chunks).decode("utf-8", "replace")
