"""The delivery service's coordinator: routes queued messages onto lanes,
feeds the lanes' buffers, applies lane directives and runs housekeeping.

One asyncio loop does all network I/O. All database work runs on one
dedicated thread (SQLite allows one writer; one thread also keeps the
statement cache warm), in batches: a claim leases up to `batch_size`
messages of a lane, a flush writes hundreds of outcomes in one transaction.

    router ─► set lane ─► lanes claim ─► buffers ─► connection workers ─► outcomes ─► flush
                                  ▲                         │
    control poll (200 ms) ─► directives/actions ─► overlays ┘ (checked before every transaction)

The parts: sources.py picks the sending IP (weights, warm-up), delivery.py
runs the connections, outcomes.py records what happened and writes it,
smtp.py speaks SMTP (pipelined), control.py stores directives and actions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from monitor.core.units import parse_duration
from monitor.storage.suppression import suppressed_addresses
from sender import control, queue
from sender.aio import wait_event
from sender.delivery import Delivery, Placement
from sender.dkim import DkimSigner
from sender.lanes import Lane, LaneKey, build_overlay, lane_settings, matches
from sender.outcomes import Outcomes, SendStats, retry_delay
from sender.queue import Outcome, QueuedMessage
from sender.routing import RELAY, RouteError, Router, Site
from sender.rules import RuleBook, load_rules
from sender.settings import SenderConfig
from sender.shared_limits import SharedLimits
from sender.sources import Sources
from sender.warmup import WarmupState

__all__ = ["CONTROL_POLL_S", "SendStats", "Sender", "retry_delay"]

log = logging.getLogger("repmon.sender")

CONTROL_POLL_S = 0.2
HOUSEKEEPING_S = 5.0

R = TypeVar("R")


class Sender:
    def __init__(self, config: SenderConfig, engine: Engine, *, router: Router | None = None,
                 rules: RuleBook | None = None, owner: str | None = None, seed: int | None = None,
                 shared: SharedLimits | None = None) -> None:
        self.config = config
        self.shared = shared  # cluster-wide lane limits (several nodes on PostgreSQL)
        self.engine = engine
        self.owner = owner or queue.owner_id()
        self.router = router or Router(
            relay=(config.relay.host, config.relay.port) if config.relay else None,
            provider_suffixes={name: p.mx_suffixes for name, p in config.providers.items()},
            nameservers=list(config.nameservers), mx_port=config.mx_port)
        self.rules = rules or RuleBook(load_rules(config.rules_file, config.default_rules))
        self.rng = random.Random(seed)
        self.batch = config.batch_size
        self.resume_step = parse_duration(config.resume_step)
        self.lanes: dict[str, Lane] = {}
        self.sources = Sources(config.ips, config.warmup)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repmon-sender-db")
        self.outcomes = Outcomes(config, engine, self.owner, self._run_db, lanes=self.lanes, sources=self.sources,
                                 rules=self.rules, rng=self.rng)
        signers = {k.domain.lower(): DkimSigner.from_file(k.domain, k.selector, k.key_file, k.algorithm)
                   for k in config.dkim}
        self.delivery = Delivery(config, self.router, self.outcomes, signers)
        self._feed_wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._control_version = -1
        self._relay_site = (Site(RELAY, (config.relay.host,), config.relay.port) if config.relay else None)
        self._last_scan = 0.0
        self._unrouted_empty_until = 0.0
        self._known_lanes: set[str] = set()
        self._route_targets: set[Lane] = set()
        self._last_route_at = 0.0
        # The directives and rule actions in force as last read: a lane made
        # after that read (the first mail through an IP or to a destination)
        # starts under them, not open until the next directive change.
        self._directives: list[dict[str, Any]] = []
        self._actions: list[dict[str, Any]] = []

    @property
    def stats(self) -> SendStats:
        return self.outcomes.stats

    @property
    def warmup(self) -> dict[tuple[str, str], WarmupState]:
        return self.sources.states

    def lane_for(self, source_ip: str, destination: str) -> Lane:
        key = str(LaneKey(source_ip, destination))
        lane = self.lanes.get(key)
        if lane is None:
            src = self.sources.source(source_ip)
            lane = Lane(key, source_ip, src.bind, src.ehlo_name, destination,
                        lane_settings(self.config, destination), self.resume_step)
            now = time.time()
            lane.set_overlay(build_overlay(lane, self._directives, self._actions, now), now)
            if self.shared is not None:
                self.shared.attach(lane)
            self.lanes[key] = lane
        return lane

    async def _run_db(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- the service -------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> SendStats:
        """Deliver until `stop` is set, or (until_idle) until nothing deliverable is left."""
        self._stopping = stopping = stop or asyncio.Event()
        self.outcomes.wake = flush_wake = asyncio.Event()
        self._feed_wake = asyncio.Event()
        self.delivery.start(stopping, self._feed_wake)
        await self._run_db(self._startup_db)
        await self._poll_control(force=True)
        background = [
            asyncio.create_task(self.outcomes.flusher(stopping), name="sender-flush"),
            asyncio.create_task(self._control_loop(), name="sender-control"),
            asyncio.create_task(self._housekeeping_loop(), name="sender-housekeeping"),
        ]
        if self.shared is not None:
            background.append(asyncio.create_task(
                self.shared.serve(lambda: list(self.lanes.values()), stopping), name="sender-shared-limits"))
        try:
            await self._feeder(until_idle)
        finally:
            stopping.set()
            self._notify_all()
            await self.delivery.drain()
            for lane in self.lanes.values():
                self.outcomes.release(lane)
            flush_wake.set()
            await asyncio.gather(*background, return_exceptions=True)  # each loop ends on stopping
            await self.outcomes.flush()
            self._db.shutdown(wait=True)
            self.delivery.shutdown()
        return self.stats

    async def set_directive(self, kind: str, source_ip: str, destination: str, *, rate: float | None = None,
                            reason: str = "", created_by: str = "operator") -> None:
        """pause / slow / resume from inside this process (the policy engine
        in `repmon run`, a test): it takes effect before the next transaction,
        then is stored like any directive so other senders follow within the
        control poll."""
        now = time.time()
        for lane in self.lanes.values():
            if not matches(source_ip, destination, lane):
                continue
            overlay = lane.overlay
            if kind == "pause":
                overlay.paused = f"paused by {created_by}: {reason or 'no reason given'}"
            elif kind == "slow" and rate is not None:
                overlay.rate = rate if overlay.rate is None else min(overlay.rate, rate)
            elif kind == "resume":
                lane.local_halt = None
                lane.local_suspend_until = 0.0
            lane.set_overlay(overlay, now)
            if lane.blocked(now):
                self.outcomes.release(lane)

        def store() -> None:
            with self.engine.begin() as conn:
                control.add_directive(conn, kind, source_ip, destination, rate=rate, reason=reason,
                                      created_by=created_by, now=now)

        await self._run_db(store)
        await self._poll_control(force=True)

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
            self._notify_all()

    def _notify_all(self) -> None:
        for lane in self.lanes.values():
            lane.notify()
        if self._feed_wake is not None:
            self._feed_wake.set()

    def _startup_db(self) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            n = queue.reclaim_dead(conn, now)
            if n:
                log.info("took back %d messages left in flight by a sender that stopped", n)
            self.sources.load(conn)
            counters = queue.lane_counters_today(conn, now)
            known = queue.known_lanes(conn)
        day = queue.utc_day(now)
        for key, delivered in counters.items():
            lane = self.lane_for(*LaneKey.parse(key))
            lane.delivered_today, lane.day = delivered, day
        self._known_lanes = known

    # -- feeding lanes -----------------------------------------------------------------

    async def _feeder(self, until_idle: bool) -> None:
        assert self._stopping is not None and self._feed_wake is not None
        idle_checks = 0
        while not self._stopping.is_set():
            now = time.time()
            worked = False
            if now >= self._unrouted_empty_until and self._route_has_room(now):
                self._last_route_at = now
                routed = await self._route_batch(now)
                worked |= routed > 0
                if routed < self.batch:
                    self._unrouted_empty_until = now + 0.5
            if now - self._last_scan > 1.0:
                self._last_scan = now
                due = await self._run_db(self._due_lanes, now)
                for key in due:
                    if key:
                        self.lane_for(*LaneKey.parse(key)).db_empty_until = 0.0
            for lane in list(self.lanes.values()):
                worked |= await self._fill(lane, now)
            if until_idle:
                if worked or self._busy():
                    idle_checks = 0
                else:
                    await self.outcomes.flush()
                    remaining = await self._run_db(self._deliverable_left, time.time())
                    idle_checks = idle_checks + 1 if remaining == 0 else 0
                    if idle_checks >= 2:
                        return
            self._feed_wake.clear()
            await wait_event(self._feed_wake, 0.05 if worked else 0.2)

    def _route_has_room(self, now: float) -> bool:
        """Route the next batch when a lane that took routed mail last time has
        room, and at least once a second whatever: mail for full or blocked
        lanes then goes back to the queue with its lane set (the lane claims
        it when it can send), so one slow or paused lane never holds up the
        routing of other campaigns and pools."""
        if now - self._last_route_at >= 1.0:
            return True
        open_targets = [lane for lane in self._route_targets if not lane.blocked(now)]
        if not open_targets:
            return True
        return any(lane.buffered() < max(1, lane.buffer_target(self.batch) // 2) for lane in open_targets)

    def _busy(self) -> bool:
        return (bool(self.delivery.tasks) or any(lane.buffered() for lane in self.lanes.values())
                or bool(self.outcomes.pending.outcomes))

    def _due_lanes(self, now: float) -> list[str]:
        with self.engine.connect() as conn:
            return queue.due_lanes(conn, now)

    def _deliverable_left(self, now: float) -> int:
        blocked = [key for key, lane in self.lanes.items() if lane.blocked(now)]
        with self.engine.connect() as conn:
            return queue.pending_count(conn, now, blocked)

    async def _fill(self, lane: Lane, now: float) -> bool:
        """Claim messages for a lane that has room and can send."""
        if lane.claiming or lane.db_empty_until > now or lane.blocked(now) or now < lane.retry_connect_at:
            self.delivery.pump(lane)
            return False
        target = lane.buffer_target(self.batch)
        have = lane.buffered()
        if have > target // 2 or target <= 0:
            self.delivery.pump(lane)
            return False
        lane.claiming = True
        try:
            claimed, suppressed = await self._run_db(self._claim, lane.key, target - have, now)
        finally:
            lane.claiming = False
        for message in suppressed:
            self.outcomes.add(Outcome(message, "suppressed", now, reason="suppressed"))
        if len(claimed) + len(suppressed) < target - have:
            lane.db_empty_until = now + 0.5
        placed: list[Placement] = []
        for message in claimed:
            site = self._relay_site
            if site is None:
                try:
                    site = await self.router.site_for(message.domain)
                except RouteError as exc:
                    self.outcomes.route_failed(message, exc, time.time())
                    continue
            placed.append((lane, site, message))
        await self.delivery.place(placed)
        if lane.blocked(time.time()):
            self.outcomes.release(lane)
        self.delivery.pump(lane)
        return bool(claimed or suppressed)

    def _claim(self, key: str, limit: int, now: float) -> tuple[list[QueuedMessage], list[QueuedMessage]]:
        """Lease a batch, then check it against the suppression list: the last
        check before these messages go out."""
        with self.engine.begin() as conn:
            claimed = queue.claim(conn, key, limit, self.owner, now)
            if not claimed:
                return [], []
            with Session(bind=conn) as session:
                blocked = suppressed_addresses(session, [m.recipient for m in claimed])
        if not blocked:
            return claimed, []
        return [m for m in claimed if m.recipient not in blocked], [m for m in claimed if m.recipient in blocked]

    # -- routing -----------------------------------------------------------------------

    async def _route_batch(self, now: float) -> int:
        """Claim unrouted messages, give each its lane (MX or relay, then an IP
        of its pool) and keep them in the lane's buffer when it has room; the
        others go back to the queue with their lane set, for the lane to
        claim when it can send."""
        claimed, suppressed = await self._run_db(self._claim, "", self.batch, now)
        self._route_targets = set()
        placed: list[Placement] = []
        placing: dict[str, int] = {}
        for message in suppressed:
            self.outcomes.add(Outcome(message, "suppressed", now, reason="suppressed"))
        for m in claimed:
            try:
                site = self._relay_site or await self.router.site_for(m.domain)
            except RouteError as exc:
                self.outcomes.route_failed(m, exc, now)
                continue
            source = self.sources.pick(m.pool, site.destination, now)
            if source is None:
                # Every IP of the pool is at its warm-up cap for this provider: wait for tomorrow.
                self.outcomes.add(Outcome(m, "postponed", now, reply=f"warm-up caps of pool {m.pool} reached for "
                                          f"{site.destination}", reason="warmup", retry_at=_next_utc_midnight(now)))
                continue
            lane = self.lane_for(source.address, site.destination)
            self._route_targets.add(lane)
            m.lane, m.source_ip = lane.key, source.bind
            if lane.key not in self._known_lanes:
                self._known_lanes.add(lane.key)
                self.outcomes.register_lane(lane)
            if lane.blocked(now) or lane.buffered() + placing.get(lane.key, 0) >= lane.buffer_target(self.batch):
                self.outcomes.add(Outcome(m, "released", now))
                lane.db_empty_until = 0.0
                continue
            placing[lane.key] = placing.get(lane.key, 0) + 1
            placed.append((lane, site, m))
        await self.delivery.place(placed)
        return len(claimed) + len(suppressed)

    # -- control -----------------------------------------------------------------------

    async def _control_loop(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            await wait_event(self._stopping, CONTROL_POLL_S)
            if self._stopping.is_set():
                return
            try:
                await self._poll_control()
            except Exception:  # a database hiccup must not stop delivery
                log.exception("reading lane directives failed")

    async def _poll_control(self, force: bool = False) -> None:
        version = await self._run_db(self._read_version)
        now = time.time()
        if version == self._control_version and not force:
            for lane in self.lanes.values():
                lane.refresh(now)  # notices suspensions that just ran out
            return
        self._control_version = version
        directives, actions, resumes = await self._run_db(self._read_control, now)
        self._directives, self._actions = directives, actions
        for lane in self.lanes.values():
            overlay = build_overlay(lane, directives, actions, now)
            for r in resumes:
                if matches(r["source_ip"], r["destination"], lane) and r["created_at"] >= lane.local_set_at:
                    # An operator resumed the lane after this process's own rule hit.
                    lane.local_halt = None
                    lane.local_suspend_until = 0.0
            lane.set_overlay(overlay, now)
            if lane.blocked(now):
                self.outcomes.release(lane)
            else:
                self.delivery.pump(lane)
        if self._feed_wake is not None:
            self._feed_wake.set()

    def _read_version(self) -> int:
        with self.engine.connect() as conn:
            return control.read_version(conn)

    def _read_control(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            return (control.active_directives(conn), control.active_actions(conn),
                    control.recent_resumes(conn, now - 86400))

    async def _housekeeping_loop(self) -> None:
        """Every few seconds: end expired actions, take back abandoned
        messages, expire messages stuck past max age in blocked lanes."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            await wait_event(self._stopping, HOUSEKEEPING_S)
            if self._stopping.is_set():
                return
            try:
                now = time.time()
                blocked = [key for key, lane in self.lanes.items() if lane.blocked(now)]
                expired = await self._run_db(self._housekeeping, now, blocked)
            except Exception:
                log.exception("sender housekeeping failed")
                continue
            now = time.time()
            for m, last in expired:
                self.outcomes.expired(m, last, now)

    def _housekeeping(self, now: float, blocked: list[str]) -> list[tuple[QueuedMessage, str | None]]:
        with self.engine.begin() as conn:
            control.end_expired(conn, now)
            queue.reclaim_dead(conn, now)
            return queue.expire_old(conn, self.outcomes.max_age, now, blocked)


def _next_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp() + 1
