"""The delivery service: routes queued messages onto lanes, keeps each lane's
connections busy within its limits and writes what happened, in batches.

One asyncio loop does all network I/O. All database work runs on one
dedicated thread (SQLite allows one writer; one thread also keeps the
statement cache warm), in batches: a claim leases up to `batch_size`
messages of a lane, a flush writes hundreds of outcomes in one transaction.

    router ─► set lane ─► lanes claim ─► buffers ─► connection workers ─► outcomes ─► flush
                                  ▲                         │
    control poll (200 ms) ─► directives/actions ─► overlays ┘ (checked before every transaction)
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from monitor.core.units import parse_duration
from parsers import tracking
from parsers.bounce.classify import classify
from parsers.bounce.reasons import EXPIRED as REASON_EXPIRED
from parsers.bounce.reasons import HARD_REASONS
from parsers.events import BounceEvent, Tracking
from sender import control, queue
from sender.dkim import DkimSigner, body_hash_of_wire, signer_for
from sender.lanes import DEFAULT_SOURCE, Lane, build_overlay, lane_key, lane_settings, matches
from sender.queue import Outcome, QueuedMessage
from sender.routing import RELAY, RouteError, Router, Site
from sender.rules import RuleBook, RuleHit, load_rules
from sender.settings import SenderConfig
from sender.smtp import Reply, SmtpConnection, SmtpFailure, TransactionResult
from sender.warmup import WarmupState, load_states, save_states

log = logging.getLogger("repmon.sender")

_RETRY_HINT = re.compile(
    r"(?:try|retry|come back)\s+(?:again\s+)?(?:later\s+)?(?:in|after)\s+(\d+)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b", re.IGNORECASE)
_HINT_UNIT = {"s": 1, "m": 60, "h": 3600}
IDLE_CLOSE_S = 2.0  # a connection with nothing to send for this long is closed
CONTROL_POLL_S = 0.2
FLUSH_INTERVAL_S = 0.025
MAX_CONNECT_BACKOFF_S = 300.0


_CONNECTION_ERRORS = (OSError, EOFError, TimeoutError, asyncio.TimeoutError, ConnectionError)


def retry_delay(attempts: int, reply_text: str, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential back-off with jitter; a server's "try again in N" wins."""
    hint = _RETRY_HINT.search(reply_text or "")
    if hint:
        seconds = int(hint.group(1)) * _HINT_UNIT[hint.group(2)[0].lower()]
        return max(1.0, seconds * (1.0 + 0.1 * rng.random()))
    base = min(maximum, initial * (2 ** min(attempts, 30)))
    return base * (0.8 + 0.4 * rng.random())


# The SMTP command a transaction stage's reply answered, as classify() names them.
_STAGE_COMMANDS = {"connect": "CONN", "mail": "MAIL", "rcpt": "RCPT", "data": "DATA", "end": "DATA"}


@dataclass
class SendStats:
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    expired: int = 0
    suppressed: int = 0
    released: int = 0
    postponed: int = 0
    transactions: int = 0
    connections: int = 0

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


@dataclass(slots=True)
class _Source:
    address: str  # lane key part: the IP, or "default"
    bind: str | None
    ehlo_name: str
    weight: float
    warmup: bool
    current: float = 0.0  # smooth weighted round robin state


@dataclass
class _PendingWrite:
    outcomes: list[Outcome] = field(default_factory=list)
    bounces: list[tuple[BounceEvent, bool]] = field(default_factory=list)  # (event, suppress the address)
    actions: list[dict] = field(default_factory=list)


