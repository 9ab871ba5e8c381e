"""Lanes: (source IP, destination) with their limits and their live state.

A lane's base limits come from the config (lane defaults, then the built-in
provider values, then [sender.providers.NAME], or [sender.relay]). On top
sit overlays from the database: operator directives (pause, slow) and rule
actions (suspend, slow, halt). The worker loop asks the lane, before every
transaction, whether it may send, so a pause set in this process stops new
transactions at once; one set in another process arrives with the control
poll (every 200 ms).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from monitor.cluster.shared_rate import SharedLaneRate
from monitor.core.units import format_rate, parse_rate
from sender.queue import QueuedMessage
from sender.routing import BUILTIN_PROVIDERS, RELAY, Site
from sender.settings import LaneLimits, SenderConfig
from sender.throttle import Gcra

DEFAULT_SOURCE = "default"  # lane key of the OS-chosen source address (no [[sender.ips]])


class LaneKey(NamedTuple):
    """A lane's identity; its string form "ip|destination" is what the queue,
    the lane table and metrics store."""

    ip: str
    destination: str

    def __str__(self) -> str:
        return f"{self.ip}|{self.destination}"

    @classmethod
    def parse(cls, key: str) -> LaneKey:
        ip, _, destination = key.partition("|")
        return cls(ip, destination)


def lane_key(source_ip: str, destination: str) -> str:
    """The stored form of a lane's key."""
    return str(LaneKey(source_ip, destination))


@dataclass(slots=True)
class LaneSettings:
    connections: int
    deliveries_per_connection: int
    rate: float | None  # messages/s; None: no limit
    burst: int | None
    daily_cap: int | None
    tls: str


def lane_settings(config: SenderConfig, destination: str) -> LaneSettings:
    if destination == RELAY and config.relay is not None:
        relay = config.relay
        return LaneSettings(
            connections=relay.connections or 10,
            deliveries_per_connection=relay.deliveries_per_connection or 1000,
            rate=parse_rate(relay.rate), burst=relay.burst, daily_cap=relay.daily_cap,
            tls=relay.tls or "opportunistic")
    merged: dict[str, Any] = {}
    layers: list[dict[str, Any]] = [config.lane_defaults.model_dump(exclude_none=True)]
    builtin = BUILTIN_PROVIDERS.get(destination)
    if builtin:
        layers.append({k: v for k, v in builtin.items() if k != "mx_suffixes"})
    own: LaneLimits | None = config.providers.get(destination)
    if own is not None:
        layers.append(own.model_dump(exclude_none=True, exclude={"mx_suffixes"}))
    for layer in layers:
        merged.update(layer)
    return LaneSettings(
        connections=merged.get("connections", 10),
        deliveries_per_connection=merged.get("deliveries_per_connection", 100),
        rate=parse_rate(merged.get("rate")), burst=merged.get("burst"), daily_cap=merged.get("daily_cap"),
        tls=merged.get("tls", "opportunistic"))


@dataclass(slots=True)
class Overlay:
    """What directives and rule actions say about a lane right now."""

    paused: str | None = None  # operator pause: why
    halted: str | None = None  # rule halt: which rule and response
    suspended_until: float | None = None  # wall clock
    suspended_why: str | None = None
    rate: float | None = None  # slowest override
    factor: float | None = None
    connections: int | None = None
    deliveries_per_connection: int | None = None
    slowed_by: list[str] = field(default_factory=list)


