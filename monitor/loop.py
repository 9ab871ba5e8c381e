"""The reaction loop, above health, policy and alerts: health assesses,
policy returns the actions it started and ended, the loop announces them
through alerts. It is the one module that composes the three parts from the
whole configuration (RepmonConfig): each part gets its own section, plus the
values from other sections it needs, named here (the sending domains and
addresses health watches).

health:loop (a service): every [health] interval_s, roll up what is new,
re-assess the subjects it touched (every subject each full_every_s, since
windows slide), store the states, run the policy and note what alerts need
to say. From a complaint or a listing being stored to the directive that
pauses the lane this takes one interval plus one pass; the sender notices the
directive within its 200 ms control poll.

alerts:dispatch (inside the same service): every second, group notifications
into messages and send what is due.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.notify import AlertCenter
from monitor.config import RepmonConfig
from monitor.core.logs import register_secret
from monitor.core.runtime import JobSpec, Runtime
from monitor.health.assess import Assessment
from monitor.health.clock import Clock, SystemClock
from monitor.health.rollup import Rollup, RollupResult
from monitor.health.service import HealthService, HealthStore, Wanted
from monitor.policy.actions import ActionChange
from monitor.policy.evaluate import PolicyEngine, PolicyReport

log = logging.getLogger("repmon.health")


# --- composing the parts from the whole configuration -------------------------------------------

def sending_domains(config: RepmonConfig) -> list[str]:
    """[health] domains, or else every sending domain another section names."""
    if config.health.domains:
        return list(config.health.domains)
    found = list(config.dnsbl.domains) + list(config.dns_auth.domains or [])
    google = config.postmaster.google
    if google is not None:
        found += [d.lower() for d in google.domains]
    return sorted(set(found))


def own_ips(config: RepmonConfig) -> set[str]:
    """Sending addresses named in the config (single addresses of [dnsbl] ips too)."""
    found = {ip.address for ip in config.sender.ips}
    for entry in config.dnsbl.ips:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if network.num_addresses == 1:
            found.add(str(network.network_address))
    return found


def health_service(config: RepmonConfig, engine: Engine) -> HealthService:
    return HealthService(engine, config.health, domains=sending_domains(config), own_ips=own_ips(config))


def health_rollup(config: RepmonConfig, engine: Engine, service: HealthService) -> Rollup:
    return Rollup(engine, mapper=service.mapper, own_ips=service.own_ips,
                  dmarc_own_ips_only=config.health.dmarc_own_ips_only, retention_days=config.health.retention_days)


def announce(alerts: AlertCenter, conn: Connection, changes: list[ActionChange]) -> int:
    """The policy's started and ended actions, told through alerts, in order. Returns the notifications made."""
    before = alerts.created
    for change in changes:
        alerts.announce(conn, change)
    return alerts.created - before


# --- the loop --------------------------------------------------------------------------------------

@dataclass
class TickReport:
    rolled: RollupResult = field(default_factory=RollupResult)
    assessed: int = 0
    changed: int = 0
    policy: PolicyReport = field(default_factory=PolicyReport)
    notifications: int = 0
    full: bool = False


