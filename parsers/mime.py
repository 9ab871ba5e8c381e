"""One small view of a MIME message that every mail parser reads.

The standard library's lenient parser (policy compat32) reads the structure.
flanker's MIME parser was measured on the bounce corpus first: a full walk ran
at about 870 messages/s against about 2,900/s here, and it raised on 10 of 380
real bounces (e.g. a multipart without a boundary), which a bounce processor
must still classify. Parsers see only `MailPart`, so the reader can change
without touching them.

Speed: FeedParser reads line by line in Python, which made it half the
cost of parsing a bounce (bounces quote whole original messages). Well-formed
input is therefore read by `_FastReader`, which builds the very Message tree
FeedParser would (tests/test_bounce_mime_reader.py compares them) by jumping
between boundary lines; odd shapes still go to FeedParser. Header values are
unfolded and decoded only when a parser reads them.

Limits keep hostile input bounded: nesting depth, number of parts and the size
of text that is decoded are capped; what lies beyond a cap is ignored, not
failed on.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.message
import email.policy
import email.utils
import quopri
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from email.feedparser import NLCRE as _NLCRE  # type: ignore[attr-defined]  # FeedParser's own patterns, reused
from email.feedparser import headerRE as _HEADER_RE  # type: ignore[attr-defined]
from itertools import islice

MAX_DEPTH = 32
MAX_PARTS = 500
MAX_TEXT_BYTES = 2 * 1024 * 1024  # decoded text kept per part; a bounce never needs more
MAX_HEADERS = 1000  # header fields kept per part; real mail has tens
MAX_DECODED_HEADER = 64 * 1024  # encoded words decoded per header value
# Lone surrogates (from utf-7 / unicode_escape labels or undecodable bytes)
# cannot be written as UTF-8: JSON output and storage would fail on them.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# A message opens with a header field name and colon (or an mbox "From " line).
_FIRST_LINE_RE = re.compile(rb"From |[!-9;-~]+[ \t]*:")

# message/* types whose content is a block of header-like fields, not a message.
FIELD_BLOCK_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "message/feedback-report",
     "message/disposition-notification", "message/global-disposition-notification"}
)
ENCLOSING_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers",
                             "message/rfc822-headers", "text/rfc822"})


class MimeError(ValueError):
    """The bytes are not a message at all (no backend could read them)."""


@dataclass(slots=True)
class MailPart:
    content_type: str  # lower-case "main/sub"
    params: dict[str, str]
    # (name as written, value as read): values are unfolded and decoded on
    # first access (`headers`, `header`), since most header fields of most
    # parts (those of a returned original message above all) are never read.
    raw_headers: list[tuple[str, str]]
    payload: bytes = b""  # transfer-decoded content of a leaf part
    children: list[MailPart] = field(default_factory=list)
    _values: list[str | None] | None = field(default=None, init=False, repr=False, compare=False)
    _index: dict[str, list[int]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Fields in order, names as written, values unfolded and decoded."""
        return [(name, self._value(i)) for i, (name, _) in enumerate(self.raw_headers)]

    def _value(self, i: int) -> str:
        values = self._values
        if values is None:
            values = self._values = [None] * len(self.raw_headers)
        value = values[i]
        if value is None:
            value = values[i] = decode_header_value(_header_text(self.raw_headers[i][1]))
        return value

    def _positions(self, lname: str) -> list[int]:
        index = self._index
        if index is None:
            index = self._index = {}
            for i, (key, _) in enumerate(self.raw_headers):
                index.setdefault(key.lower(), []).append(i)
        return index.get(lname, [])

    def header(self, name: str) -> str | None:
        positions = self._positions(name.lower())
        return self._value(positions[0]) if positions else None

    def header_all(self, name: str) -> list[str]:
        return [self._value(i) for i in self._positions(name.lower())]

    def fields(self, lower_names: Collection[str]) -> list[tuple[str, str]]:
        """The decoded fields whose lower-case name is in `lower_names`, in
        order: `headers` without decoding the others."""
        return [(name, self._value(i)) for i, (name, _) in enumerate(self.raw_headers) if name.lower() in lower_names]

    @property
    def charset(self) -> str:
        return self.params.get("charset", "") or "utf-8"

    def text(self) -> str:
        """The payload decoded with its charset; unknown charsets fall back to
        UTF-8 and then Latin-1 so text is never lost to a label."""
        data = self.payload[:MAX_TEXT_BYTES]
        return decode_bytes(data, self.charset)

    def walk(self) -> Iterator[MailPart]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, *content_types: str) -> MailPart | None:
        for part in self.walk():
            if part.content_type in content_types:
                return part
        return None