class Lane:
    def __init__(self, key: str, source_ip: str, bind_ip: str | None, ehlo_name: str, destination: str,
                 settings: LaneSettings, resume_step: float) -> None:
        self.key = key
        self.source_ip = source_ip
        self.bind_ip = bind_ip
        self.ehlo_name = ehlo_name
        self.destination = destination
        self.settings = settings
        self.resume_step = resume_step
        self.overlay = Overlay()
        self.local_suspend_until = 0.0  # set in-process by a rule hit before the DB round trip
        self.local_suspend_why: str | None = None
        self.local_halt: str | None = None
        self.local_set_at = 0.0
        self.gcra: Gcra | None = None
        # With cluster-wide limits (sender/shared_limits.py): the granted send
        # times replace the local GCRA, and connections are what this node claimed.
        self.shared: SharedLaneRate | None = None
        self.claimed_connections: int | None = None
        self.on_low_budget: Callable[[Lane], None] | None = None
        self.on_limit_change: Callable[[Lane], None] | None = None
        self.buffers: dict[str, deque[QueuedMessage]] = {}  # site key -> claimed messages
        self.sites: dict[str, Site] = {}
        self.site_active: dict[str, int] = {}
        self.active = 0  # open connections
        self.delivered_today = 0
        self.day = ""
        self.ramp: int | None = None  # connections allowed while resuming
        self.ramp_step_at = 0.0
        self.connect_failures = 0
        self.retry_connect_at = 0.0
        self.db_empty_until = 0.0
        self.claiming = False
        self._waiters: list[asyncio.Future[None]] = []
        self._was_blocked = False
        self.last_reply: str | None = None
        self._apply_rate()

    # -- limits ---------------------------------------------------------------------

    def effective_rate(self) -> float | None:
        rate = self.settings.rate
        o = self.overlay
        if o.rate is not None:
            rate = o.rate if rate is None else min(rate, o.rate)
        if o.factor is not None and rate is not None:
            rate = rate * o.factor
        return rate

    def effective_connections(self) -> int:
        limit = self.settings.connections
        if self.overlay.connections is not None:
            limit = min(limit, self.overlay.connections)
        if self.ramp is not None:
            limit = min(limit, self.ramp)
        if self.claimed_connections is not None:
            return min(max(1, limit), self.claimed_connections)
        return max(1, limit)

    def deliveries_per_connection(self) -> int:
        limit = self.settings.deliveries_per_connection
        if self.overlay.deliveries_per_connection is not None:
            limit = min(limit, self.overlay.deliveries_per_connection)
        return limit

    def acquire_slot(self) -> float:
        """0 when the next message may go now by the rate, else the seconds to wait."""
        if self.shared is not None:
            wait = self.shared.try_acquire()
            if self.on_low_budget is not None and self.shared.wants_refill():
                self.on_low_budget(self)
            return wait
        return 0.0 if self.gcra is None else self.gcra.try_acquire()

    def _apply_rate(self) -> None:
        if self.on_limit_change is not None:
            self.on_limit_change(self)
        rate = self.effective_rate()
        if rate is None:
            self.gcra = None
        elif self.gcra is None:
            self.gcra = Gcra(rate, self.settings.burst)
        elif not math.isclose(self.gcra.rate, rate):
            unchanged = self.overlay.rate is None and self.overlay.factor is None
            self.gcra.configure(rate, self.settings.burst if unchanged else 1)

    def buffer_target(self, batch_size: int) -> int:
        """How many claimed messages to hold: about two seconds of sending."""
        rate = self.effective_rate()
        if rate is None:
            target = max(batch_size, self.effective_connections() * 4)
        else:
            target = max(2, min(batch_size, math.ceil(rate * 2)))
        cap = self.settings.daily_cap
        if cap is not None:
            target = min(target, max(0, cap - self.delivered_today - self.buffered()))
        return target

    def buffered(self) -> int:
        return sum(len(q) for q in self.buffers.values())

    # -- state ------------------------------------------------------------------------

    def blocked(self, now: float | None = None) -> str | None:
        """Why the lane may not start a transaction now, or None."""
        now = time.time() if now is None else now
        o = self.overlay
        if self.local_halt:
            return self.local_halt
        if o.halted:
            return o.halted
        if o.paused:
            return o.paused
        if self.local_suspend_until > now:
            return self.local_suspend_why
        if o.suspended_until is not None and o.suspended_until > now:
            return o.suspended_why
        cap = self.settings.daily_cap
        if cap is not None and self.delivered_today >= cap:
            return f"daily cap of {cap} reached"
        return None

    def set_overlay(self, overlay: Overlay, now: float) -> None:
        self.overlay = overlay
        self._apply_rate()
        self.refresh(now)

    def refresh(self, now: float) -> None:
        """Notice the end of a block: resume with one connection (ramp)."""
        blocked = self.blocked(now) is not None
        if self._was_blocked and not blocked and self.settings.connections > 1:
            self.ramp = 1
            self.ramp_step_at = now
        self._was_blocked = blocked
        self.notify()

    def note_success(self, now: float) -> None:
        """During a ramp, one more connection per resume_step of good sending."""
        if self.ramp is not None and now - self.ramp_step_at >= self.resume_step:
            self.ramp += 1
            self.ramp_step_at = now
            limit = self.settings.connections if self.overlay.connections is None else min(
                self.settings.connections, self.overlay.connections)
            if self.ramp >= limit:
                self.ramp = None
            self.notify()

    def describe_rate(self) -> str:
        return format_rate(self.effective_rate())

    # -- waiting ----------------------------------------------------------------------

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        handle = loop.call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def matches(pattern_ip: str, pattern_dest: str, lane: Lane) -> bool:
    return pattern_ip in ("*", lane.source_ip) and pattern_dest in ("*", lane.destination)


def build_overlay(lane: Lane, directives: list[dict[str, Any]], actions: list[dict[str, Any]], now: float) -> Overlay:
    overlay = Overlay()
    for d in directives:
        if not matches(d["source_ip"], d["destination"], lane):
            continue
        if d["expires_at"] is not None and d["expires_at"] <= now:
            continue
        if d["kind"] == "pause":
            overlay.paused = f"paused by {d['created_by']}: {d['reason'] or 'no reason given'}"
        elif d["kind"] == "slow" and d["rate"] is not None:
            overlay.rate = d["rate"] if overlay.rate is None else min(overlay.rate, d["rate"])
            overlay.slowed_by.append(f"{d['created_by']}: {d['reason'] or 'slow'}")
    for a in actions:
        if not matches(a["source_ip"], a["destination"], lane):
            continue
        if a["expires_at"] is not None and a["expires_at"] <= now:
            continue
        why = f"rule {a['rule']} on \"{(a['response'] or '')[:200]}\""
        if a["action"] == "halt":
            overlay.halted = f"halted by {why}"
        elif a["action"] == "suspend":
            if overlay.suspended_until is None or (a["expires_at"] or 0) > overlay.suspended_until:
                overlay.suspended_until = a["expires_at"]
                overlay.suspended_why = f"suspended by {why}"
        elif a["action"] == "slow":
            if a["rate"] is not None:
                overlay.rate = a["rate"] if overlay.rate is None else min(overlay.rate, a["rate"])
            if a["connections"] is not None:
                overlay.connections = (a["connections"] if overlay.connections is None
                                       else min(overlay.connections, a["connections"]))
            if a.get("deliveries_per_connection") is not None:
                overlay.deliveries_per_connection = a["deliveries_per_connection"]
            overlay.slowed_by.append(why)
    return overlay
