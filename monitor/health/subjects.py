"""Subject names and the small mappings health needs: which sending domain a
domain belongs to, and which provider a recipient domain is.

Subjects: `ip:192.0.2.10`, `domain:example.com`, `lane:192.0.2.10/yahoo`
(an IP towards one lane destination of the sender), and `rdomain:example.net`
(a recipient domain; used by suppression rules, not shown by default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

KINDS = ("ip", "domain", "lane", "rdomain")

# Consumer mailbox domains whose provider is known without an MX lookup:
# used only when the sender's delivery log has not shown the route yet.
WELL_KNOWN_DOMAINS: dict[str, str] = {
    "gmail.com": "google", "googlemail.com": "google",
    "yahoo.com": "yahoo", "ymail.com": "yahoo", "rocketmail.com": "yahoo", "aol.com": "yahoo",
    "yahoo.co.uk": "yahoo", "yahoo.fr": "yahoo", "yahoo.de": "yahoo", "aim.com": "yahoo",
    "outlook.com": "microsoft", "hotmail.com": "microsoft", "live.com": "microsoft", "msn.com": "microsoft",
    "hotmail.co.uk": "microsoft", "hotmail.fr": "microsoft", "outlook.fr": "microsoft", "live.fr": "microsoft",
    "icloud.com": "apple", "me.com": "apple", "mac.com": "apple",
    "comcast.net": "comcast", "orange.fr": "orange", "wanadoo.fr": "orange",
    "gmx.de": "gmx-webde", "gmx.net": "gmx-webde", "web.de": "gmx-webde",
    "yandex.ru": "yandex", "mail.ru": "mailru", "fastmail.com": "fastmail", "proton.me": "proton",
    "protonmail.com": "proton",
}

UNKNOWN_DESTINATION = "other"


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str
    key: str  # the IP, domain or recipient domain
    destination: str = ""  # lanes only

    def __str__(self) -> str:
        if self.kind == "lane":
            return f"lane:{self.key}/{self.destination}"
        return f"{self.kind}:{self.key}"

    @property
    def ip(self) -> str | None:
        return self.key if self.kind in ("ip", "lane") else None


def parse_subject(text: str) -> Subject:
    """`lane:1.2.3.4/yahoo` -> Subject; ValueError with the reason otherwise."""
    kind, sep, rest = text.strip().partition(":")
    if not sep or kind not in KINDS or not rest:
        raise ValueError(f"not a subject: {text!r} (write ip:ADDR, domain:NAME, lane:ADDR/DESTINATION or rdomain:NAME)")
    if kind == "lane":
        # IPv6 addresses have no '/', so the last '/' splits address and destination.
        ip, slash, destination = rest.rpartition("/")
        if not slash or not ip or not destination:
            raise ValueError(f"not a lane: {text!r} (write lane:ADDR/DESTINATION, e.g. lane:192.0.2.1/yahoo)")
        return Subject("lane", ip, destination)
    return Subject(kind, rest.lower() if kind != "ip" else rest)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].strip().strip(">").lower().rstrip(".") or None


class DomainMapper:
    """Rolls a domain up to the configured sending domain it belongs to
    (bounces.example.com -> example.com), so the envelope domain, the DKIM
    domain and the postmaster domain of one sender meet in one subject."""

    def __init__(self, sending_domains: list[str]) -> None:
        # longest first: mail.example.co.uk before example.co.uk
        self.domains = sorted({d.lower().rstrip(".") for d in sending_domains if d}, key=len, reverse=True)
        self._cache: dict[str, str] = {}

    def __call__(self, domain: str | None) -> str | None:
        if not domain:
            return None
        domain = domain.lower().rstrip(".")
        found = self._cache.get(domain)
        if found is None:
            found = domain
            for candidate in self.domains:
                if domain == candidate or domain.endswith("." + candidate):
                    found = candidate
                    break
            if len(self._cache) < 100_000:
                self._cache[domain] = found
        return found


def provider_guess(recipient_domain: str | None) -> str:
    if not recipient_domain:
        return UNKNOWN_DESTINATION
    return WELL_KNOWN_DOMAINS.get(recipient_domain.lower(), UNKNOWN_DESTINATION)
