"""repmon's own tracking token: how a bounce or complaint maps back to the
message, sending IP and campaign that caused it.

The sender stamps every message with a header `X-Repmon-Track: <token>` and
uses a VERP Return-Path `<local>+rm-<token>@<bounce domain>`. Bounces quote
the original headers (or at least the envelope recipient of the bounce, which
is our Return-Path), complaints embed the whole original message, so the
token comes back in either place.

Token: `v1.` + unpadded base32 (lowercase, so it survives case-folding MTAs
and local parts) of `message_id|source_ip|campaign`. No secret is involved:
the token identifies, it does not authorise anything.
"""

from __future__ import annotations

import base64
import binascii
import re

from parsers.events import Tracking

HEADER = "X-Repmon-Track"
VERP_MARK = "rm-"
_PREFIX = "v1."
_TOKEN_RE = re.compile(r"v1\.([a-z2-7]{8,})", re.IGNORECASE)
_HEADER_RE = re.compile(rb"^X-Repmon-Track:[ \t]*(v1\.[A-Za-z2-7]+)", re.IGNORECASE | re.MULTILINE)
_VERP_RE = re.compile(r"\+rm-(v1\.[a-z2-7]+)@", re.IGNORECASE)


def encode(message_id: str, source_ip: str = "", campaign: str = "") -> str:
    for part in (message_id, source_ip, campaign):
        if "|" in part:
            raise ValueError(f"tracking fields may not contain '|': {part!r}")
    raw = f"{message_id}|{source_ip}|{campaign}".encode()
    return _PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode(token: str) -> Tracking | None:
    """Tracking from a token, or None when it is not a valid token."""
    match = _TOKEN_RE.fullmatch(token.strip())
    if not match:
        return None
    body = match.group(1).upper()
    body += "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(body).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    parts = raw.split("|")
    if len(parts) != 3:
        return None
    message_id, source_ip, campaign = parts
    return Tracking(message_id=message_id or None, source_ip=source_ip or None, campaign=campaign or None)


def verp_address(local: str, token: str, domain: str) -> str:
    return f"{local}+{VERP_MARK}{token}@{domain}"


def find_in_bytes(data: bytes) -> Tracking | None:
    """First valid token in a raw message: our header (anywhere, since bounces
    quote the original headers), else a VERP address."""
    for match in _HEADER_RE.finditer(data):
        found = decode(match.group(1).decode("ascii"))
        if found:
            return found
    text = data.decode("latin-1")
    for verp in _VERP_RE.finditer(text):
        found = decode(verp.group(1))
        if found:
            return found
    return None
