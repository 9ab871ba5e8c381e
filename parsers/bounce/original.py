"""The returned original message inside a bounce: its Message-ID and
envelope sender, which tie the bounce back to what we sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from parsers.bounce.address import address as parse_address
from parsers.mime import ENCLOSING_TYPES, MailPart, parse_fields

_WANTED: Final = frozenset({"message-id", "return-path", "from", "to", "subject", "x-envelope-from", "sender"})


@dataclass(slots=True)
class Original:
    message_id: str | None = None
    mail_from: str | None = None  # envelope sender (Return-Path) or else the From address
    to: str | None = None
    senders: tuple[str, ...] = ()  # every sender-side address: From, Return-Path, Sender


def _from_headers(headers: list[tuple[str, str]]) -> Original:
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in _WANTED and key not in found:
            found[key] = value
    message_id = found.get("message-id", "").strip() or None
    mail_from = parse_address(found.get("return-path")) or parse_address(found.get("x-envelope-from")) \
        or parse_address(found.get("from")) or parse_address(found.get("sender"))
    senders = tuple(a for a in (parse_address(found.get(k)) for k in ("from", "return-path", "sender", "x-envelope-from")) if a)
    return Original(message_id=message_id, mail_from=mail_from, to=parse_address(found.get("to")), senders=senders)


def from_parts(msg: MailPart) -> Original | None:
    """The original from an enclosed message/rfc822 or text/rfc822-headers part."""
    for part in msg.walk():
        if part is msg or part.content_type not in ENCLOSING_TYPES:
            continue
        if part.children and part.children[0].raw_headers:
            return _from_headers(part.children[0].fields(_WANTED))  # decodes only the wanted fields
    return None


def from_text(quoted: str) -> Original | None:
    """The original quoted in a plain-text bounce: `quoted` is the text from
    the end of the marker line (plaintext.original_start) on."""
    block = quoted.lstrip(" \t-=*").lstrip("\n")
    if not block:
        return None
    head = block.split("\n\n", 1)[0]
    # indented quoting ("   Return-Path: ...") is common in provider notices
    lines = [line.strip() if not line.startswith(("\t",)) else line for line in head.split("\n")]
    headers = parse_fields("\n".join(lines))
    return _from_headers(headers) if headers else None