def decode_bytes(data: bytes, charset: str = "utf-8") -> str:
    charset = (charset or "utf-8").strip().strip('"').lower()
    if charset in ("us-ascii", "ascii", "ansi_x3.4-1968"):
        charset = "utf-8"  # 8-bit bytes are common under a us-ascii label
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeError, ValueError):  # unknown, unusable or malformed label
        text = None
    if text is not None and (text.isascii() or not _SURROGATE_RE.search(text)):
        return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_header_value(value: str) -> str:
    """RFC 2047 words decoded, folding removed; never raises."""
    if "\n" in value:
        value = value.replace("\r\n", "\n").replace("\n\t", " ").replace("\n ", " ").replace("\n", " ")
    if "=?" not in value:
        return value.strip()
    if len(value) > MAX_DECODED_HEADER:  # the stdlib decoder is quadratic in the number of words
        return decode_header_value(value[:MAX_DECODED_HEADER]) + value[MAX_DECODED_HEADER:].rstrip()
    try:
        pieces = email.header.decode_header(value)
    except Exception:  # malformed encoded words: keep the raw text
        return value.strip()
    out = []
    for chunk, charset in pieces:
        if not isinstance(chunk, bytes):
            out.append(chunk)
        elif charset:
            out.append(decode_bytes(chunk, charset))
        else:  # text outside encoded words comes back raw-unicode-escape encoded
            try:
                out.append(chunk.decode("raw-unicode-escape"))
            except UnicodeDecodeError:
                out.append(chunk.decode("latin-1"))
    text = "".join(out).strip()
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def split_header_block(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Header fields of a header block (as in a DSN or ARF part) and the rest.
    Tolerates CRLF, a missing final blank line and garbage lines."""
    text = data.replace(b"\r\n", b"\n")
    head, sep, rest = text.partition(b"\n\n")
    return parse_fields(head.decode("utf-8", "replace")), rest if sep else b""


def parse_fields(text: str) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        if line[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name and " " not in name.strip():
            fields.append((name.strip(), value.strip()))
    return [(name, decode_header_value(value)) for name, value in fields]


def field_blocks(data: bytes) -> list[list[tuple[str, str]]]:
    """A DSN body is several blank-line separated blocks of fields (RFC 3464):
    the per-message block first, then one per recipient."""
    text = data.replace(b"\r\n", b"\n").decode("utf-8", "replace")
    blocks = []
    for chunk in text.split("\n\n"):
        fields = parse_fields(chunk)
        if fields:
            blocks.append(fields)
    return blocks


def parse_message(data: bytes) -> MailPart:
    """Read raw bytes into a MailPart tree; raises MimeError only when the bytes
    hold no header at all."""
    if not data or not data.strip():
        raise MimeError("empty input")
    head = data[:4096].lstrip()
    if not _FIRST_LINE_RE.match(head):
        raise MimeError("input does not start with a mail header")
    return _from_stdlib(data)


# --- standard library backend --------------------------------------------------

def _from_stdlib(data: bytes) -> MailPart:
    message = _message_from_bytes(data)
    return _convert_stdlib(message, 0, [MAX_PARTS])


def _header_text(value) -> str:
    """A raw header value; 8-bit bytes (kept as surrogate escapes by the
    stdlib) are read as UTF-8, else Latin-1, instead of being replaced."""
    value = str(value)
    if value.isascii():
        return value
    try:
        return decode_bytes(value.encode("ascii", "surrogateescape"), "utf-8")
    except UnicodeEncodeError:  # real non-ASCII characters, not escaped bytes
        return _SURROGATE_RE.sub("\ufffd", value)


def _rfc2231_text(value) -> str:
    try:
        text = email.utils.collapse_rfc2231_value(value)
    except (LookupError, UnicodeError, ValueError):  # a charset label the codec machinery rejects
        text = value[2] if isinstance(value, tuple) and len(value) == 3 else str(value)
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def _encoded_field_block(message, blocks) -> bytes:
    """A field block sent base64- or quoted-printable-encoded (Netease's DMARC
    failure reports): compat32 reads the encoded text as a body without
    header fields, so decode that body instead. (H3)"""
    text = "".join(b.get_payload() for b in blocks if isinstance(b.get_payload(), str))
    encoding = str(message.get("Content-Transfer-Encoding", "")).strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode("".join(text.split()))
        if encoding == "quoted-printable":
            return quopri.decodestring(text.encode("utf-8", "replace"))
    except (binascii.Error, ValueError):
        pass
    return text.encode("utf-8", "replace")


def _content_type(message: email.message.Message) -> tuple[str, str | None]:
    """(message.get_content_type(), the Content-Type value) without the
    Message API's per-call header lookups; non-ASCII values (which compat32
    turns into Header objects) take the API's own way."""
    value = next((v for name, v in message._headers if name.lower() == "content-type"), None)  # type: ignore[attr-defined]
    if value is None:
        return message.get_default_type(), None
    if not isinstance(value, str) or not value.isascii():
        return (message.get_content_type() or "text/plain").lower(), str(value)
    content_type = value.partition(";")[0].strip().lower()
    return (content_type if content_type.count("/") == 1 else "text/plain"), value