class HealthLoop:
    """One pass = roll up, assess, store, policy, alerts. Synchronous: the
    daemon runs it in a worker thread.

    A pass assesses the subjects new rows touched, plus a slice of a sweep
    over every subject (windows slide, so untouched subjects change too). A
    sweep starts every `full_every_s` and is cut into slices of
    `SWEEP_SLICE` IPs / domains, so no pass is long enough to delay the
    reaction to a new complaint or listing behind thousands of quiet subjects.
    """

    SWEEP_SLICE = 50

    def __init__(self, config: RepmonConfig, engine: Engine, clock: Clock | None = None) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock or SystemClock()
        self.service = health_service(config, engine)
        self.rollup = health_rollup(config, engine, self.service)
        self.store = HealthStore()
        self.alerts = AlertCenter(config.alerts)
        self.policy = PolicyEngine(config.policy, self.service)
        self._sweep_started = float("-inf")
        self._sweep_ips: list[str] = []
        self._sweep_domains: list[str] = []

    def tick(self, *, full: bool | None = None) -> TickReport:
        """One pass. full=True assesses every subject now (`repmon run --once`);
        the default is the touched subjects first, then the next slice of the sweep.

        Database work is kept in short transactions (on SQLite every
        transaction holds the write lock): the inputs are read, the
        assessment runs with no transaction open, the results are written."""
        now = self.clock.now()
        report = TickReport()
        if full is not None or self.rollup.pending():
            report.rolled = self.rollup.run(now)
        if full is True:
            self._pass(report, Wanted(), now, sweep_start=True)
            self._sweep_started = now
            return report
        sweep_start = full is None and (report.rolled.full or (
            not self._sweep_ips and not self._sweep_domains
            and now - self._sweep_started >= self.config.health.full_every_s))
        if sweep_start:
            with self.engine.connect() as conn:
                ips, domains = self.service.subject_keys(conn, now)
            self._sweep_ips, self._sweep_domains = sorted(ips), sorted(domains)
            self._sweep_started = now
        touched = Wanted.from_rollup(report.rolled)
        touched.full = False
        # what just changed goes first: a new complaint or listing is acted on now
        self._pass(report, touched, now, sweep_start=sweep_start)
        if full is None and (self._sweep_ips or self._sweep_domains):
            chunk = Wanted(full=False, ips=set(self._sweep_ips[:self.SWEEP_SLICE]) - touched.ips,
                           domains=set(self._sweep_domains[:self.SWEEP_SLICE]) - touched.domains)
            del self._sweep_ips[:self.SWEEP_SLICE]
            del self._sweep_domains[:self.SWEEP_SLICE]
            self._pass(report, chunk, now, sweep_start=False)
        report.full = sweep_start
        return report

    def _pass(self, report: TickReport, wanted: Wanted, now: float, *, sweep_start: bool) -> None:
        inputs = []
        rdomains: list[Assessment] = []
        if not wanted.empty or sweep_start or report.rolled.dirty_rdomains:
            with self.engine.connect() as conn:
                inputs = self.service.gather(conn, now, wanted)
                if self.policy.wants_rdomains and (sweep_start or report.rolled.dirty_rdomains):
                    keys = None if sweep_start else report.rolled.dirty_rdomains
                    rdomains = self.service.assess_rdomains(conn, now, keys)
        assessments: list[Assessment] = self.service.assess_inputs(inputs, now)
        # one transaction: the states, the actions they cause and what people hear of both
        with self.engine.begin() as conn:
            changes = self.store.save(conn, assessments, now)
            policy = self.policy.evaluate(conn, assessments + rdomains, now, full=sweep_start)
            notifications = announce(self.alerts, conn, policy.changes)
            notifications += self.alerts.observe(conn, changes, now)
        report.assessed += len(assessments)
        report.changed += len(changes)
        report.policy.started += policy.started
        report.policy.ended += policy.ended
        report.policy.would += policy.would
        report.policy.changes += policy.changes
        report.notifications += notifications


def provide(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    loop = HealthLoop(config, runtime.engine)
    runtime.shared["health.loop"] = loop
    dispatcher = Dispatcher(runtime.engine, config.alerts)
    for secret in dispatcher.secrets():
        register_secret(secret)

    async def dispatch_once() -> int:
        # --once: every notification of this pass goes out now, without waiting to gather more
        await asyncio.to_thread(dispatcher.plan, dispatcher.clock.now() + config.alerts.gather_s)
        try:
            return await dispatcher.send_due()
        finally:
            await dispatcher.close()

    async def run_once() -> TickReport:
        report = await asyncio.to_thread(loop.tick, full=True)
        log.info("health: %d subjects assessed, %d changed, %d actions started, %d ended, %d notifications",
                 report.assessed, report.changed, len(report.policy.started), len(report.policy.ended),
                 report.notifications)
        if dispatcher.channels:
            await dispatch_once()
        return report

    async def health_task() -> None:
        while not runtime.stopping.is_set():
            report = await asyncio.to_thread(loop.tick)
            if report.policy.changed:
                log.info("policy: %d actions started, %d ended", len(report.policy.started), len(report.policy.ended))
            if await runtime.sleep(config.health.interval_s):
                return

    async def alerts_task() -> None:
        try:
            while not runtime.stopping.is_set():
                try:
                    await dispatcher.run_once()
                except Exception:  # a database hiccup: the messages wait in the outbox
                    log.exception("alert dispatch failed")
                if await runtime.sleep(1.0):
                    return
        finally:
            await dispatcher.close()

    async def service() -> None:
        tasks = [asyncio.create_task(health_task(), name="health")]
        if dispatcher.channels:
            tasks.append(asyncio.create_task(alerts_task(), name="alerts"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return [JobSpec("health:loop", run_once, service=service)]
