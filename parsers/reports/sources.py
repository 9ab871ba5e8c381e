"""Where the mail of a DMARC aggregate record came from: country, autonomous
system and the sending service of its source IP, offline.

The values are the ones parsedmarc 11.1 gives offline (`get_ip_address_info`
with `offline=True`), from the data parsedmarc ships, so stored data agrees
with theirs:

- country, ASN, AS name and AS domain: the bundled IPinfo Lite database
  (`resources/ipinfo/ipinfo_lite.mmdb`), normalised as parsedmarc's
  `_normalize_ip_record` does (ISO country code, ASN as a plain int, AS
  domain lower-cased);
- name and type of the service: with a reverse DNS name, the entry of its
  base domain (public suffix list plus parsedmarc's `psl_overrides.txt`) in
  `resources/maps/base_reverse_dns_map.csv`, else the base domain itself
  with no type; without one, the entry of the AS domain, else the raw AS
  name with no type.

Reverse DNS is the caller's: `IpEnricher(reverse_dns=...)` takes a function
from an IP to its PTR name (None when there is none); without it,
`source_reverse_dns` and `source_base_domain` stay None, as offline.

parsedmarc opens the database on every lookup; here the reader is opened
once (memory-mapped, libmaxminddb's C reader when installed) and every IP is
looked up once per enricher.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from publicsuffixlist import PublicSuffixList

from parsers.events import AnyEvent, DmarcAggregateEvent, DmarcRecord

__all__ = ["SourceInfo", "IpEnricher", "enrich_events", "default_enricher", "parsedmarc_resources"]

ReverseDns = Callable[[str], "str | None"]

# Distinct IPs remembered per enricher; a report has at most a few thousand,
# a daemon sees more over its lifetime, so the cache is reset when full.
_MAX_CACHED_IPS = 200_000


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """The source_* fields of one IP."""

    country: str | None = None
    asn: int | None = None
    as_name: str | None = None
    as_domain: str | None = None
    name: str | None = None
    type: str | None = None
    reverse_dns: str | None = None
    base_domain: str | None = None


def parsedmarc_resources() -> Path:
    """parsedmarc's `resources` folder, found without importing parsedmarc
    (its package import pulls in mail, Elasticsearch and Kafka clients)."""
    spec = importlib.util.find_spec("parsedmarc")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("parsedmarc is not installed: its IP database and service map are needed")
    return Path(next(iter(spec.submodule_search_locations))) / "resources"


def load_service_map(path: Path) -> dict[str, tuple[str, str | None]]:
    """base_reverse_dns_map.csv as {base domain: (name, type)}, keys and values
    stripped as parsedmarc's `load_reverse_dns_map` strips them."""
    services: dict[str, tuple[str, str | None]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            services[row["base_reverse_dns"].lower().strip()] = (row["name"].strip(), row["type"].strip())
    return services


def load_psl_overrides(path: Path) -> tuple[str, ...]:
    """psl_overrides.txt: suffixes that name a base domain of their own."""
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


class IpEnricher:
    """Looks IPs up in parsedmarc's shipped data; one instance per process is
    enough (see default_enricher). Not thread-safe: give each thread its own."""

    def __init__(self, *, ip_db_path: Path | None = None, service_map_path: Path | None = None,
                 psl_overrides_path: Path | None = None, reverse_dns: ReverseDns | None = None) -> None:
        resources = parsedmarc_resources() if None in (ip_db_path, service_map_path, psl_overrides_path) else None
        self._reader = maxminddb.open_database(str(ip_db_path or _resource(resources, "ipinfo", "ipinfo_lite.mmdb")))
        self._services = load_service_map(service_map_path or _resource(resources, "maps", "base_reverse_dns_map.csv"))
        self._overrides = load_psl_overrides(psl_overrides_path or _resource(resources, "maps", "psl_overrides.txt"))
        self._reverse_dns = reverse_dns
        self._psl: PublicSuffixList | None = None  # loaded on the first PTR name: it takes a while
        self._cache: dict[str, SourceInfo] = {}

    def close(self) -> None:
        self._reader.close()

    def lookup(self, ip: str) -> SourceInfo:
        """The source fields of an IP address (canonical text, as in DmarcRecord)."""
        info = self._cache.get(ip)
        if info is None:
            if len(self._cache) >= _MAX_CACHED_IPS:
                self._cache.clear()
            info = self._cache[ip] = self._resolve(ip)
        return info

    def enrich_record(self, record: DmarcRecord) -> None:
        info = self.lookup(record.source_ip)
        record.source_country = info.country
        record.source_asn = info.asn
        record.source_as_name = info.as_name
        record.source_as_domain = info.as_domain
        record.source_name = info.name
        record.source_type = info.type
        record.source_reverse_dns = info.reverse_dns
        record.source_base_domain = info.base_domain

    def enrich(self, event: DmarcAggregateEvent) -> None:
        """Fill the source_* fields of every record of a report, in place."""
        for record in event.records:
            self.enrich_record(record)

    # --- one IP -----------------------------------------------------------------

    def _resolve(self, ip: str) -> SourceInfo:
        country, asn, as_name, as_domain = self._database_fields(ip)
        reverse_dns = self._reverse_dns(ip) if self._reverse_dns is not None else None
        name = kind = base_domain = None
        if reverse_dns is not None:
            base_domain = self._base_domain(reverse_dns)
            if base_domain is not None:
                name, kind = self._services.get(base_domain, (base_domain, None))
        elif as_domain and as_domain in self._services:
            name, kind = self._services[as_domain]
        elif as_name:
            name = as_name  # the AS is not a known service: its raw name, unclassified
        return SourceInfo(country=country, asn=asn, as_name=as_name, as_domain=as_domain, name=name, type=kind,
                          reverse_dns=reverse_dns, base_domain=base_domain)

    def _database_fields(self, ip: str) -> tuple[str | None, int | None, str | None, str | None]:
        try:
            record = self._reader.get(ip)
        except ValueError:  # not an IP address
            return None, None, None, None
        if not isinstance(record, dict):
            return None, None, None, None
        return _normalize_ip_record(record)

    def _base_domain(self, name: str) -> str | None:
        """parsedmarc's get_base_domain: the registrable domain, unless one of
        its overrides ends the name (then the override is the base domain)."""
        name = name.lower()
        if self._psl is None:
            self._psl = PublicSuffixList()
        base = self._psl.privatesuffix(name)
        for override in self._overrides:
            if name.endswith(override):
                return override.strip(".").strip("-")
        return base


def _resource(resources: Path | None, folder: str, name: str) -> Path:
    assert resources is not None  # only called when a path was left to the default
    return resources / folder / name


def _normalize_ip_record(record: dict[str, Any]) -> tuple[str | None, int | None, str | None, str | None]:
    """(country, asn, as_name, as_domain) from an IPinfo Lite (or MaxMind) record,
    as parsedmarc's _normalize_ip_record reads them."""
    code = record.get("country_code")
    if code is None:
        nested = record.get("country")
        if isinstance(nested, dict):
            code = nested.get("iso_code")
    country = code if isinstance(code, str) else None
    asn: int | None = None
    raw_asn = record.get("asn")
    if isinstance(raw_asn, int):
        asn = raw_asn
    elif isinstance(raw_asn, str) and raw_asn:
        digits = raw_asn.removeprefix("AS").removeprefix("as")
        if digits.isdigit():
            asn = int(digits)
    if asn is None and isinstance(record.get("autonomous_system_number"), int):
        asn = record["autonomous_system_number"]
    name = record.get("as_name") or record.get("autonomous_system_organization")
    as_name = name if isinstance(name, str) and name else None
    domain = record.get("as_domain")
    as_domain = domain.lower() if isinstance(domain, str) and domain else None
    return country, asn, as_name, as_domain


_DEFAULT: IpEnricher | None = None


def default_enricher() -> IpEnricher:
    """The process's offline enricher (no reverse DNS), opened on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = IpEnricher()
    return _DEFAULT


def enrich_events(events: Iterable[AnyEvent], enricher: IpEnricher | None = None) -> None:
    """Fill the source fields of every aggregate report among `events`, in place."""
    for event in events:
        if isinstance(event, DmarcAggregateEvent):
            (enricher or default_enricher()).enrich(event)
