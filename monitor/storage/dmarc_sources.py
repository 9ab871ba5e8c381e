"""DMARC aggregate data per sending source: who sends mail as our domains,
how much of it passes, and from where (`repmon dmarc sources`, the DMARC
sources metrics and dashboards).

A source is the sending service parsedmarc's map names (`source_name`), else
the autonomous system's name, else the bare IP (records stored before the
lookups existed, or addresses no database knows). Rates are of messages:

- DMARC pass: the receiver's policy evaluation passed DKIM or SPF (aligned);
- DKIM / SPF pass: any DKIM signature / the SPF check passed at all
  (the raw auth results, aligned or not);
- DKIM / SPF aligned: that pass was aligned with the From domain
  (the policy-evaluated result).

Records without <policy_evaluated> (dkim/spf None) count as messages but
neither as passing nor as failing DMARC.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from monitor.storage.models import DmarcRecord

_records = DmarcRecord.__table__  # type: ignore[attr-defined]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class SourceIp:
    ip: str
    messages: int = 0
    ours: bool = False
    country: str | None = None
    reverse_dns: str | None = None


@dataclass(slots=True)
class SourceSummary:
    source: str  # service name, else AS name, else IP
    source_type: str | None  # the service's type in parsedmarc's map (Email Provider, Marketing, ...)
    as_name: str | None = None
    messages: int = 0
    evaluated: int = 0  # messages whose policy evaluation was reported
    dmarc_pass: int = 0
    dkim_pass: int = 0
    dkim_aligned: int = 0
    spf_pass: int = 0
    spf_aligned: int = 0
    countries: dict[str, int] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)
    ips: dict[str, SourceIp] = field(default_factory=dict)

    @property
    def dmarc_fail(self) -> int:
        return self.evaluated - self.dmarc_pass

    @property
    def ours(self) -> bool:
        return any(ip.ours for ip in self.ips.values())

    def rate(self, value: int) -> float | None:
        return round(value / self.messages, 4) if self.messages else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_type": self.source_type,
            "as_name": self.as_name,
            "messages": self.messages,
            "dmarc_fail": self.dmarc_fail,
            "dmarc_pass_rate": self.rate(self.dmarc_pass),
            "dkim_pass_rate": self.rate(self.dkim_pass),
            "dkim_aligned_rate": self.rate(self.dkim_aligned),
            "spf_pass_rate": self.rate(self.spf_pass),
            "spf_aligned_rate": self.rate(self.spf_aligned),
            "countries": dict(sorted(self.countries.items(), key=lambda kv: (-kv[1], kv[0]))),
            "domains": dict(sorted(self.domains.items(), key=lambda kv: (-kv[1], kv[0]))),
            "ours": self.ours,
            "ips": [{"ip": ip.ip, "messages": ip.messages, "ours": ip.ours, "country": ip.country,
                     "reverse_dns": ip.reverse_dns}
                    for ip in sorted(self.ips.values(), key=lambda i: (-i.messages, i.ip))],
        }


def networks(entries: Iterable[str]) -> list[Network]:
    """IPs and CIDR ranges (as [dnsbl] ips and [[sender.ips]] give them) as networks."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue
    return out


def _is_ours(ip: str, ours: Sequence[Network], cache: dict[str, bool]) -> bool:
    known = cache.get(ip)
    if known is None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            known = False
        else:
            known = any(address.version == net.version and address in net for net in ours)
        cache[ip] = known
    return known


def _any_pass(results: Any) -> bool:
    return isinstance(results, list) and any(
        isinstance(r, dict) and str(r.get("result") or "").lower() == "pass" for r in results)


def source_key(name: str | None, as_name: str | None, ip: str) -> str:
    return name or as_name or ip


def dmarc_sources(conn: Connection, *, since: datetime, domain: str | None = None,
                  ours: Sequence[Network] = (), failing: bool = False) -> list[SourceSummary]:
    """Per source, the records whose report period ends after `since`
    (optionally of one domain), most messages first; with `failing`, only
    sources with mail that failed DMARC, most failing first."""
    r = _records
    query = select(r.c.source_name, r.c.source_as_name, r.c.source_type, r.c.source_ip, r.c.source_country,
                   r.c.source_reverse_dns, r.c.domain, r.c.count, r.c.dkim, r.c.spf, r.c.dkim_results,
                   r.c.spf_results).where(r.c.end > since)
    if domain:
        query = query.where(r.c.domain == domain.lower().rstrip("."))
    summaries: dict[str, SourceSummary] = {}
    ours_cache: dict[str, bool] = {}
    for (name, as_name, kind, ip, country, ptr, record_domain, count, dkim, spf, dkim_results,
         spf_results) in conn.execution_options(yield_per=5000).execute(query):
        key = source_key(name, as_name, ip)
        summary = summaries.get(key)
        if summary is None:
            summary = summaries[key] = SourceSummary(source=key, source_type=kind, as_name=as_name)
        n = int(count or 0)
        summary.messages += n
        if dkim is not None and spf is not None:
            summary.evaluated += n
            if dkim == "pass" or spf == "pass":
                summary.dmarc_pass += n
        if dkim == "pass":
            summary.dkim_aligned += n
        if spf == "pass":
            summary.spf_aligned += n
        if dkim == "pass" or _any_pass(dkim_results):
            summary.dkim_pass += n
        if spf == "pass" or _any_pass(spf_results):
            summary.spf_pass += n
        if country:
            summary.countries[country] = summary.countries.get(country, 0) + n
        summary.domains[record_domain] = summary.domains.get(record_domain, 0) + n
        source_ip = summary.ips.get(ip)
        if source_ip is None:
            source_ip = summary.ips[ip] = SourceIp(ip, ours=_is_ours(ip, ours, ours_cache), country=country,
                                                   reverse_dns=ptr)
        source_ip.messages += n
    found = list(summaries.values())
    if failing:
        found = [s for s in found if s.dmarc_fail > 0]
        found.sort(key=lambda s: (-s.dmarc_fail, -s.messages, s.source))
    else:
        found.sort(key=lambda s: (-s.messages, s.source))
    return found
