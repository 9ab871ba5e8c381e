"""Campaign templates: an .eml with {{column}} placeholders, personalised per
CSV row into the stored message (header block + wire-form body).

Rendering is byte joins over a template split once into literal and
placeholder pieces: no email.message objects per message. Values placed in
header fields lose CR/LF (no header injection) and become RFC 2047 words
when they are not ASCII; values in the body are inserted as UTF-8, or
quoted-printable encoded when the template's body is quoted-printable.
"""

from __future__ import annotations

import base64
import quopri
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path

from parsers import tracking
from sender.dkim import body_hash_of_wire
from sender.smtp import dot_stuff

PLACEHOLDER = re.compile(rb"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
# Header fields the sender owns: a template's own copies are dropped.
_REPLACED = {b"message-id", b"return-path", b"dkim-signature", b"x-repmon-track", b"feedback-id"}
_UNSUBSCRIBE = {b"list-unsubscribe", b"list-unsubscribe-post"}


class TemplateError(ValueError):
    """A template that cannot be sent, with a message for people."""


def _split_pieces(data: bytes) -> list[bytes | tuple[str]]:
    """Literal byte runs and (placeholder,) tuples, in order."""
    pieces: list[bytes | tuple[str]] = []
    pos = 0
    for match in PLACEHOLDER.finditer(data):
        if match.start() > pos:
            pieces.append(data[pos:match.start()])
        pieces.append((match.group(1).decode("ascii"),))
        pos = match.end()
    if pos < len(data):
        pieces.append(data[pos:])
    return pieces


def _header_value(value: str) -> bytes:
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii():
        return value.encode("ascii")
    return b"=?utf-8?b?" + base64.b64encode(value.encode("utf-8")) + b"?="


def _body_value_raw(value: str) -> bytes:
    return value.encode("utf-8")


def _body_value_qp(value: str) -> bytes:
    return quopri.encodestring(value.encode("utf-8")).rstrip(b"\n").replace(b"=\n", b"")


@dataclass(slots=True)
class Template:
    headers: list[bytes | tuple[str]]  # header block pieces, CRLF line ends
    body: list[bytes | tuple[str]]
    placeholders: set[str]
    from_address: str
    from_domain: str
    has_to: bool
    has_date: bool
    has_unsubscribe: bool
    body_encoder: object = field(default=_body_value_raw)

    @classmethod
    def load(cls, path: str | Path) -> Template:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TemplateError(f"cannot read template {path}: {exc.strerror}") from None
        return cls.parse(data, name=str(path))

    @classmethod
    def parse(cls, data: bytes, name: str = "template") -> Template:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            if data.startswith(b"\r\n"):
                head, body = b"", data[2:]
            else:
                raise TemplateError(f"{name}: no blank line between the header and the body")
        kept: list[bytes] = []
        names: list[bytes] = []
        skipping = False
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                if not kept and not skipping:
                    raise TemplateError(f"{name}: the header starts with a continuation line")
                if not skipping:
                    kept.append(line)
                continue
            field_name, colon, _ = line.partition(b":")
            if not colon or not field_name.strip() or b" " in field_name.strip():
                raise TemplateError(f"{name}: not a header field: {line[:80]!r}")
            lower = field_name.strip().lower()
            names.append(lower)
            skipping = lower in _REPLACED
            if not skipping:
                kept.append(line)
        header_block = b"".join(line + b"\r\n" for line in kept)
        from_field = _field_value(kept, b"from")
        if from_field is None:
            raise TemplateError(f"{name}: the template has no From: field")
        from_address = parseaddr(from_field.decode("utf-8", "replace"))[1]
        if "@" not in from_address and b"{{" not in from_field:
            raise TemplateError(f"{name}: From: holds no address: {from_field[:80]!r}")
        from_domain = from_address.rpartition("@")[2].lower()
        lower_head = head.lower()
        encoder = _body_value_raw
        if re.search(rb"content-transfer-encoding:\s*quoted-printable", lower_head + b"\r\n" + body.lower()):
            encoder = _body_value_qp
        body_pieces = _split_pieces(body)
        if re.search(rb"content-transfer-encoding:\s*base64", lower_head) \
                and any(isinstance(p, tuple) for p in body_pieces):
            raise TemplateError(f"{name}: placeholders cannot be replaced inside a base64-encoded body; "
                                "use 8bit or quoted-printable")
        header_pieces = _split_pieces(header_block)
        placeholders = {p[0] for p in header_pieces + body_pieces if isinstance(p, tuple)}
        return cls(
            headers=header_pieces, body=body_pieces, placeholders=placeholders,
            from_address=from_address, from_domain=from_domain,
            has_to=b"to" in names, has_date=b"date" in names,
            has_unsubscribe=any(n in _UNSUBSCRIBE for n in names), body_encoder=encoder,
        )

    def render_headers(self, values: dict[str, str]) -> bytes:
        return b"".join(p if isinstance(p, bytes) else _header_value(values[p[0]]) for p in self.headers)

    def render_body(self, values: dict[str, str]) -> bytes:
        encode = self.body_encoder
        return b"".join(p if isinstance(p, bytes) else encode(values[p[0]]) for p in self.body)  # type: ignore[operator]


def _field_value(lines: list[bytes], wanted: bytes) -> bytes | None:
    for i, line in enumerate(lines):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == wanted:
            rest = [value]
            for more in lines[i + 1:]:
                if more[:1] not in (b" ", b"\t"):
                    break
                rest.append(more)
            return b" ".join(x.strip() for x in rest)
    return None


_random_pool: list = [b"", 0]  # [bytes from the OS CSPRNG, read position]


def _random_hex8() -> str:
    """16 hex digits from the OS CSPRNG. Read 4 KB at a time: one getrandom()
    call per message cost about a tenth of the whole injection."""
    pool, pos = _random_pool
    if pos + 8 > len(pool):
        pool, pos = secrets.token_bytes(4096), 0
        _random_pool[0] = pool
    _random_pool[1] = pos + 8
    return pool[pos:pos + 8].hex()


def new_message_id(domain: str) -> str:
    """Short (the tracking token and VERP address carry it) and unique."""
    return f"{_random_hex8()}.{int(time.time()) % 100_000_000:x}@{domain or 'localhost'}"


_date_cache: list = [0, b""]


def _date_header() -> bytes:
    """Date: of now, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + format_datetime(datetime.fromtimestamp(now, UTC)).encode("ascii") + b"\r\n"
    return _date_cache[1]


def _clean_feedback_field(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", value)[:60] or "-"


@dataclass(slots=True)
class RenderedMessage:
    recipient: str
    message_id: str
    headers: bytes
    body: bytes  # wire form
    body_hash: str | None
    eight_bit: bool


@dataclass(slots=True)
class Personaliser:
    """Turns a template and one row into the message stored in the queue."""

    template: Template
    campaign: str
    pool: str
    feedback_id_sender: str
    unsubscribe_header: object = None  # callable(address, campaign) -> (List-Unsubscribe value) or None
    sign_body: bool = False  # compute the DKIM body hash at enqueue
    feedback_id: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        # Feedback-ID (Gmail's feedback loop groups complaints by it): campaign,
        # pool, mail type and sender, the same for the whole campaign.
        fid = ":".join(_clean_feedback_field(x) for x in (self.campaign, self.pool, "bulk", self.feedback_id_sender))
        self.feedback_id = b"Feedback-ID: " + fid.encode("ascii") + b"\r\n"

    def render(self, recipient: str, values: dict[str, str]) -> RenderedMessage:
        template = self.template
        message_id = new_message_id(template.from_domain)
        extra = [b"Message-ID: <" + message_id.encode("ascii") + b">\r\n"]
        if not template.has_date:
            extra.append(_date_header())
        if not template.has_to:
            extra.append(b"To: <" + recipient.encode("utf-8") + b">\r\n")
        extra.append(self.feedback_id)
        if self.unsubscribe_header is not None and not template.has_unsubscribe:
            value = self.unsubscribe_header(recipient, self.campaign)  # type: ignore[operator]
            extra.append(b"List-Unsubscribe: " + value.encode("ascii") + b"\r\n")
            extra.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        headers = template.render_headers(values) + b"".join(extra)
        raw_body = template.render_body(values)
        wire = dot_stuff(raw_body)
        bh = body_hash_of_wire(wire) if self.sign_body else None
        eight_bit = not (headers.isascii() and wire.isascii())
        return RenderedMessage(recipient, message_id, headers, wire, bh, eight_bit)


class TrackingError(ValueError):
    """A Return-Path that cannot be built (a mail_from whose local part leaves no room)."""


@dataclass(frozen=True, slots=True)
class Tracker:
    """Stamps v2 tracking tokens (parsers/tracking.py) under the sender's
    tracking secret: an opaque, authenticated key of the queue row, resolved
    back through the queue (sender/queue.py `resolve_tracking`)."""

    secret: bytes

    def token(self, queue_id: int) -> str:
        return tracking.encode_v2(queue_id, self.secret)

    def header(self, queue_id: int) -> bytes:
        return f"{tracking.HEADER}: {self.token(queue_id)}\r\n".encode("ascii")

    def return_path(self, mail_from: str, queue_id: int) -> str:
        """The VERP reverse-path `<local>+rm-<token>@<domain>`; TrackingError
        when it would not be a valid RFC 5321 path (local part over 64 octets,
        not a Dot-string)."""
        local, _, domain = mail_from.rpartition("@")
        address = tracking.verp_address(local, self.token(queue_id), domain)
        problem = tracking.return_path_problem(address)
        if problem:
            raise TrackingError(f"VERP Return-Path {address!r}: {problem}; shorten the local part of "
                                f"[sender] mail_from to at most {max_mail_from_local()} characters")
        return address


def max_mail_from_local() -> int:
    """The longest mail_from local part that leaves room for `+rm-<v2 token>`
    within 64 octets (whatever the queue id, up to 2^63)."""
    longest = tracking.encode_v2(2**63 - 1, b"\x00" * 16)
    return tracking.MAX_LOCAL_PART - len("+" + tracking.VERP_MARK + longest)
