"""Where a recipient's mail goes: MX lookup (cached for the record's TTL),
roll-up of MX hosts into providers by host-name suffix, or one smarthost.

A destination is a provider name ("google", "microsoft", ...), "relay" when
everything goes through [sender.relay], or "mx:<host>" for a domain served by
no known provider (its primary MX host stands for it, so small domains do
not share one set of limits). A lane is (source IP, destination).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

# Built-in providers: MX host suffixes and the limits their postmaster pages
# and operators' experience ask for (see the README's sender section for the
# sources). [sender.providers.NAME] in the config adds suffixes and overrides.
BUILTIN_PROVIDERS: dict[str, dict] = {
    "google": {"mx_suffixes": [".google.com", ".googlemail.com"], "tls": "required",
               "deliveries_per_connection": 50, "connections": 5},
    "microsoft": {"mx_suffixes": [".olc.protection.outlook.com"], "deliveries_per_connection": 50, "connections": 5},
    "office365": {"mx_suffixes": [".mail.protection.outlook.com", ".mx.microsoft"],
                  "deliveries_per_connection": 50, "connections": 5},
    "yahoo": {"mx_suffixes": [".yahoodns.net"], "deliveries_per_connection": 20},
    "apple": {"mx_suffixes": [".icloud.com"], "connections": 10, "deliveries_per_connection": 5},
    "comcast": {"mx_suffixes": [".comcast.net"], "tls": "required", "connections": 25},
    "orange": {"mx_suffixes": [".orange.fr"], "tls": "required", "connections": 2},
    "gmx-webde": {"mx_suffixes": [".gmx.net", ".web.de"]},
    "mimecast": {"mx_suffixes": [".mimecast.com", ".mimecast.co.za", ".mimecast-offshore.com"]},
    "proofpoint": {"mx_suffixes": [".pphosted.com", ".ppe-hosted.com"]},
    "zoho": {"mx_suffixes": [".zoho.com", ".zoho.eu", ".zoho.in"]},
    "yandex": {"mx_suffixes": [".yandex.net", ".yandex.ru"]},
    "mailru": {"mx_suffixes": [".mail.ru"]},
    "fastmail": {"mx_suffixes": [".messagingengine.com"]},
    "proton": {"mx_suffixes": [".protonmail.ch"]},
}

RELAY = "relay"
NEGATIVE_TTL = 300.0  # how long "no such domain" is remembered
FAILURE_TTL = 30.0  # how long a DNS failure (timeout, SERVFAIL) is remembered
MAX_TTL = 86400.0


class RouteError(Exception):
    """No route now. `permanent` failures bounce the message (no such domain,
    null MX); the others are retried like a 4xx."""

    def __init__(self, message: str, permanent: bool, reason: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Site:
    """The MX hosts of a domain, best preference first, and who runs them."""

    destination: str
    hosts: tuple[str, ...]
    port: int

    @property
    def key(self) -> str:
        return ",".join(self.hosts) + f":{self.port}"


def provider_of(mx_host: str, suffixes: list[tuple[str, str]]) -> str | None:
    host = "." + mx_host.lower().rstrip(".")
    for suffix, provider in suffixes:
        if host.endswith(suffix):
            return provider
    return None


@dataclass
class _CacheEntry:
    expires: float
    site: Site | None
    error: RouteError | None


@dataclass
class Router:
    """Domain -> Site, through the relay or the MX records."""

    relay: tuple[str, int] | None = None
    provider_suffixes: dict[str, list[str]] = field(default_factory=dict)
    nameservers: list[str] = field(default_factory=list)  # "host" or "host:port"
    mx_port: int = 25
    timeout: float = 5.0
    _cache: dict[str, _CacheEntry] = field(default_factory=dict)
    _resolver: dns.asyncresolver.Resolver | None = None
    _suffixes: list[tuple[str, str]] = field(default_factory=list)
    _inflight: dict[str, asyncio.Future[_CacheEntry]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        merged: dict[str, list[str]] = {name: list(spec["mx_suffixes"]) for name, spec in BUILTIN_PROVIDERS.items()}
        for name, extra in self.provider_suffixes.items():
            merged.setdefault(name, []).extend(extra)
        # Longest suffix first, so ".mail.protection.outlook.com" beats ".outlook.com".
        pairs = [("." + s.lower().lstrip("."), name) for name, sfx in merged.items() for s in sfx]
        self._suffixes = sorted(pairs, key=lambda p: -len(p[0]))

    @property
    def uses_relay(self) -> bool:
        return self.relay is not None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [ns.rsplit(":", 1)[0] if _has_port(ns) else ns for ns in self.nameservers]
                ports = {int(ns.rsplit(":", 1)[1]) for ns in self.nameservers if _has_port(ns)}
                if ports:
                    resolver.port = ports.pop()
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self.timeout
            resolver.timeout = self.timeout
            self._resolver = resolver
        return self._resolver

    async def site_for(self, domain: str) -> Site:
        if self.relay is not None:
            return Site(RELAY, (self.relay[0],), self.relay[1])
        domain = domain.lower().rstrip(".")
        entry = self._cache.get(domain)
        now = time.monotonic()
        if entry is not None and entry.expires > now:
            if entry.error is not None:
                raise entry.error
            assert entry.site is not None
            return entry.site
        pending = self._inflight.get(domain)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(domain))
            self._inflight[domain] = pending
            pending.add_done_callback(functools.partial(self._forget, domain))
        entry = await asyncio.shield(pending)
        if entry.error is not None:
            raise entry.error
        assert entry.site is not None
        return entry.site

    def _forget(self, domain: str, _done: object) -> None:
        self._inflight.pop(domain, None)

    async def _lookup(self, domain: str) -> _CacheEntry:
        now = time.monotonic()
        resolver = self._get_resolver()
        try:
            answer = await resolver.resolve(domain, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return self._remember(domain, _CacheEntry(now + NEGATIVE_TTL, None, RouteError(
                f"{domain}: no such domain", permanent=True, reason="hostunknown")))
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            return self._remember(domain, _CacheEntry(now + FAILURE_TTL, None, RouteError(
                f"{domain}: MX lookup failed: {exc}", permanent=False, reason="networkerror")))
        records = sorted(((r.preference, r.exchange.to_text().rstrip(".").lower()) for r in answer), key=lambda x: x)
        ttl = min(float(answer.rrset.ttl), MAX_TTL) if answer.rrset is not None else NEGATIVE_TTL
        if not records:
            # No MX: RFC 5321 5.1 says the domain itself is the host (implicit MX).
            hosts: tuple[str, ...] = (domain,)
        elif len(records) == 1 and records[0][1] in ("", "."):
            return self._remember(domain, _CacheEntry(now + ttl, None, RouteError(
                f"{domain}: null MX, the domain accepts no mail (RFC 7505)", permanent=True, reason="notaccept")))
        else:
            hosts = tuple(host for _, host in records if host not in ("", "."))
        destination = provider_of(hosts[0], self._suffixes) or f"mx:{hosts[0]}"
        return self._remember(domain, _CacheEntry(now + ttl, Site(destination, hosts, self.mx_port), None))

    def _remember(self, domain: str, entry: _CacheEntry) -> _CacheEntry:
        if len(self._cache) > 200_000:  # bounded: drop the oldest half
            for key in list(self._cache)[: len(self._cache) // 2]:
                del self._cache[key]
        self._cache[domain] = entry
        return entry

    async def addresses(self, host: str) -> list[str]:
        """IPv4 addresses of an MX host (literal addresses pass through)."""
        if _is_ip(host):
            return [host]
        try:
            answer = await self._get_resolver().resolve(host, "A")
        except dns.exception.DNSException:
            return []
        return [r.to_text() for r in answer]


def _has_port(ns: str) -> bool:
    return ns.count(":") == 1


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
