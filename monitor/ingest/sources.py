"""Where the mail of stored DMARC aggregate records came from, at ingestion.

Offline lookups (country, AS, sending service: parsers/reports/sources.py,
parsedmarc's bundled data) are on by default (`[dmarc] sources`). Reverse DNS
is a switch (`[dmarc] reverse_dns = true`): the distinct source IPs of a
report are looked up concurrently (dnspython's asyncio resolver, a timeout
per lookup, `reverse_dns_concurrency` at once) and remembered for an hour, so
the next report from the same senders costs nothing.

This runs where messages are parsed: in the parse pool's worker processes
(monitor/ingest/pool.py) or a worker thread, never on the daemon's event loop.
The event loop of a worker is its own (`asyncio.run`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from monitor.ingest.settings import DmarcConfig
from parsers.events import AnyEvent, DmarcAggregateEvent
from parsers.reports.sources import IpEnricher

log = logging.getLogger("repmon.ingest.sources")

PTR_TTL_S = 3600.0  # a PTR answer (or its absence) is remembered this long
PTR_CACHE_MAX = 100_000


class PtrCache:
    """IP -> PTR name (None: none, or the lookup failed), with an expiry."""

    def __init__(self, ttl_s: float = PTR_TTL_S, max_entries: int = PTR_CACHE_MAX) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._names: dict[str, tuple[str | None, float]] = {}

    def get(self, ip: str) -> str | None:
        hit = self._names.get(ip)
        return hit[0] if hit is not None else None

    def missing(self, ips: Iterable[str], now: float) -> list[str]:
        out = []
        for ip in ips:
            hit = self._names.get(ip)
            if hit is None or hit[1] <= now:
                out.append(ip)
        return out

    def put(self, ip: str, name: str | None, now: float) -> None:
        if len(self._names) >= self.max_entries:
            self._names.clear()
        self._names[ip] = (name, now + self.ttl_s)


def _resolver(config: DmarcConfig) -> dns.asyncresolver.Resolver:
    if config.reverse_dns_resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, _, port = config.reverse_dns_resolver.rpartition(":")
        if not host or "]" in port or (host.count(":") and not host.startswith("[")):
            host, port = config.reverse_dns_resolver, "53"  # a bare host, or a bare IPv6 address
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = config.reverse_dns_timeout_s
    resolver.timeout = config.reverse_dns_timeout_s
    return resolver


async def _lookup_all(ips: list[str], config: DmarcConfig) -> dict[str, str | None]:
    resolver = _resolver(config)
    gate = asyncio.Semaphore(config.reverse_dns_concurrency)

    async def one(ip: str) -> tuple[str, str | None]:
        async with gate:
            try:
                answer = await resolver.resolve(dns.reversename.from_address(ip), "PTR",
                                                lifetime=config.reverse_dns_timeout_s)
            except (dns.exception.DNSException, ValueError, OSError):
                return ip, None  # no name, a timeout, a refusal: no name
            for rdata in answer:
                return ip, str(rdata.target).rstrip(".").lower() or None
            return ip, None

    return dict(await asyncio.gather(*(one(ip) for ip in ips)))


class RecordSources:
    """Fills the source_* fields of the aggregate reports a message carried.
    One per process (thread-unsafe, like IpEnricher)."""

    def __init__(self, config: DmarcConfig, enricher: IpEnricher | None = None) -> None:
        self.config = config
        self.ptr = PtrCache()
        self._reverse = self.ptr.get if config.reverse_dns else None
        self.enricher = enricher or IpEnricher(reverse_dns=self._reverse)
        self._enricher_since = time.monotonic()

    def enrich(self, events: Iterable[AnyEvent]) -> None:
        for event in events:
            if isinstance(event, DmarcAggregateEvent):
                if self.config.reverse_dns:
                    self._resolve_ptr(event)
                self.enricher.enrich(event)

    def _resolve_ptr(self, event: DmarcAggregateEvent) -> None:
        now = time.monotonic()
        todo = self.ptr.missing(dict.fromkeys(r.source_ip for r in event.records), now)
        if not todo:
            return
        if now - self._enricher_since > self.ptr.ttl_s:
            # the enricher remembers each IP's answer for good: a fresh one sees the new names
            self.enricher.close()
            self.enricher = IpEnricher(reverse_dns=self._reverse)
            self._enricher_since = now
        try:
            names = asyncio.run(_lookup_all(todo, self.config))
        except RuntimeError:  # called from inside a running loop: a bug, but never block it
            log.warning("reverse DNS skipped: called from an event loop")
            return
        for ip, name in names.items():
            self.ptr.put(ip, name, now)


_BY_CONFIG: dict[str, RecordSources | None] = {}


def record_sources(config: DmarcConfig | None) -> RecordSources | None:
    """This process's lookups for a [dmarc] section; None when switched off or
    when parsedmarc's data cannot be opened (records are then stored without)."""
    if config is None or not config.sources:
        return None
    key = config.model_dump_json()
    if key not in _BY_CONFIG:
        try:
            _BY_CONFIG[key] = RecordSources(config)
        except (OSError, ValueError) as exc:
            log.warning("DMARC source lookups off: %s", exc)
            _BY_CONFIG[key] = None
    return _BY_CONFIG[key]
