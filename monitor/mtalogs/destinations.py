"""Which destination a logged delivery went to, in the sender's vocabulary
(sender/routing.py): a provider name by the MX host's suffix ("google",
"microsoft", ...), else "mx:<host>" for the host itself, else "other" (the
MTA never reached a host: no MX, DNS failure).

The suffix table repeats sender/routing.py's BUILTIN_PROVIDERS suffixes: this
part sits on the sender's floor and may not import it (parts import only what
is below them); tests/test_mtalogs_store.py checks the two agree.
"""

from __future__ import annotations

UNKNOWN = "other"
BUILTIN_SUFFIXES: dict[str, tuple[str, ...]] = {
    "google": (".google.com", ".googlemail.com"),
    "microsoft": (".olc.protection.outlook.com",),
    "office365": (".mail.protection.outlook.com", ".mx.microsoft"),
    "yahoo": (".yahoodns.net",),
    "apple": (".icloud.com",),
    "comcast": (".comcast.net",),
    "orange": (".orange.fr",),
    "gmx-webde": (".gmx.net", ".web.de"),
    "mimecast": (".mimecast.com", ".mimecast.co.za", ".mimecast-offshore.com"),
    "proofpoint": (".pphosted.com", ".ppe-hosted.com"),
    "zoho": (".zoho.com", ".zoho.eu", ".zoho.in"),
    "yandex": (".yandex.net", ".yandex.ru"),
    "mailru": (".mail.ru",),
    "fastmail": (".messagingengine.com",),
    "proton": (".protonmail.ch",),
}
MAX_CACHE = 100_000


class Destinations:
    """MX host -> destination, with the configured extra suffixes."""

    def __init__(self, extra: dict[str, list[str]] | None = None) -> None:
        merged: dict[str, list[str]] = {name: list(s) for name, s in BUILTIN_SUFFIXES.items()}
        for name, suffixes in (extra or {}).items():
            merged.setdefault(name, []).extend(suffixes)
        pairs = [("." + s.lower().strip().lstrip("."), name) for name, sfx in merged.items() for s in sfx]
        self._suffixes = sorted(pairs, key=lambda p: -len(p[0]))  # longest first
        self._cache: dict[str, str] = {}

    def of(self, host: str | None) -> str:
        if not host:
            return UNKNOWN
        found = self._cache.get(host)
        if found is None:
            dotted = "." + host.lower().rstrip(".")
            found = next((name for suffix, name in self._suffixes if dotted.endswith(suffix)), None)
            found = found or f"mx:{host.lower().rstrip('.')}"[:255]
            if len(self._cache) < MAX_CACHE:
                self._cache[host] = found
        return found
