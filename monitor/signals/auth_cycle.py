"""The DNS-authentication job: check each sending domain, store the snapshot,
and record what got worse as events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.core.logs import redact, redact_value
from monitor.signals.dns_auth import AuthChecker, AuthTarget, DnsSettings, Finding, baseline, compare, overall_status
from monitor.signals.models import DnsAuthCheck, SignalEvent
from monitor.signals.settings import DnsAuthConfig, DnsblConfig, DnsConfig
from monitor.signals.store import add_event, record_fetch

log = logging.getLogger("repmon.signals.dns_auth")
HISTORY = 20  # snapshots looked at to find the last known result of each component


def auth_targets(settings: DnsAuthConfig, dnsbl: DnsblConfig) -> list[AuthTarget]:
    """The domains to check; without their own lists, the blocklist section's domains and IPs."""
    domains = settings.domains if settings.domains is not None else dnsbl.domains
    ips = settings.ips if settings.ips is not None else dnsbl.ips
    selectors = {d.lower().rstrip("."): tuple(s) for d, s in settings.dkim_selectors.items()}
    return [AuthTarget(d.lower().rstrip("."), tuple(ips), selectors.get(d.lower().rstrip("."), ())) for d in domains]


def dns_settings(dns: DnsConfig, dns_auth: DnsAuthConfig) -> DnsSettings:
    host, port = dns.host_port
    return DnsSettings(host, port, timeout_s=dns.timeout_s, fetch_mta_sts_policy=dns_auth.fetch_mta_sts_policy)


@dataclass(slots=True)
class DomainReport:
    domain: str
    status: str
    findings: list[Finding] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)


async def run_auth_cycle(dns: DnsConfig, dns_auth: DnsAuthConfig, targets: Sequence[AuthTarget], engine: Engine,
                         checker: AuthChecker, *, now: datetime | None = None) -> list[DomainReport]:
    settings = dns_settings(dns, dns_auth)
    reports = []
    for target in targets:
        snapshot = await checker.check(target, settings, dns_auth.timeout_s)
        reports.append(await asyncio.to_thread(persist_check, engine, snapshot, now or utcnow()))
    return reports


def persist_check(engine: Engine, snapshot: dict[str, Any], now: datetime) -> DomainReport:
    domain = snapshot["domain"]
    status = overall_status(snapshot)
    with session_scope(engine) as session:
        rows = session.execute(
            select(DnsAuthCheck).where(DnsAuthCheck.domain == domain)
            .order_by(col(DnsAuthCheck.checked_at).desc(), col(DnsAuthCheck.id).desc()).limit(HISTORY)).scalars().all()
        history = [{"spf": r.spf, "dmarc": r.dmarc, "dkim": r.dkim, "mta_sts": r.mta_sts, "tls_rpt": r.tls_rpt}
                   for r in rows]
        findings = compare(baseline(history), snapshot)
        session.add(DnsAuthCheck(domain=domain, checked_at=now, status=status, error=redact(snapshot.get("error") or "") or None,
                                 spf=snapshot.get("spf") or {}, dmarc=snapshot.get("dmarc") or {},
                                 dkim=snapshot.get("dkim") or {}, mta_sts=snapshot.get("mta_sts") or {},
                                 tls_rpt=snapshot.get("tls_rpt") or {}))
        for finding in findings:
            session.add(SignalEvent(occurred_at=now, source="dns_auth", kind=finding.kind, subject=domain,
                                    reason=redact(finding.reason), details=redact_value(finding.details),
                                    initial=finding.initial))
            level = logging.INFO if finding.initial or finding.kind.endswith("_covered") else logging.WARNING
            log.log(level, "%s: %s", domain, finding.reason, extra={"domain": domain, "kind": finding.kind})
        error = snapshot.get("error") or _first_error(snapshot)
        _, previous = record_fetch(session, f"dns_auth:{domain}", ok=status != "error", error=error, now=now)
        if status == "error" and previous != "error":
            add_event(session, source="dns_auth", kind="check_failed", subject=domain, now=now,
                      reason=f"could not check the DNS records of {domain}: {error}")
            log.warning("could not check the DNS records of %s: %s", domain, error, extra={"domain": domain})
        elif status != "error" and previous == "error":
            add_event(session, source="dns_auth", kind="check_recovered", subject=domain, now=now,
                      reason=f"DNS records of {domain} can be checked again")
    return DomainReport(domain, status, findings, snapshot)


def _first_error(snapshot: dict[str, Any]) -> str | None:
    for name in ("spf", "dmarc", "mta_sts", "tls_rpt"):
        part = snapshot.get(name) or {}
        if part.get("status") == "error":
            return f"{name}: {part.get('error')}"
    return None
