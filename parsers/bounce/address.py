"""Recipient addresses, fast: bounces name addresses many times over (DSN
fields, notice lines, quoted headers), and flanker's full parser costs about
20 µs a call. Plain dot-atom addresses, nearly all of them, are accepted by
a strict pattern here; anything else goes to parsers.addresses.normalize."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from parsers.addresses import normalize

# local part: dot-atom (RFC 5322 atext, no leading/trailing/double dots);
# domain: LDH labels with at least one dot.
_DOT_ATOM_RE: Final = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)"
)
_WRAPPING: Final = " \t<>\"'()[],;:."


@lru_cache(maxsize=4096)
def address(text: str | None) -> str | None:
    """normalize(text), with a fast path for plain addresses."""
    if not text or "@" not in text:  # no address at all ("undisclosed-recipients:;")
        return None
    value = text.strip()
    if ";" in value[:12]:  # address-type prefix such as "rfc822;"
        value = value.split(";", 1)[1]
    value = value.strip(_WRAPPING)
    match = _DOT_ATOM_RE.fullmatch(value)
    if match:
        return f"{match.group('local')}@{match.group('domain').lower()}"
    return normalize(text)
