"""repmon's own tracking token: how a bounce or complaint maps back to the
message, sending IP and campaign that caused it.

The sender stamps every message with a header `X-Repmon-Track: <token>` and
uses a VERP Return-Path `<local>+rm-<token>@<bounce domain>`. Bounces quote
the original headers (or at least the envelope recipient of the bounce, which
is our Return-Path), complaints embed the whole original message, so the
token comes back in either place.

Two token versions:

- `v2.` (what the sender should stamp): unpadded lowercase base32 (it
  survives case-folding MTAs and local parts) of the sender queue's row id
  (LEB128) and a 10-octet HMAC-SHA256 tag of it under the sender's tracking
  secret: about 29 characters, so `bounces+rm-<token>` stays far under RFC
  5321's 64-octet local part; opaque (recipients see no campaign name); and
  unforgeable (a bounce naming a made-up id fails the tag). The id is
  resolved to message, source IP and campaign through the sender's queue
  (sender/queue.py `resolve_tracking`), never from the token, and only after
  `verify_v2` with the secret, which parsers do not have: so `find_in_bytes`
  never returns a Tracking for a v2 token; `find_tokens` hands the raw
  tokens to whoever holds the secret.
- `v1.` (mail already out): base32 of `message_id|source_ip|campaign`, no
  secret. Still decoded, read-only, for mail sent before v2; it carries no
  authentication, so it must not be trusted for actions (see README,
  Tracking).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from parsers.events import Tracking

HEADER = "X-Repmon-Track"
VERP_MARK = "rm-"
_PREFIX = "v1."
_TOKEN_RE = re.compile(r"v1\.([a-z2-7]{8,})", re.IGNORECASE)
_HEADER_RE = re.compile(rb"^X-Repmon-Track:[ \t]*(v1\.[A-Za-z2-7]+)", re.IGNORECASE | re.MULTILINE)
_VERP_RE = re.compile(r"\+rm-(v1\.[a-z2-7]+)@", re.IGNORECASE)
_V2_PREFIX = "v2."
_V2_RE = re.compile(r"v2\.([a-z2-7]{16,40})", re.IGNORECASE)
_ANY_HEADER_RE = re.compile(rb"^X-Repmon-Track:[ \t]*(v[12]\.[A-Za-z2-7]+)", re.IGNORECASE | re.MULTILINE)
_ANY_VERP_RE = re.compile(r"\+rm-(v[12]\.[a-z2-7]+)@", re.IGNORECASE)
_TAG_OCTETS = 10  # 80-bit tag: a forger needs ~2^79 tries per id
_TAG_CONTEXT = b"repmon tracking v2\x00"
MAX_LOCAL_PART = 64  # RFC 5321 section 4.5.3.1.1, octets
# RFC 5321 Dot-string: atoms of atext separated by single dots
_DOT_STRING_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_leb128(data: bytes) -> tuple[int, int] | None:
    """(value, octets used), or None when malformed or over 9 octets."""
    value = shift = 0
    for i, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def _tag(secret: bytes, key_octets: bytes) -> bytes:
    return hmac.new(secret, _TAG_CONTEXT + key_octets, hashlib.sha256).digest()[:_TAG_OCTETS]


def encode_v2(key: int, secret: bytes) -> str:
    """The v2 token of sender queue row `key` under `secret`."""
    if key < 0:
        raise ValueError("tracking keys are not negative")
    if len(secret) < 16:
        raise ValueError("the tracking secret must have at least 16 octets")
    raw = _leb128(key)
    return _V2_PREFIX + base64.b32encode(raw + _tag(secret, raw)).decode("ascii").rstrip("=").lower()


def read_v2(token: str) -> tuple[int, bytes, bytes] | None:
    """(key, key octets, tag) of a well-formed v2 token, unverified; else None."""
    match = _V2_RE.fullmatch(token.strip())
    if not match:
        return None
    body = match.group(1).upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except binascii.Error:
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != body:
        return None  # non-zero padding bits: one spelling per token
    read = _read_leb128(raw)
    if read is None:
        return None
    key, used = read
    if len(raw) != used + _TAG_OCTETS or _leb128(key) != raw[:used]:  # one spelling per key
        return None
    return key, raw[:used], raw[used:]


def verify_v2(token: str, secret: bytes) -> int | None:
    """The queue row id of a genuine v2 token under `secret`, else None
    (malformed, or the tag does not match: forged, or another installation's)."""
    found = read_v2(token)
    if found is None:
        return None
    key, key_octets, tag = found
    return key if hmac.compare_digest(tag, _tag(secret, key_octets)) else None


def find_tokens(data: bytes) -> list[str]:
    """Every tracking token (v1 and v2) in a raw message, header ones first,
    then VERP addresses, without repeats: for the holder of the secret."""
    found: list[str] = []
    for match in _ANY_HEADER_RE.finditer(data):
        token = match.group(1).decode("ascii").lower()
        if token not in found:
            found.append(token)
    for verp in _ANY_VERP_RE.finditer(data.decode("latin-1")):
        token = verp.group(1).lower()
        if token not in found:
            found.append(token)
    return found


def return_path_problem(address: str) -> str | None:
    """Why `address` is not a valid RFC 5321 reverse-path for our VERP, or
    None: the local part must be a Dot-string of at most 64 octets."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "not local@domain"
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        return f"local part of {len(local.encode('utf-8'))} octets (RFC 5321: at most {MAX_LOCAL_PART})"
    if not _DOT_STRING_RE.fullmatch(local):
        return "local part is not an RFC 5321 Dot-string"
    return None


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
