"""The health part's daemon jobs (see monitor/runtime.py).

health:loop (a service): every [health] interval_s, roll up what is new,
re-assess the subjects it touched (every subject each full_every_s, since
windows slide), store the states, run the policy and note what alerts need
to say. From a complaint or a listing being stored to the directive that
pauses the lane this takes one interval plus one pass; the sender notices the
directive within its 200 ms control poll.

alerts:dispatch (a service): every second, group notifications into
messages and send what is due.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.notify import AlertCenter
from monitor.config import RepmonConfig
from monitor.health.assess import Assessment
from monitor.health.clock import Clock, SystemClock
from monitor.health.rollup import Rollup, RollupResult
from monitor.health.service import HealthService, HealthStore, Wanted
from monitor.policy.engine import PolicyEngine, PolicyReport
from monitor.runtime import JobSpec, Runtime

log = logging.getLogger("repmon.health")


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
    daemon runs it in a worker thread."""

    def __init__(self, config: RepmonConfig, engine: Engine, clock: Clock | None = None) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock or SystemClock()
        self.service = HealthService(engine, config)
        self.rollup = Rollup(engine, mapper=self.service.mapper, own_ips=self.service.own_ips,
                             dmarc_own_ips_only=config.health.dmarc_own_ips_only,
                             retention_days=config.health.retention_days)
        self.store = HealthStore()
        self.alerts = AlertCenter(config.alerts)
        self.policy = PolicyEngine(config, self.service, self.alerts)
        self._last_full = float("-inf")

    def tick(self, *, full: bool | None = None) -> TickReport:
        now = self.clock.now()
        report = TickReport()
        report.rolled = self.rollup.run(now)
        if full is None:
            full = now - self._last_full >= self.config.health.full_every_s
        wanted = Wanted() if full else Wanted.from_rollup(report.rolled)
        report.full = wanted.full
        with self.engine.begin() as conn:
            assessments: list[Assessment] = self.service.assess(conn, now, wanted)
            if self.policy.wants_rdomains and (wanted.full or report.rolled.dirty_rdomains):
                keys = None if wanted.full else report.rolled.dirty_rdomains
                rdomains = self.service.assess_rdomains(conn, now, keys)
            else:
                rdomains = []
            changes = self.store.save(conn, assessments, now)
            report.assessed, report.changed = len(assessments), len(changes)
            before = self.alerts.created
            report.policy = self.policy.evaluate(conn, assessments + rdomains, now, full=wanted.full)
            self.alerts.observe(conn, changes, now)
            report.notifications = self.alerts.created - before
        if wanted.full:
            self._last_full = now
        return report


def provide(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    from monitor.runtime import register_secret

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

    async def health_service() -> None:
        while not runtime.stopping.is_set():
            report = await asyncio.to_thread(loop.tick)
            if report.policy.changed:
                log.info("policy: %d actions started, %d ended", len(report.policy.started), len(report.policy.ended))
            if await runtime.sleep(config.health.interval_s):
                return

    async def alerts_service() -> None:
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
        tasks = [asyncio.create_task(health_service(), name="health")]
        if dispatcher.channels:
            tasks.append(asyncio.create_task(alerts_service(), name="alerts"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return [JobSpec("health:loop", run_once, service=service)]
