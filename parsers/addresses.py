"""Email addresses as they appear in bounces and reports: `rfc822; <a@b>`,
`utf-8; <jöhn@exämple.com>`, `"Name" <a@b>`, bare `a@b`. flanker's address
parser validates them; the domain must then be a host name a message can be
delivered to.

Hostile input is the normal case here (a bounce or an auto-reply can say
anything), so every scan is linear in the length of the text: no pattern here
can backtrack over a long run of letters, and flanker only ever sees a short
candidate.
"""

from __future__ import annotations

import logging
import re

# flanker logs a warning for every address it cannot parse; for bounce text that is
# the normal case (we try candidates), not news. Set before flanker is imported:
# on a fresh install (or a ply version its cached tables do not match) importing
# it rebuilds its parser tables and logs some 28 grammar warnings (unused tokens,
# unreachable symbols) through this logger, which Python's last-resort handler
# prints to stderr before logging is configured.
logging.getLogger("flanker").setLevel(logging.ERROR)

from flanker.addresslib import address as _flanker_address  # noqa: E402  (after the logger is quiet)

# flanker's lexer sets its own logger to INFO when imported, which overrides the
# parent's level: every address it cannot tokenise logged a warning quoting it.
# Back to inheriting the quiet "flanker" level.
logging.getLogger("flanker.addresslib._parser.lexer").setLevel(logging.NOTSET)

# RFC 5321 section 4.5.3.1: a path is at most 256 octets; anything longer is not one
# address, and flanker's parser is not given it.
MAX_ADDRESS_LENGTH = 320

# One <...> group: the class excludes both brackets, so each match attempt stops at
# the next bracket and the whole search is linear.
_ANGLE_RE = re.compile(r"<([^<>\s]+)>")
# What is not a character of a bare address (RFC 5322 atext, the dot, @); a domain run.
_NOT_ADDRESS_RE = re.compile(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+")
_DOMAIN_RUN_RE = re.compile(r"[A-Za-z0-9.-]*")
# RFC 6533 section 3: the utf-8 address type writes some characters as \x{HEX}
_UNICODE_ESCAPE_RE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def normalize(text: str | None) -> str | None:
    """The address in `text`, lower-cased domain, or None when there is none.

    Accepts a DSN address field (`rfc822; a@b`, `utf-8; ...`), a display-name
    form or a bare address. The local part keeps its case (RFC 5321 says it
    may matter); internationalized (SMTPUTF8) addresses are kept as written.
    Not addresses: anything with a control character (a NUL in a DSN field),
    a domain literal (`a@[127.0.0.1]`) and a domain that is not a host name
    (`a@-example.com`, `a@example..com`)."""
    if not text or "@" not in text or "\x00" in text:  # a NUL: a forged or broken field, no address
        return None
    value = text.strip()
    if ";" in value[:12]:  # address-type prefix such as "rfc822;"
        kind, _, value = value.partition(";")
        if kind.strip().lower() == "utf-8":
            value = _UNICODE_ESCAPE_RE.sub(_unescape, value)
        value = value.strip()
    match = _first_angle_address(value)
    if match is not None:
        value = match
    value = value.strip().strip("<>\"'").rstrip(".,;:")
    address = _parse(value)
    if address is None:
        candidate = _bare_address(value)
        address = _parse(candidate) if candidate else None
    return address


def _parse(candidate: str) -> str | None:
    if len(candidate) > MAX_ADDRESS_LENGTH or _has_control(candidate):
        return None
    parsed = _flanker_address.parse(candidate, addr_spec_only=True)
    if parsed is None:
        return None
    local, _, domain = parsed.address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not local or _has_control(local) or not is_host_name(domain):
        return None
    return f"{local}@{domain}"


def is_host_name(domain: str) -> bool:
    """A domain a message can be sent to: dot-separated labels of letters
    (any script), digits and inner hyphens, 1 to 63 characters each. Not a
    domain literal, no empty label, no label starting or ending with '-', and
    not an IP address written bare (RFC 3696: a top-level domain is never all digits)."""
    if not domain or len(domain) > 253:
        return False
    labels = domain.split(".")
    if labels[-1].isdigit():
        return False
    for label in labels:
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if not (ch.isalnum() or ch == "-" or (ch > "\x7f" and ch.isprintable() and not ch.isspace())):
                return False
    return True


def _has_control(text: str) -> bool:
    return any(ch < " " or ch == "\x7f" for ch in text)


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _first_angle_address(text: str) -> str | None:
    """The first `<local@domain>` in text (an @ neither first nor last)."""
    for match in _ANGLE_RE.finditer(text):
        inner = match.group(1)
        if "@" in inner[1:-1]:
            return inner
    return None


def _bare_address(text: str) -> str | None:
    """The first `local@domain` in text, as the pattern
    [atext.]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])? would find it, in one
    pass: the text is cut into runs of address characters, and each run into
    the pieces between its @ signs."""
    for run in _NOT_ADDRESS_RE.split(text):
        pieces = run.split("@")
        for local, rest in zip(pieces, pieces[1:], strict=False):
            if not local or not rest or not (rest[0].isascii() and rest[0].isalnum()):
                continue
            domain_match = _DOMAIN_RUN_RE.match(rest)
            domain = domain_match.group(0).rstrip(".-") if domain_match else ""
            if domain:
                return f"{local}@{domain}"
    return None