def _convert_stdlib(message, depth: int, budget: list[int]) -> MailPart:
    budget[0] -= 1
    content_type, raw = _content_type(message)
    params = {}
    if raw is not None and ";" in raw:  # without ";" get_params() has the type alone
        for key, value in (message.get_params() or [])[1:]:
            params[key.lower()] = value if isinstance(value, str) else _rfc2231_text(value)
    node = MailPart(content_type, params, [(str(k), v) for k, v in islice(message.raw_items(), MAX_HEADERS)])
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return node
    # get_payload() without decode re-decodes 8-bit text with the part's own
    # charset label and raises on labels like "utf\0"; only lists are needed here.
    payload = message.get_payload() if message.is_multipart() else None
    if isinstance(payload, list):
        if content_type in FIELD_BLOCK_TYPES:
            # compat32 parses a delivery-status body into header blocks: put them back together
            # (raw_items and surrogateescape: 8-bit field values, SMTPUTF8 addresses in a
            # utf-8 Final-Recipient, come back as their bytes, not as "?"; compat32 reads
            # message/global-delivery-status as an enclosed message, whose body holds the
            # blocks after the first)
            pieces = []
            for block in payload:
                fields = list(block.raw_items())
                pieces.append(b"".join(f"{k}: {v}\n".encode("utf-8", "surrogateescape") for k, v in fields))
                rest = None if block.is_multipart() or not fields else block.get_payload(decode=True)
                if isinstance(rest, bytes) and rest.strip():
                    pieces.append(rest.replace(b"\r\n", b"\n"))
            node.payload = b"\n".join(pieces)
            if not node.payload.strip():
                node.payload = _encoded_field_block(message, payload)
            return node
        for child in payload:
            if budget[0] <= 0:
                break
            if isinstance(child, email.message.Message):
                node.children.append(_convert_stdlib(child, depth + 1, budget))
        return node
    decoded = message.get_payload(decode=True)
    node.payload = decoded if isinstance(decoded, bytes) else b""
    if content_type in ENCLOSING_TYPES:
        try:
            inner = _message_from_bytes(node.payload)
            node.children.append(_convert_stdlib(inner, depth + 1, budget))
        except Exception:
            pass
    return node




# --- fast reader ---------------------------------------------------------------
# The stdlib FeedParser walks the input line by line in Python, through a
# generator stack: on bounces, which quote whole original messages, that was
# about half of all parsing time. `_fast_message` builds the *same*
# email.message.Message tree (same raw headers, same payload strings, same
# default types) by jumping between boundary lines with str.find. It handles
# the well-formed shapes only; on anything FeedParser treats as a defect
# (missing or repeated boundaries, nested multiparts sharing a boundary, lone
# CR line ends, misplaced "From " lines, very deep nesting) it gives up and the
# stdlib parser reads the message, so behaviour on odd input is the stdlib's.
# tests/test_mime_fast_reader.py compares both trees over sample messages.

# A run of lines FeedParser takes as header lines (its headerRE, line by line).
_HEADER_BLOCK_RE = re.compile(r"(?:(?:From |[\041-\071\073-\176]*:|[\t ])[^\n]*(?:\n|\Z))*")
# One field of such a block: name, colon, value with its continuation lines.
_FIELD_RE = re.compile(r"([^:\n]*):([^\n]*\n?(?:[\t ][^\n]*\n?)*)")
_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+")
_MAX_FAST_DEPTH = 64  # deeper nesting goes to the stdlib parser (and its own limits)


