"""The signals part's daemon jobs (see monitor/core/runtime.py): blocklists, DNS
authentication, Google Postmaster Tools, SNDS. A job exists only when its
section has something to do."""

from __future__ import annotations

import logging

from monitor.core.config import ConfigError
from monitor.core.logs import register_secret
from monitor.core.runtime import JobSpec, Runtime
from monitor.signals import blocklists
from monitor.signals.auth_cycle import DomainReport, auth_targets, run_auth_cycle
from monitor.signals.dns_auth import AuthChecker
from monitor.signals.postmaster import cycle as postmaster
from monitor.signals.settings import DnsAuthConfig, DnsblConfig, DnsConfig, PostmasterConfig
from monitor.signals.zones import build_zones

log = logging.getLogger("repmon.signals")


def provide(runtime: Runtime, *, dns: DnsConfig, dnsbl: DnsblConfig, dns_auth: DnsAuthConfig,
            postmaster_settings: PostmasterConfig) -> list[JobSpec]:
    jobs: list[JobSpec] = []
    if dnsbl.ips or dnsbl.domains or dnsbl.link_domains:
        try:
            zones = build_zones(dnsbl)  # fail at start-up, not at the first cycle (e.g. DQS key env unset)
        except ValueError as exc:
            raise ConfigError(f"dnsbl: {exc}") from None
        register_secret(dnsbl.resolve_dqs_key())

        async def dnsbl_cycle() -> blocklists.CycleReport:
            report = await blocklists.run_cycle(dns, dnsbl, runtime.engine, zones=zones)
            log.info("blocklist cycle: %d checks, states %s, %d changes", report.checked, dict(report.states),
                     len(report.transitions))
            return report

        jobs.append(JobSpec("signals:dnsbl", dnsbl_cycle, interval_s=dnsbl.interval_s))

    targets = auth_targets(dns_auth, dnsbl)
    if targets:
        checker = runtime.shared.setdefault("signals.auth_checker", AuthChecker())

        async def auth_cycle() -> list[DomainReport]:
            return await run_auth_cycle(dns, dns_auth, targets, runtime.engine, checker)

        jobs.append(JobSpec("signals:dns-auth", auth_cycle, interval_s=dns_auth.interval_s))

    google = postmaster_settings.google
    if google is not None:
        async def google_cycle() -> postmaster.FetchReport:
            return await postmaster.run_google(postmaster_settings, runtime.engine)

        jobs.append(JobSpec("signals:google-postmaster", google_cycle, interval_s=google.interval_s))

    snds = postmaster_settings.snds
    if snds is not None:
        register_secret(snds.resolve_data_key())
        register_secret(snds.resolve_ipstatus_key())

        async def snds_cycle() -> postmaster.FetchReport:
            return await postmaster.run_snds(postmaster_settings, runtime.engine)

        jobs.append(JobSpec("signals:snds", snds_cycle, interval_s=snds.interval_s))
    return jobs