class Sender:
    def __init__(self, config: SenderConfig, engine: Engine, *, router: Router | None = None,
                 rules: RuleBook | None = None, owner: str | None = None, seed: int | None = None) -> None:
        self.config = config
        self.engine = engine
        self.owner = owner or queue.owner_id()
        self.router = router or Router(
            relay=(config.relay.host, config.relay.port) if config.relay else None,
            provider_suffixes={name: p.mx_suffixes for name, p in config.providers.items()},
            nameservers=list(config.nameservers), mx_port=config.mx_port)
        self.rules = rules or RuleBook(load_rules(config.rules_file, config.default_rules))
        self.rng = random.Random(seed)
        self.max_age = parse_duration(config.max_age)
        self.retry_initial = parse_duration(config.retry_initial)
        self.retry_max = parse_duration(config.retry_max)
        self.resume_step = parse_duration(config.resume_step)
        self.batch = config.batch_size
        self.signers = {k.domain.lower(): DkimSigner.from_file(k.domain, k.selector, k.key_file, k.algorithm)
                        for k in config.dkim}
        self.pools = self._build_pools()
        self.lanes: dict[str, Lane] = {}
        self.stats = SendStats()
        self.warmup: dict[tuple[str, str], WarmupState] = {}
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repmon-sender-db")
        self._sign_pool = (ThreadPoolExecutor(max_workers=2, thread_name_prefix="repmon-sender-dkim")
                           if self.signers else None)
        self._pending = _PendingWrite()
        self._pending_since = 0.0
        self._flush_wake: asyncio.Event | None = None
        self._feed_wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._control_version = -1
        self._relay_site = (Site(RELAY, (config.relay.host,), config.relay.port) if config.relay else None)
        self._last_scan = 0.0
        self._unrouted_empty_until = 0.0
        self._pending_leases: list[int] = []  # queued messages to lease in the next flush (to bounce them)
        self._pending_lanes: list[tuple[str, str, str]] = []  # lanes to register in sender_lane
        self._known_lanes: set[str] = set()
        self._route_targets: set[Lane] = set()
        self._last_route_at = 0.0

    # -- set-up ------------------------------------------------------------------------

    def _build_pools(self) -> dict[str, list[_Source]]:
        pools: dict[str, list[_Source]] = {}
        if not self.config.ips:
            pools["default"] = [_Source(DEFAULT_SOURCE, None, socket.getfqdn(), 1.0, False)]
        for ip in self.config.ips:
            pools.setdefault(ip.pool, []).append(_Source(ip.address, ip.address, ip.ehlo_name, ip.weight, ip.warmup))
        return pools

    def _source(self, address: str) -> _Source:
        for sources in self.pools.values():
            for s in sources:
                if s.address == address:
                    return s
        return _Source(address, None if address == DEFAULT_SOURCE else address, socket.getfqdn(), 1.0, False)

    def lane_for(self, source_ip: str, destination: str) -> Lane:
        key = lane_key(source_ip, destination)
        lane = self.lanes.get(key)
        if lane is None:
            src = self._source(source_ip)
            lane = Lane(key, source_ip, src.bind, src.ehlo_name, destination,
                        lane_settings(self.config, destination), self.resume_step)
            self.lanes[key] = lane
        return lane

    async def _run_db(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- the service -------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None) -> SendStats:
        """Deliver until `stop` is set, or (until_idle) until nothing deliverable is left."""
        self._stopping = stop or asyncio.Event()
        self._flush_wake = asyncio.Event()
        self._feed_wake = asyncio.Event()
        await self._run_db(self._startup_db)
        await self._poll_control(force=True)
        background = [
            asyncio.create_task(self._flusher(), name="sender-flush"),
            asyncio.create_task(self._control_loop(), name="sender-control"),
            asyncio.create_task(self._housekeeping_loop(), name="sender-housekeeping"),
        ]
        try:
            await self._feeder(until_idle)
        finally:
            self._stopping.set()
            self._notify_all()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self._release_buffers()
            self._flush_wake.set()
            await asyncio.gather(*background, return_exceptions=True)  # each loop ends on _stopping
            await self._flush_now()
            self._db.shutdown(wait=True)
            if self._sign_pool is not None:
                self._sign_pool.shutdown(wait=True)
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
                await self._release_lane(lane)

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
            self.warmup = load_states(conn)
            counters = queue.lane_counters_today(conn, now)
            known = [r[0] for r in conn.exec_driver_sql("SELECT lane FROM sender_lane")]
        day = queue.utc_day(now)
        for key, delivered in counters.items():
            ip, _, dest = key.partition("|")
            lane = self.lane_for(ip, dest)
            lane.delivered_today, lane.day = delivered, day
        self._known_lanes = set(known)

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
                        ip, _, dest = key.partition("|")
                        self.lane_for(ip, dest).db_empty_until = 0.0
            for lane in list(self.lanes.values()):
                worked |= await self._fill(lane, now)
            if until_idle:
                if worked or self._busy():
                    idle_checks = 0
                else:
                    await self._flush_now()
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
        return bool(self._tasks) or any(lane.buffered() for lane in self.lanes.values()) or bool(self._pending.outcomes)

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
            self._pump(lane)
            return False
        target = lane.buffer_target(self.batch)
        have = lane.buffered()
        if have > target // 2 or target <= 0:
            self._pump(lane)
            return False
        lane.claiming = True
        try:
            claimed, suppressed = await self._run_db(self._claim, lane.key, target - have, now)
        finally:
            lane.claiming = False
        for message in suppressed:
            self._add_outcome(Outcome(message, "suppressed", now, reason="suppressed"))
        if len(claimed) + len(suppressed) < target - have:
            lane.db_empty_until = now + 0.5
        placed: list[tuple[Lane, Site, QueuedMessage]] = []
        for message in claimed:
            site = self._relay_site
            if site is None:
                try:
                    site = await self.router.site_for(message.domain)
                except RouteError as exc:
                    self._route_failed(message, exc, time.time())
                    continue
            placed.append((lane, site, message))
        await self._place(placed)
        if lane.blocked(time.time()):
            await self._release_lane(lane)
        self._pump(lane)
        return bool(claimed or suppressed)

    def _claim(self, key: str, limit: int, now: float) -> tuple[list[QueuedMessage], list[QueuedMessage]]:
        """Lease a batch, then check it against the suppression list: the last
        check before these messages go out."""
        from monitor.storage.suppression import suppressed_addresses

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
        placed: list[tuple[Lane, Site, QueuedMessage]] = []
        placing: dict[str, int] = {}
        for message in suppressed:
            self._add_outcome(Outcome(message, "suppressed", now, reason="suppressed"))
        for m in claimed:
            try:
                site = self._relay_site or await self.router.site_for(m.domain)
            except RouteError as exc:
                self._route_failed(m, exc, now)
                continue
            source = self._pick_source(m.pool, site.destination, now)
            if source is None:
                # Every IP of the pool is at its warm-up cap for this provider: wait for tomorrow.
                self._add_outcome(Outcome(m, "postponed", now, reply=f"warm-up caps of pool {m.pool} reached for "
                                          f"{site.destination}", reason="warmup", retry_at=_next_utc_midnight(now)))
                continue
            lane = self.lane_for(source.address, site.destination)
            self._route_targets.add(lane)
            m.lane, m.source_ip = lane.key, source.bind
            if lane.key not in self._known_lanes:
                self._known_lanes.add(lane.key)
                self._pending_lanes.append((lane.key, source.address, site.destination))
            if lane.blocked(now) or lane.buffered() + placing.get(lane.key, 0) >= lane.buffer_target(self.batch):
                self._add_outcome(Outcome(m, "released", now))
                lane.db_empty_until = 0.0
                continue
            placing[lane.key] = placing.get(lane.key, 0) + 1
            placed.append((lane, site, m))
        await self._place(placed)
        return len(claimed) + len(suppressed)

    async def _place(self, placed: list[tuple[Lane, Site, QueuedMessage]]) -> None:
        """Put claimed messages into their lanes' buffers. With DKIM keys the
        per-delivery part of each message (tracking header, signature) is
        built first on the signing threads: OpenSSL releases the GIL, so
        signatures are computed on the second core while this loop sends."""
        if not placed:
            return
        if self._sign_pool is not None:
            loop = asyncio.get_running_loop()
            chunks = [placed[i:i + 64] for i in range(0, len(placed), 64)]
            await asyncio.gather(*(loop.run_in_executor(self._sign_pool, self._prepare_chunk, c) for c in chunks))
        touched: set[Lane] = set()
        for lane, site, m in placed:
            buf = lane.buffers.get(site.key)
            if buf is None:
                buf = lane.buffers[site.key] = deque()
                lane.sites[site.key] = site
                lane.site_active.setdefault(site.key, 0)
            buf.append(m)
            touched.add(lane)
        for lane in touched:
            lane.notify()
            if lane.blocked():
                await self._release_lane(lane)
            else:
                self._pump(lane)

    def _prepare_chunk(self, chunk: list[tuple[Lane, Site, QueuedMessage]]) -> None:
        for lane, _, m in chunk:
            m.prepared = self._build(lane, m)

    def _pick_source(self, pool: str, destination: str, now: float) -> _Source | None:
        """Smooth weighted round robin over the pool's IPs that are under
        their warm-up cap; the overflow pool when every IP is capped."""
        sources = self.pools.get(pool) or self.pools.get("default") or next(iter(self.pools.values()))
        today = queue.utc_day(now) if any(s.warmup for s in sources) else ""
        eligible = []
        for s in sources:
            if s.warmup:
                state = self._warmup_state(s.address, destination, today)
                cap = state.cap(self.config.warmup.schedule)
                if cap is not None and state.routed_today >= cap:
                    continue
            eligible.append(s)
        if not eligible:
            overflow = self.config.warmup.overflow_pool
            if overflow and overflow != pool and overflow in self.pools:
                return self._pick_source(overflow, destination, now)
            return None
        total = sum(s.weight for s in eligible)
        best = None
        for s in eligible:
            s.current += s.weight
            if best is None or s.current > best.current:
                best = s
        assert best is not None
        best.current -= total
        if best.warmup:
            state = self._warmup_state(best.address, destination, today)
            state.routed_today += 1
            state.dirty = True
        return best

    def _warmup_state(self, ip: str, destination: str, today: str) -> WarmupState:
        state = self.warmup.get((ip, destination))
        if state is None:
            state = self.warmup[(ip, destination)] = WarmupState(ip, destination, 0, today, started_on=today)
        state.roll_over(today, self.config.warmup)
        return state

    def _route_failed(self, m: QueuedMessage, exc: RouteError, now: float) -> None:
        if not exc.permanent:
            self._transient(None, m, None, str(exc), now)
            return
        self._bounce(m, None, None, str(exc), exc.reason, "hard" if exc.reason in HARD_REASONS else "soft", now, None)

    # -- connections -------------------------------------------------------------------

    def _pump(self, lane: Lane) -> None:
        """Open connections up to the lane's limit for sites with waiting mail."""
        if self._stopping is not None and self._stopping.is_set():
            return
        now = time.time()
        if lane.blocked(now) or now < lane.retry_connect_at:
            return
        limit = lane.effective_connections()
        for site_key, buf in lane.buffers.items():
            while buf and lane.active < limit and lane.site_active[site_key] < len(buf):
                lane.active += 1
                lane.site_active[site_key] += 1
                task = asyncio.create_task(self._worker(lane, lane.sites[site_key]))  # type: ignore[arg-type]
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _open(self, lane: Lane, site: Site) -> SmtpConnection:
        failure: SmtpFailure | None = None
        for host in site.hosts:
            addresses = [host] if site.destination == RELAY else await self.router.addresses(host)
            for address in addresses[:2]:
                try:
                    conn = await SmtpConnection.open(
                        address, site.port, ehlo_name=lane.ehlo_name, source_ip=lane.bind_ip,
                        tls=lane.settings.tls, server_hostname=host,  # type: ignore[arg-type]
                        connect_timeout=self.config.connect_timeout_s, command_timeout=self.config.command_timeout_s)
                    self.stats.connections += 1
                    return conn
                except SmtpFailure as exc:
                    failure = exc
                    if exc.reply is not None:
                        raise  # the server answered: another host of the same site would say the same
        raise failure or SmtpFailure(f"no address for {', '.join(site.hosts)}")

    async def _worker(self, lane: Lane, site: Site) -> None:
        """One connection of a lane: takes messages from the site's buffer
        while the lane may send, up to the lane's deliveries per connection."""
        conn: SmtpConnection | None = None
        sent = 0
        buf = lane.buffers[site.key]
        message: QueuedMessage | None = None
        try:
            message = await self._next_message(lane, buf)
            while message is not None:
                if conn is None:
                    try:
                        conn = await self._open(lane, site)
                    except SmtpFailure as exc:
                        buf.appendleft(message)
                        message = None
                        self._connect_failed(lane, site, exc)
                        return
                    lane.connect_failures = 0
                if conn.pipelining:
                    sent, message = await self._pipelined(conn, lane, site, buf, message, sent)
                else:
                    sent += 1
                    await self._one(conn, lane, site, message)
                    message = None
                if not conn.usable:
                    conn.abort()
                    conn = None
                    break  # a fresh worker (and connection) takes over through _pump
                if sent >= lane.deliveries_per_connection():
                    break
                if message is None:
                    message = await self._next_message(lane, buf)
        finally:
            if message is not None:
                buf.appendleft(message)  # taken but never attempted
            if conn is not None:
                await conn.quit()
            lane.active -= 1
            lane.site_active[site.key] -= 1
            self._pump(lane)
            if self._feed_wake is not None:
                self._feed_wake.set()

    async def _one(self, conn: SmtpConnection, lane: Lane, site: Site, m: QueuedMessage) -> None:
        """A transaction on a server without PIPELINING."""
        verp, content = self._prepare(lane, m)
        try:
            result = await conn.send(verp, m.recipient, content, eight_bit=m.eight_bit)
        except _CONNECTION_ERRORS as exc:
            self._lost(conn, lane, m, exc)
            return
        self._handle(lane, site, m, result)

    async def _pipelined(self, conn: SmtpConnection, lane: Lane, site: Site, buf: deque, m: QueuedMessage,
                         sent: int) -> tuple[int, QueuedMessage | None]:
        """Transactions chained on one connection: the content and final dot
        of one message leave in the same write as MAIL/RCPT/DATA of the next
        (RFC 2920 lets message content open a command group), so a steady
        stream costs one write and one wake-up per message.

        Returns the updated count and a message taken but not attempted (the
        connection closed before its envelope got any reply), or None."""
        limit = lane.deliveries_per_connection()
        started = await self._envelope(conn, lane, m)
        if started is None:
            return sent + 1, None
        replies, content = started
        while True:
            r_mail, r_rcpt, r_data = replies
            sent += 1
            if r_mail.code != 250 or r_rcpt.code not in (250, 251) or r_data.code != 354:
                stage, reply = (("mail", r_mail) if r_mail.code != 250 else
                                ("rcpt", r_rcpt) if r_rcpt.code not in (250, 251) else ("data", r_data))
                self._handle(lane, site, m, TransactionResult(stage, reply))
                try:
                    await conn.end_failed_envelope(r_data)
                except (SmtpFailure, *_CONNECTION_ERRORS):
                    conn.abort()
                    return sent, None
                nxt = self._take_now(lane, buf) if sent < limit else None
                if nxt is None:
                    return sent, None
                m = nxt
                started = await self._envelope(conn, lane, m)
                if started is None:
                    return sent + 1, None
                replies, content = started
                continue
            nxt = self._take_now(lane, buf) if sent < limit else None
            if nxt is None:
                try:
                    conn.write(content + b".\r\n")
                    (r_end,) = await conn.read(1)
                except _CONNECTION_ERRORS as exc:
                    self._lost(conn, lane, m, exc)
                    return sent, None
                self._handle(lane, site, m, TransactionResult("end", r_end))
                return sent, None
            next_verp, next_content = self._prepare(lane, nxt)
            try:
                conn.write(content + b".\r\n" + conn.envelope(next_verp, nxt.recipient, nxt.eight_bit))
                got = await conn.read(4, partial=True)
            except _CONNECTION_ERRORS as exc:
                self._lost(conn, lane, m, exc)
                return sent, nxt
            self._handle(lane, site, m, TransactionResult("end", got[0]))
            if len(got) < 4:  # closed after the end of data (e.g. a per-connection cap)
                conn.abort()
                return sent, nxt
            replies = got[1:]
            m, content = nxt, next_content

    async def _envelope(self, conn: SmtpConnection, lane: Lane, m: QueuedMessage) -> tuple[list[Reply], bytes] | None:
        """MAIL/RCPT/DATA of one message on its own: its replies and its content,
        or None when the connection was lost (the message is then deferred)."""
        verp, content = self._prepare(lane, m)
        try:
            conn.write(conn.envelope(verp, m.recipient, m.eight_bit))
            return await conn.read(3), content
        except _CONNECTION_ERRORS as exc:
            self._lost(conn, lane, m, exc)
            return None

    def _take_now(self, lane: Lane, buf: deque) -> QueuedMessage | None:
        """The next message if it may go right now (no pause, rate slot free)."""
        if not buf or lane.blocked() or lane.active > lane.effective_connections():
            return None
        gcra = lane.gcra
        if gcra is not None and gcra.try_acquire() > 0:
            return None
        message = buf.popleft()
        if len(buf) < self.batch // 2 and self._feed_wake is not None:
            self._feed_wake.set()
        return message

    def _lost(self, conn: SmtpConnection, lane: Lane, m: QueuedMessage, exc: BaseException) -> None:
        # The message may or may not have arrived: it is retried (at least once).
        self._transient(lane, m, None, f"connection to {conn.host} lost: {exc or type(exc).__name__}", time.time())
        conn.abort()

    async def _next_message(self, lane: Lane, buf: deque) -> QueuedMessage | None:
        """The next message this connection may send now, honouring pauses and
        the rate; None when the connection should close."""
        assert self._stopping is not None
        idle_since = time.monotonic()
        while not self._stopping.is_set():
            now = time.time()
            if lane.blocked(now) or lane.active > lane.effective_connections():
                return None
            if not buf:
                # Close soon when the queue has nothing more for this lane.
                idle_limit = 0.1 if lane.db_empty_until > now and not lane.claiming else IDLE_CLOSE_S
                if time.monotonic() - idle_since > idle_limit:
                    return None
                if self._feed_wake is not None:
                    self._feed_wake.set()
                await lane.wait(0.25)
                continue
            gcra = lane.gcra
            if gcra is not None:
                wait = gcra.try_acquire()
                if wait > 0:
                    await lane.wait(min(wait, 0.5))  # re-checks pauses while waiting
                    idle_since = time.monotonic()
                    continue
            message = buf.popleft()
            if len(buf) < self.batch // 2 and self._feed_wake is not None:
                self._feed_wake.set()
            return message
        return None

    def _connect_failed(self, lane: Lane, site: Site, exc: SmtpFailure) -> None:
        now = time.time()
        lane.connect_failures += 1
        lane.retry_connect_at = now + min(MAX_CONNECT_BACKOFF_S, 2.0 ** min(lane.connect_failures, 10))
        reply = exc.reply
        log.warning("lane %s: %s", lane.key, exc)
        if reply is not None:
            self._check_rules(lane, reply, now)
        # The waiting messages go back with a retry time rather than spinning on a dead site.
        buf = lane.buffers.get(site.key)
        if buf and (reply is not None or lane.connect_failures >= 3):
            while buf:
                m = buf.popleft()
                if reply is not None and reply.code >= 500:
                    self._failed(lane, m, reply, now)
                else:
                    self._transient(lane, m, reply, str(exc), now)

    def _prepare(self, lane: Lane, m: QueuedMessage) -> tuple[str, bytes]:
        self.stats.transactions += 1
        prepared = m.prepared
        if prepared is not None and prepared[0] == lane.key:
            return prepared[1], prepared[2]
        _, verp, content = self._build(lane, m)
        return verp, content

    def _build(self, lane: Lane, m: QueuedMessage) -> tuple[str, str, bytes]:
        """(lane key, VERP envelope sender, content in wire form): the
        tracking header and, where a key matches the From: domain, a DKIM
        signature are the only per-delivery work on the stored message."""
        token = tracking.encode(m.message_id, lane.source_ip if lane.bind_ip else "", m.campaign)
        headers = b"X-Repmon-Track: " + token.encode("ascii") + b"\r\n" + m.headers
        if self.signers:
            signer = signer_for(self.signers, _from_domain(m.headers))
            if signer is not None:
                headers = signer.sign(headers, m.body_hash or body_hash_of_wire(m.body)) + headers
        local, _, domain = m.mail_from.rpartition("@")
        return lane.key, tracking.verp_address(local, token, domain), headers + b"\r\n" + m.body

    # -- outcomes ----------------------------------------------------------------------

    def _handle(self, lane: Lane, site: Site, m: QueuedMessage, result: TransactionResult) -> None:
        now = time.time()
        reply = result.reply
        if result.delivered:
            self._add_outcome(Outcome(m, "delivered", now, reply.code, reply.status, str(reply)))
            lane.delivered_today += 1
            lane.note_success(now)
            self._warmup_outcome(lane, delivered=True)
            return
        lane.last_reply = str(reply)
        self._check_rules(lane, reply, now)
        if 500 <= reply.code < 600:
            self._failed(lane, m, reply, now, result.stage)
        else:
            self._transient(lane, m, reply, str(reply), now)

    def _failed(self, lane: Lane, m: QueuedMessage, reply: Reply, now: float, stage: str) -> None:
        """A 5xx: bounce the message; suppress the address only when the reason
        is about the recipient (never for IP- or domain-level blocks). The stage
        matters: "user unknown" answering RCPT is a missing mailbox (hard), the
        same words after DATA are a filter's verdict (soft)."""
        command = _STAGE_COMMANDS.get(stage)
        verdict = classify(reply.code, reply.status, reply.text, command=command, remote_reply=True)
        self._bounce(m, reply.code, reply.status, str(reply), verdict.reason, verdict.hard_or_soft, now, lane)

    def _bounce(self, m: QueuedMessage, code: int | None, status: str | None, text: str, reason: str,
                hard_or_soft: str, now: float, lane: Lane | None, outcome: str = "bounced") -> None:
        self._add_outcome(Outcome(m, outcome, now, code, status, text, reason))
        event = BounceEvent(
            recipient=m.recipient, reason=reason, hard_or_soft=hard_or_soft,  # type: ignore[arg-type]
            status=status, reply_code=code, diagnostic=text, remote_mta=lane.destination if lane else None,
            original_message_id=m.message_id, action="failed", arrival_date=datetime.fromtimestamp(now, timezone.utc),
            smtp_agent="repmon-sender", original_mail_from=m.mail_from,
            tracking=Tracking(message_id=m.message_id, source_ip=m.source_ip, campaign=m.campaign))
        self._pending.bounces.append((event, reason in HARD_REASONS))
        if lane is not None:
            self._warmup_outcome(lane, delivered=False)

    def _transient(self, lane: Lane | None, m: QueuedMessage, reply: Reply | None, text: str, now: float) -> None:
        if now - m.created_at >= self.max_age:
            self._bounce(m, reply.code if reply else None, reply.status if reply else None,
                         f"gave up after {m.attempts + 1} attempts over {self.max_age / 3600:.0f} h; last: {text}",
                         REASON_EXPIRED, "soft", now, lane, outcome="expired")
            return
        delay = retry_delay(m.attempts, text, self.retry_initial, self.retry_max, self.rng)
        self._add_outcome(Outcome(m, "deferred", now, reply.code if reply else None, reply.status if reply else None,
                                  text, "deferred", retry_at=now + delay))
        if lane is not None:
            self._warmup_outcome(lane, delivered=False, deferred=True)

    def _warmup_outcome(self, lane: Lane, delivered: bool, deferred: bool = False) -> None:
        state = self.warmup.get((lane.source_ip, lane.destination))
        if state is None:
            return
        if delivered:
            state.delivered_today += 1
        elif deferred:
            state.deferred_today += 1
        state.dirty = True

    def _add_outcome(self, outcome: Outcome) -> None:
        self.stats.count(outcome.outcome)
        if not self._pending.outcomes:
            self._pending_since = time.monotonic()
        self._pending.outcomes.append(outcome)
        if len(self._pending.outcomes) >= self.batch and self._flush_wake is not None:
            self._flush_wake.set()

    # -- rules -------------------------------------------------------------------------

    def _check_rules(self, lane: Lane, reply: Reply, now: float) -> RuleHit | None:
        hit = self.rules.check(lane.key, lane.destination, reply.code, reply.status, reply.text)
        if hit is None:
            return None
        rule = hit.rule
        destination = "*" if rule.scope == "ip" else lane.destination
        expires = now + rule.duration if rule.duration is not None and rule.action != "halt" else None
        rate = rule.rate
        if rule.factor is not None:
            current = lane.effective_rate()
            rate = current * rule.factor if current is not None else None
        why = f"rule {rule.name} on \"{hit.response[:200]}\""
        affected = [lane] if rule.scope == "lane" else [x for x in self.lanes.values() if x.source_ip == lane.source_ip]
        # Applied here at once (the DB round trip and the control poll come after).
        for target in affected:
            target.local_set_at = now
            if rule.action == "halt":
                target.local_halt = f"halted by {why}"
            elif rule.action == "suspend" and expires is not None:
                target.local_suspend_until = max(target.local_suspend_until, expires)
                target.local_suspend_why = f"suspended by {why}"
            elif rule.action == "slow":
                o = target.overlay
                if rate is not None:
                    o.rate = rate if o.rate is None else min(o.rate, rate)
                if rule.connections is not None:
                    o.connections = rule.connections
                if rule.deliveries_per_connection is not None:
                    o.deliveries_per_connection = rule.deliveries_per_connection
                target.set_overlay(o, now)
            target.refresh(now)
        log.warning("lane %s: %s -> %s", lane.key, hit.response[:200], rule.action,
                    extra={"rule": rule.name, "lane": lane.key})
        self._pending.actions.append({
            "source_ip": lane.source_ip, "destination": destination, "action": rule.action, "rule": rule.name,
            "pattern": rule.pattern.pattern, "response": hit.response, "expires_at": expires, "rate": rate,
            "connections": rule.connections, "deliveries_per_connection": rule.deliveries_per_connection, "now": now})
        if self._flush_wake is not None:
            self._flush_wake.set()
        if rule.action in ("halt", "suspend"):
            for target in affected:
                asyncio.ensure_future(self._release_lane(target))
        return hit

    # -- writing -----------------------------------------------------------------------

    async def _flusher(self) -> None:
        assert self._flush_wake is not None and self._stopping is not None
        while not self._stopping.is_set():
            await wait_event(self._flush_wake, FLUSH_INTERVAL_S)
            self._flush_wake.clear()
            try:
                await self._flush_now()
            except Exception:
                log.exception("writing delivery outcomes failed; retrying")
                await asyncio.sleep(1.0)

    async def _flush_now(self) -> None:
        pending = self._pending
        leases = self._pending_leases
        if not (pending.outcomes or pending.bounces or pending.actions or self._pending_lanes):
            return
        self._pending = _PendingWrite()
        self._pending_leases = []
        new_lanes, self._pending_lanes = self._pending_lanes, []
        warmups = [s for s in self.warmup.values() if s.dirty]
        await self._run_db(self._write, pending, leases, warmups, new_lanes)

    def _write(self, pending: _PendingWrite, leases: list[int], warmups: list[WarmupState],
               new_lanes: list[tuple[str, str, str]]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            if new_lanes:
                queue.ensure_lanes(conn, new_lanes, now)
            if leases:
                queue.lease_ids(conn, leases, self.owner, now)
            queue.record_outcomes(conn, pending.outcomes, self.owner)
            if pending.bounces:
                self._store_bounces(conn, pending.bounces)
            for a in pending.actions:
                control.add_action(conn, source_ip=a["source_ip"], destination=a["destination"], action=a["action"],
                                   rule=a["rule"], pattern=a["pattern"], response=a["response"],
                                   expires_at=a["expires_at"], rate=a["rate"], connections=a["connections"],
                                   deliveries_per_connection=a["deliveries_per_connection"], now=a["now"])
            save_states(conn, warmups, now)

    @staticmethod
    def _store_bounces(conn, bounces: list[tuple[BounceEvent, bool]]) -> None:
        """Bounce events into the monitor's event table (so health and stats see
        them) and recipient-level ones onto the suppression list."""
        from monitor.storage.rows import event_row
        from monitor.storage.models import StoredEvent
        from monitor.storage.suppression import HARD_BOUNCE, SuppressionEntry, suppress_many

        rows = [event_row(e, message_pk=None, occurred_at=e.arrival_date) for e, _ in bounces]
        conn.execute(StoredEvent.__table__.insert(), rows)
        entries = [SuppressionEntry(e.recipient, HARD_BOUNCE, "sender", detail=e.reason, seen_at=e.arrival_date)
                   for e, hard in bounces if hard and e.recipient]
        if entries:
            with Session(bind=conn) as session:
                suppress_many(session, entries)
                session.flush()

    async def _release_lane(self, lane: Lane) -> None:
        """Hand a blocked lane's buffered messages back to the queue."""
        now = time.time()
        for buf in lane.buffers.values():
            while buf:
                self._add_outcome(Outcome(buf.popleft(), "released", now))
        lane.db_empty_until = 0.0

    async def _release_buffers(self) -> None:
        for lane in self.lanes.values():
            await self._release_lane(lane)

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
        for lane in self.lanes.values():
            overlay = build_overlay(lane, directives, actions, now)
            for r in resumes:
                if matches(r["source_ip"], r["destination"], lane) and r["created_at"] >= lane.local_set_at:
                    # An operator resumed the lane after this process's own rule hit.
                    lane.local_halt = None
                    lane.local_suspend_until = 0.0
            lane.set_overlay(overlay, now)
            if lane.blocked(now):
                await self._release_lane(lane)
            else:
                self._pump(lane)
        if self._feed_wake is not None:
            self._feed_wake.set()

    def _read_version(self) -> int:
        with self.engine.connect() as conn:
            return control.read_version(conn)

    def _read_control(self, now: float) -> tuple[list[dict], list[dict], list[dict]]:
        with self.engine.connect() as conn:
            return (control.active_directives(conn), control.active_actions(conn),
                    control.recent_resumes(conn, now - 86400))

    async def _housekeeping_loop(self) -> None:
        """Every few seconds: end expired actions, take back abandoned
        messages, expire messages stuck past max age in blocked lanes."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            await wait_event(self._stopping, 5.0)
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
                self._pending_leases.append(m.id)
                lane = self.lanes.get(m.lane)
                self._bounce(m, None, None, f"expired in the queue after {self.max_age / 3600:.0f} h; last: {last or 'never tried'}",
                             REASON_EXPIRED, "soft", now, lane, outcome="expired")

    def _housekeeping(self, now: float, blocked: list[str]) -> list[tuple[QueuedMessage, str | None]]:
        with self.engine.begin() as conn:
            control.end_expired(conn, now)
            queue.reclaim_dead(conn, now)
            return queue.expire_old(conn, self.max_age, now, blocked)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for an event or a timeout, whichever first. (asyncio.wait_for
    costs a task per call and, on 3.11, can lose a cancellation that races
    with the event; this costs one future and a timer.)"""
    if event.is_set():
        return
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    waiter = asyncio.ensure_future(event.wait())
    waiter.add_done_callback(lambda _w: fut.done() or fut.set_result(None))
    handle = loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        handle.cancel()
        if not waiter.done():
            waiter.cancel()


def _from_domain(headers: bytes) -> str:
    for line in headers.split(b"\r\n"):
        if line[:5].lower() == b"from:":
            value = line[5:].decode("utf-8", "replace")
            address = value.rpartition("<")[2].rstrip("> ").strip() if "<" in value else value.strip()
            return address.rpartition("@")[2].lower()
    return ""


def _next_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp() + 1
