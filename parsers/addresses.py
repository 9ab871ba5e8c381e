"""Email addresses as they appear in bounces and reports: `rfc822; <a@b>`,
`"Name" <a@b>`, bare `a@b`. flanker's address parser validates them."""

from __future__ import annotations

import logging
import re

from flanker.addresslib import address as _flanker_address

# flanker logs a warning for every address it cannot parse; for bounce text that is
# the normal case (we try candidates), not news.
logging.getLogger("flanker").setLevel(logging.ERROR)

_ANGLE_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_BARE_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def normalize(text: str | None) -> str | None:
    """The address in `text`, lower-cased domain, or None when there is none.

    Accepts a DSN address field (`rfc822; a@b`), a display-name form or a bare
    address. The local part keeps its case (RFC 5321 says it may matter)."""
    if not text:
        return None
    value = text.strip()
    if ";" in value[:12]:  # address-type prefix such as "rfc822;"
        value = value.split(";", 1)[1].strip()
    match = _ANGLE_RE.search(value)
    if match:
        value = match.group(1)
    value = value.strip().strip("<>\"'").rstrip(".,;:")
    parsed = _flanker_address.parse(value, addr_spec_only=True)
    if parsed is None:
        match = _BARE_RE.search(value)
        if not match:
            return None
        parsed = _flanker_address.parse(match.group(0), addr_spec_only=True)
        if parsed is None:
            return None
    local, _, domain = parsed.address.rpartition("@")
    return f"{local}@{domain.lower()}"
