"""Outcomes of delivery attempts and their buffered writer.

Every attempt ends here: delivered, deferred (with a retry time), bounced
(a bounce event for the monitor, a suppression for recipient-level hard
bounces), expired, released back to the queue. Replies that match a response
rule change the lanes at once and become rule actions. Nothing is written on
the event loop: the pending outcomes, bounces and actions go to the database
in one transaction, every 25 ms or when a batch is full, on the sender's
database thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from monitor.core.units import parse_duration
from monitor.storage.events import insert_events
from monitor.storage.suppression import HARD_BOUNCE, SuppressionEntry, suppress_many
from parsers.bounce.classify import classify
from parsers.bounce.reasons import EXPIRED as REASON_EXPIRED
from parsers.bounce.reasons import HARD_REASONS
from parsers.events import BounceEvent, Tracking
from sender import control, queue
from sender.aio import wait_event
from sender.lanes import Lane
from sender.queue import Outcome, QueuedMessage
from sender.routing import RouteError
from sender.rules import RuleBook, RuleHit
from sender.settings import SenderConfig
from sender.smtp import Reply, TransactionResult
from sender.sources import Sources
from sender.warmup import WarmupState, save_states

log = logging.getLogger("repmon.sender")

RunDb = Callable[..., Awaitable[Any]]  # runs a function on the sender's database thread

FLUSH_INTERVAL_S = 0.025
_RETRY_HINT = re.compile(
    r"(?:try|retry|come back)\s+(?:again\s+)?(?:later\s+)?(?:in|after)\s+(\d+)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b", re.IGNORECASE)
_HINT_UNIT = {"s": 1, "m": 60, "h": 3600}

# The SMTP command a transaction stage's reply answered, as classify() names them.
_STAGE_COMMANDS = {"connect": "CONN", "mail": "MAIL", "rcpt": "RCPT", "data": "DATA", "end": "DATA"}


def retry_delay(attempts: int, reply_text: str, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential back-off with jitter; a server's "try again in N" wins."""
    hint = _RETRY_HINT.search(reply_text or "")
    if hint:
        seconds = int(hint.group(1)) * _HINT_UNIT[hint.group(2)[0].lower()]
        return max(1.0, seconds * (1.0 + 0.1 * rng.random()))
    base = min(maximum, initial * (2 ** min(attempts, 30)))
    return base * (0.8 + 0.4 * rng.random())


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
class RuleAction:
    """A response rule's action on a lane (or an IP's lanes), to record."""

    source_ip: str
    destination: str
    action: str
    rule: str
    pattern: str
    response: str
    expires_at: float | None
    rate: float | None
    connections: int | None
    deliveries_per_connection: int | None
    now: float


@dataclass
class PendingWrite:
    outcomes: list[Outcome] = field(default_factory=list)
    bounces: list[tuple[BounceEvent, bool]] = field(default_factory=list)  # (event, suppress the address)
    actions: list[RuleAction] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)  # queued messages to lease first (to bounce them)
    lanes: list[tuple[str, str, str]] = field(default_factory=list)  # lanes to register in sender_lane

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.bounces or self.actions or self.lanes)


