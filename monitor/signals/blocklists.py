"""Blocklist monitoring end to end: configuration -> one check cycle -> states and events.

`check_now` is what `repmon dnsbl check` runs; `run_cycle` is the daemon job:
it checks, advances every (target, zone) state machine and stores states,
zone health and events in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.signals.dnsbl import CheckResult, check
from monitor.signals.dnsclient import DnsClient
from monitor.signals.models import DnsblState
from monitor.signals.settings import DnsblConfig, DnsConfig
from monitor.signals.state import Transition, advance, advance_zone
from monitor.signals.store import (
    listing_event,
    load_dnsbl_states,
    load_zone_health,
    save_dnsbl_states,
    save_zone_health,
    zone_event,
)
from monitor.signals.targets import Target, domain_targets, expand_ips
from monitor.signals.zones import ZoneSpec, build_zones

log = logging.getLogger("repmon.signals.dnsbl")


def configured_targets(dnsbl: DnsblConfig) -> list[Target]:
    return [*expand_ips(dnsbl.ips), *domain_targets([*dnsbl.domains, *dnsbl.link_domains])]


def client_for(dns: DnsConfig) -> DnsClient:
    host, port = dns.host_port
    return DnsClient(host, port, timeout=dns.timeout_s, attempts=dns.attempts)


async def check_now(dns: DnsConfig, dnsbl: DnsblConfig, targets: Sequence[Target] | None = None,
                    zones: Sequence[ZoneSpec] | None = None) -> CheckResult:
    zones = list(zones) if zones is not None else build_zones(dnsbl)
    targets = list(targets) if targets is not None else configured_targets(dnsbl)
    async with client_for(dns) as client:
        return await check(client, zones, targets, concurrency=dns.concurrency, fetch_txt=dnsbl.fetch_txt)


@dataclass(slots=True)
class CycleReport:
    checked: int = 0
    states: Counter = field(default_factory=Counter)  # clean / listed / unknown after the cycle
    observations: Counter = field(default_factory=Counter)  # listed / clean / error this cycle
    transitions: list[Transition] = field(default_factory=list)
    zones: dict[str, str] = field(default_factory=dict)  # zone -> health status


async def run_cycle(dns: DnsConfig, dnsbl: DnsblConfig, engine: Engine, *, now: datetime | None = None,
                    zones: Sequence[ZoneSpec] | None = None) -> CycleReport:
    result = await check_now(dns, dnsbl, zones=zones)
    return await asyncio.to_thread(persist_cycle, engine, result, dnsbl.unknown_after_errors, now or utcnow())


def persist_cycle(engine: Engine, result: CheckResult, unknown_after: int, now: datetime) -> CycleReport:
    report = CycleReport(checked=len(result.observations))
    with session_scope(engine) as session:
        previous = load_dnsbl_states(session)
        new_states = []
        for observation in result.observations:
            report.observations[observation.status] += 1
            state, transition = advance(previous.get((observation.target, observation.zone)), observation,
                                        now, unknown_after)
            new_states.append(state)
            report.states[state.state] += 1
            if transition is not None:
                report.transitions.append(transition)
                session.add(listing_event(transition, now))
                _log_transition(transition)
        save_dnsbl_states(session, new_states, set(previous))
        _forget_unconfigured(session, previous.keys() - {(s.target, s.zone) for s in new_states})

        zone_rows = load_zone_health(session)
        for zone, health in result.health.items():
            row = zone_rows.get(zone)
            zone_transition = advance_zone(row.status if row else None, health)
            save_zone_health(session, zone, health.status, health.detail, now, row)
            report.zones[zone] = health.status
            if zone_transition is not None:
                session.add(zone_event(zone_transition, now))
                level = logging.INFO if health.ok else logging.WARNING
                log.log(level, "blocklist zone %s is %s: %s", zone, health.status, health.detail,
                        extra={"zone": zone, "status": health.status})
    return report


def _forget_unconfigured(session: Session, keys: set[tuple[str, str]]) -> None:
    """States of targets or zones no longer configured; their history stays in the events."""
    ordered = list(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        session.execute(delete(DnsblState).where(tuple_(DnsblState.target, DnsblState.zone).in_(chunk)))


def _log_transition(transition: Transition) -> None:
    extra = {"target": transition.target, "zone": transition.zone, "codes": ",".join(transition.codes)}
    if transition.kind == "listed":
        log.warning("%s is listed on %s: %s", transition.target, transition.zone, transition.reason, extra=extra)
    elif transition.kind == "unknown":
        log.warning("%s on %s is unknown: %s", transition.target, transition.zone, transition.reason, extra=extra)
    else:
        log.info("%s on %s: %s (%s)", transition.target, transition.zone, transition.kind, transition.reason,
                 extra=extra)