class _Unusual(Exception):
    """The input needs the stdlib parser's defect handling."""


def _message_from_bytes(data: bytes) -> email.message.Message:
    """email.message_from_bytes(data, policy=compat32), faster on well-formed mail."""
    text = data.decode("ascii", "surrogateescape")
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return email.message_from_string(text, policy=email.policy.compat32)
    try:
        return _FastReader(text).part(0, (), False, 0)[0]
    except _Unusual:
        return email.message_from_string(text, policy=email.policy.compat32)


class _FastReader:
    __slots__ = ("text", "size")

    def __init__(self, text: str) -> None:
        self.text = text
        self.size = len(text)

    def _line_end(self, at: int) -> int:
        end = self.text.find("\n", at)
        return self.size if end < 0 else end + 1

    def _boundary_at(self, at: int, stack: tuple) -> tuple[int, bool] | None:
        """(level, closing) when the line at `at` is a boundary line of the
        enclosing multiparts (innermost first, as FeedParser checks them)."""
        if not self.text.startswith("--", at):
            return None
        line = self.text[at:self._line_end(at)]
        for level in range(len(stack) - 1, -1, -1):
            closing = _boundary_line(line, stack[level])
            if closing is not None:
                return level, closing
        return None

    def _next_boundary(self, at: int, stack: tuple) -> tuple[int, int, bool] | None:
        """(position, level, match) of the first boundary line at or after `at`."""
        if not stack:
            return None
        text = self.text
        while at < self.size:
            found = self._boundary_at(at, stack)
            if found is not None:
                return at, found[0], found[1]
            nl = text.find("\n--", at)
            if nl < 0:
                return None
            at = nl + 1
        return None

    def _end_of_body(self, at: int, stack: tuple) -> int:
        found = self._next_boundary(at, stack)
        return self.size if found is None else found[0]

    def part(self, at: int, stack: tuple, in_digest: bool, depth: int):
        """(message, end, last): the message starting at `at`, where its
        input ends, and the message FeedParser would strip a line end from."""
        if depth > _MAX_FAST_DEPTH:
            raise _Unusual
        text = self.text
        header_match = _HEADER_BLOCK_RE.match(text, at)  # never None: the pattern matches the empty string
        block_end = header_match.end() if header_match else at
        block = text[at:block_end]
        if not stack or not (block.startswith("--") or "\n--" in block):
            # no header line can be a boundary line: the block is the header
            if block_end >= self.size:
                body = self.size
            elif text[block_end] in "\r\n":
                body = self._line_end(block_end)  # the blank separator line
            else:
                body = block_end  # a line that is no header field starts the body
            return self._body(self._fields(block), body, stack, in_digest, depth)
        lines: list[str] = []
        body = self.size
        position = at
        while position < self.size:
            if stack and text.startswith("--", position) and self._boundary_at(position, stack):
                body = position  # a false end of input: headers end, the body is empty
                break
            end = self._line_end(position)
            line = text[position:end]
            if not _HEADER_RE.match(line):
                body = position if not _NLCRE.match(line) else end
                break
            lines.append(line)
            position = end
        return self._body(self._headers(lines), body, stack, in_digest, depth)

    def _body(self, headers: list[tuple[str, str]], body: int, stack: tuple, in_digest: bool, depth: int):
        text = self.text
        message = email.message.Message()
        if in_digest:
            message.set_default_type("message/rfc822")
        message._headers = headers  # type: ignore[attr-defined]
        content_type = _content_type(message)[0]
        if content_type == "message/delivery-status":
            return self._delivery_status(message, body, stack)
        maintype = content_type.partition("/")[0]
        if maintype == "message":
            inner, end, last = self.part(body, stack, False, depth + 1)
            message._payload = [inner]  # type: ignore[attr-defined]
            return message, end, last
        if maintype == "multipart":
            return self._multipart(message, content_type, body, stack, depth)
        end = self._end_of_body(body, stack)
        message._payload = text[body:end]  # type: ignore[attr-defined]
        return message, end, message

    def _fields(self, block: str) -> list[tuple[str, str]]:
        """The header fields of a header block, by one regular expression
        where no line needs FeedParser's special cases."""
        if block[:1] in (" ", "\t", ":") or block.startswith("From ") or "\n:" in block or "\nFrom " in block:
            return self._headers(_LINE_RE.findall(block))
        return [(name, value.lstrip(" \t").rstrip("\r\n")) for name, value in _FIELD_RE.findall(block)]

    def _headers(self, lines: list[str]) -> list[tuple[str, str]]:
        """FeedParser._parse_headers with compat32's header_source_parse."""
        headers: list[tuple[str, str]] = []
        current: list[str] = []
        for number, line in enumerate(lines):
            if line[0] in " \t":
                if current:
                    current.append(line)
                continue  # a first line that is a continuation is dropped
            if current:
                headers.append(_source_parse(current))
                current = []
            if line.startswith("From "):
                if number == 0:
                    continue  # the mbox envelope line
                if number == len(lines) - 1:
                    raise _Unusual  # FeedParser pushes it back into the body
                continue
            if line.find(":") == 0:
                continue  # no field name
            current = [line]
        if current:
            headers.append(_source_parse(current))
        return headers

    def _delivery_status(self, message, body: int, stack: tuple):
        """A delivery-status body: blocks of fields separated by blank lines,
        each a header-only Message (FeedParser's reading, blank-line runs
        giving empty blocks included)."""
        text = self.text
        end = self._end_of_body(body, stack)
        blocks = []
        position = body
        while True:
            lines = []
            while position < end and text[position] not in "\r\n":
                line_end = self._line_end(position)
                line = text[position:line_end]
                if not _HEADER_RE.match(line):
                    break  # the block's "body" starts here
                lines.append(line)
                position = line_end
            start = position
            while position < end and text[position] not in "\r\n":
                position = self._line_end(position)
            block = email.message.Message()
            block._headers = self._headers(lines)  # type: ignore[attr-defined]
            if "content-type" in block:
                raise _Unusual
            block._payload = text[start:position]  # type: ignore[attr-defined]
            blocks.append(block)
            if position < end:
                position = self._line_end(position)  # the blank line
            if position >= end:
                break
        message._payload = blocks
        return message, end, blocks[-1]

    def _multipart(self, message, content_type: str, body: int, stack: tuple, depth: int):
        boundary = message.get_boundary()
        if boundary is None:  # read as one undivided body
            end = self._end_of_body(body, stack)
            message._payload = self.text[body:end]
            return message, end, message
        own = "--" + boundary
        for outer in stack:
            if outer.startswith(own) or own.startswith(outer):
                raise _Unusual  # one boundary line could end two levels
        inner = stack + (own,)
        level = len(stack)
        found = self._next_boundary(body, inner)
        if found is None or found[1] != level or found[2]:
            # no start boundary: the text up to the end of input (or up to
            # the closing boundary, skipping what follows) is the body
            end = self.size if found is None else found[0]
            message._payload = self.text[body:end]
            if found is not None and found[1] == level:
                end = self._end_of_body(self._line_end(end), stack)
            return message, end, message
        position = self._line_end(found[0])
        children = []
        in_digest = content_type == "multipart/digest"
        while True:
            if position >= self.size or self._boundary_at(position, inner):
                raise _Unusual  # a repeated boundary line, or input ending at a boundary
            child, end, last = self.part(position, inner, in_digest, depth + 1)
            children.append(child)
            if not _content_type(last)[0].startswith("multipart/"):
                payload = last._payload
                if isinstance(payload, str):  # FeedParser's NLCRE_eol, without a regex scan of the payload
                    if payload.endswith("\r\n"):
                        last._payload = payload[:-2]
                    elif payload.endswith(("\n", "\r")):
                        last._payload = payload[:-1]
            boundary = self._boundary_at(end, inner) if end < self.size else None
            if boundary is None or boundary[0] != level:
                break  # no close boundary: the input (or the enclosing part) ends here
            position = self._line_end(end)
            if boundary[1]:
                end = self._end_of_body(position, stack)  # after the epilogue
                break
        message._payload = children
        return message, end, message


def _boundary_line(line: str, separator: str) -> bool | None:
    """FeedParser's boundary test without compiling its pattern per boundary
    (every message has new boundaries): None when `line` is no boundary
    line of `separator` ("--" + boundary), else whether it is the closing
    one. The pattern: separator, optional "--", blanks, optional line end."""
    if not line.startswith(separator):
        return None
    rest = line[len(separator):]
    closing = rest.startswith("--")
    if closing:
        rest = rest[2:]
    if rest.endswith("\n"):
        rest = rest[:-1]
    if rest.endswith("\r"):
        rest = rest[:-1]
    return closing if not rest.strip(" \t") else None


def _source_parse(lines: list[str]) -> tuple[str, str]:
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    return name, value.rstrip("\r\n")