class Outcomes:
    """Turns results into outcomes, bounces and rule actions, and writes them."""

    def __init__(self, config: SenderConfig, engine: Engine, owner: str, run_db: RunDb, *, lanes: dict[str, Lane],
                 sources: Sources, rules: RuleBook, rng: random.Random) -> None:
        self.engine = engine
        self.owner = owner
        self.run_db = run_db
        self.lanes = lanes
        self.sources = sources
        self.rules = rules
        self.rng = rng
        self.batch = config.batch_size
        self.max_age = parse_duration(config.max_age)
        self.retry_initial = parse_duration(config.retry_initial)
        self.retry_max = parse_duration(config.retry_max)
        self.stats = SendStats()
        self.pending = PendingWrite()
        self.pending_since = 0.0
        self.wake: asyncio.Event | None = None  # set: flush now

    # -- results -------------------------------------------------------------------

    def handle(self, lane: Lane, m: QueuedMessage, result: TransactionResult) -> None:
        now = time.time()
        reply = result.reply
        if result.delivered:
            self.add(Outcome(m, "delivered", now, reply.code, reply.status, str(reply)))
            lane.delivered_today += 1
            lane.note_success(now)
            self.sources.note_outcome(lane.source_ip, lane.destination, delivered=True)
            return
        lane.last_reply = str(reply)
        self.check_rules(lane, reply, now)
        if 500 <= reply.code < 600:
            self.failed(lane, m, reply, now, result.stage)
        else:
            self.transient(lane, m, reply, str(reply), now)

    def failed(self, lane: Lane, m: QueuedMessage, reply: Reply, now: float, stage: str) -> None:
        """A 5xx: bounce the message; suppress the address only when the reason
        is about the recipient (never for IP- or domain-level blocks). The stage
        matters: "user unknown" answering RCPT is a missing mailbox (hard), the
        same words after DATA are a filter's verdict (soft)."""
        command = _STAGE_COMMANDS.get(stage)
        verdict = classify(reply.code, reply.status, reply.text, command=command, remote_reply=True)
        self.bounce(m, reply.code, reply.status, str(reply), verdict.reason, verdict.hard_or_soft, now, lane)

    def bounce(self, m: QueuedMessage, code: int | None, status: str | None, text: str, reason: str,
               hard_or_soft: str, now: float, lane: Lane | None, outcome: str = "bounced") -> None:
        self.add(Outcome(m, outcome, now, code, status, text, reason))
        event = BounceEvent(
            recipient=m.recipient, reason=reason, hard_or_soft=hard_or_soft,  # type: ignore[arg-type]
            status=status, reply_code=code, diagnostic=text, remote_mta=lane.destination if lane else None,
            original_message_id=m.message_id, action="failed", arrival_date=datetime.fromtimestamp(now, UTC),
            smtp_agent="repmon-sender", original_mail_from=m.mail_from,
            tracking=Tracking(message_id=m.message_id, source_ip=m.source_ip, campaign=m.campaign))
        self.pending.bounces.append((event, reason in HARD_REASONS))
        if lane is not None:
            self.sources.note_outcome(lane.source_ip, lane.destination, delivered=False)

    def transient(self, lane: Lane | None, m: QueuedMessage, reply: Reply | None, text: str, now: float) -> None:
        if now - m.created_at >= self.max_age:
            self.bounce(m, reply.code if reply else None, reply.status if reply else None,
                        f"gave up after {m.attempts + 1} attempts over {self.max_age / 3600:.0f} h; last: {text}",
                        REASON_EXPIRED, "soft", now, lane, outcome="expired")
            return
        delay = retry_delay(m.attempts, text, self.retry_initial, self.retry_max, self.rng)
        self.add(Outcome(m, "deferred", now, reply.code if reply else None, reply.status if reply else None,
                         text, "deferred", retry_at=now + delay))
        if lane is not None:
            self.sources.note_outcome(lane.source_ip, lane.destination, delivered=False, deferred=True)

    def route_failed(self, m: QueuedMessage, exc: RouteError, now: float) -> None:
        if not exc.permanent:
            self.transient(None, m, None, str(exc), now)
            return
        self.bounce(m, None, None, str(exc), exc.reason, "hard" if exc.reason in HARD_REASONS else "soft", now, None)

    def expired(self, m: QueuedMessage, last: str | None, now: float) -> None:
        """A message housekeeping found past max age in the queue."""
        self.pending.leases.append(m.id)
        self.bounce(m, None, None,
                    f"expired in the queue after {self.max_age / 3600:.0f} h; last: {last or 'never tried'}",
                    REASON_EXPIRED, "soft", now, self.lanes.get(m.lane), outcome="expired")

    def add(self, outcome: Outcome) -> None:
        self.stats.count(outcome.outcome)
        if not self.pending.outcomes:
            self.pending_since = time.monotonic()
        self.pending.outcomes.append(outcome)
        if len(self.pending.outcomes) >= self.batch and self.wake is not None:
            self.wake.set()

    def release(self, lane: Lane) -> None:
        """Hand a blocked lane's buffered messages back to the queue."""
        now = time.time()
        for buf in lane.buffers.values():
            while buf:
                self.add(Outcome(buf.popleft(), "released", now))
        lane.db_empty_until = 0.0

    def register_lane(self, lane: Lane) -> None:
        self.pending.lanes.append((lane.key, lane.source_ip, lane.destination))

    # -- response rules --------------------------------------------------------------

    def check_rules(self, lane: Lane, reply: Reply, now: float) -> RuleHit | None:
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
        self.pending.actions.append(RuleAction(
            source_ip=lane.source_ip, destination=destination, action=rule.action, rule=rule.name,
            pattern=rule.pattern.pattern, response=hit.response, expires_at=expires, rate=rate,
            connections=rule.connections, deliveries_per_connection=rule.deliveries_per_connection, now=now))
        if self.wake is not None:
            self.wake.set()
        if rule.action in ("halt", "suspend"):
            loop = asyncio.get_running_loop()
            for target in affected:
                loop.call_soon(self.release, target)  # after the current step, as the worker expects
        return hit

    # -- writing ---------------------------------------------------------------------

    async def flusher(self, stopping: asyncio.Event) -> None:
        assert self.wake is not None
        while not stopping.is_set():
            await wait_event(self.wake, FLUSH_INTERVAL_S)
            self.wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing delivery outcomes failed; retrying")
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = PendingWrite()
        await self.run_db(self._write, pending, self.sources.changed())

    def _write(self, pending: PendingWrite, warmups: list[WarmupState]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            if pending.lanes:
                queue.ensure_lanes(conn, pending.lanes, now)
            if pending.leases:
                queue.lease_ids(conn, pending.leases, self.owner, now)
            queue.record_outcomes(conn, pending.outcomes, self.owner)
            if pending.bounces:
                _store_bounces(conn, pending.bounces)
            for a in pending.actions:
                control.add_action(conn, source_ip=a.source_ip, destination=a.destination, action=a.action,
                                   rule=a.rule, pattern=a.pattern, response=a.response, expires_at=a.expires_at,
                                   rate=a.rate, connections=a.connections,
                                   deliveries_per_connection=a.deliveries_per_connection, now=a.now)
            save_states(conn, warmups, now)


def _store_bounces(conn: Connection, bounces: list[tuple[BounceEvent, bool]]) -> None:
    """Bounce events into the monitor's event table (so health and stats see
    them) and recipient-level ones onto the suppression list."""
    insert_events(conn, [e for e, _ in bounces])
    entries = [SuppressionEntry(e.recipient, HARD_BOUNCE, "sender", detail=e.reason, seen_at=e.arrival_date)
               for e, hard in bounces if hard and e.recipient]
    if entries:
        with Session(bind=conn) as session:
            suppress_many(session, entries)
            session.flush()
