"""Source selection: which sending IP of a pool takes a message for a
destination, honouring weights and the warm-up caps of new IPs.

Smooth weighted round robin over the pool's IPs that are under today's
warm-up cap for the destination; the overflow pool when every IP is capped.
The warm-up counters (routed, delivered, deferred per IP and provider) live
here; the outcome writer saves the changed ones with each flush.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from sender import queue
from sender.lanes import DEFAULT_SOURCE
from sender.settings import SendingIpConfig, WarmupConfig
from sender.warmup import WarmupState, load_states


@dataclass(slots=True)
class Source:
    address: str  # lane key part: the IP, or "default"
    bind: str | None
    ehlo_name: str
    weight: float
    warmup: bool
    current: float = 0.0  # smooth weighted round robin state


class Sources:
    """The pools of sending IPs and their warm-up state."""

    def __init__(self, ips: list[SendingIpConfig], warmup: WarmupConfig) -> None:
        self.settings = warmup
        self.pools: dict[str, list[Source]] = {}
        if not ips:
            self.pools["default"] = [Source(DEFAULT_SOURCE, None, socket.getfqdn(), 1.0, False)]
        for ip in ips:
            source = Source(ip.address, ip.address, ip.ehlo_name, ip.weight, ip.warmup)
            self.pools.setdefault(ip.pool, []).append(source)
        self.states: dict[tuple[str, str], WarmupState] = {}

    def load(self, conn: Connection) -> None:
        self.states = load_states(conn)

    def source(self, address: str) -> Source:
        for sources in self.pools.values():
            for s in sources:
                if s.address == address:
                    return s
        return Source(address, None if address == DEFAULT_SOURCE else address, socket.getfqdn(), 1.0, False)

    def pick(self, pool: str, destination: str, now: float) -> Source | None:
        """Smooth weighted round robin over the pool's IPs that are under
        their warm-up cap; the overflow pool when every IP is capped."""
        sources = self.pools.get(pool) or self.pools.get("default") or next(iter(self.pools.values()))
        today = queue.utc_day(now) if any(s.warmup for s in sources) else ""
        eligible = []
        for s in sources:
            if s.warmup:
                state = self.state(s.address, destination, today)
                cap = state.cap(self.settings.schedule)
                if cap is not None and state.routed_today >= cap:
                    continue
            eligible.append(s)
        if not eligible:
            overflow = self.settings.overflow_pool
            if overflow and overflow != pool and overflow in self.pools:
                return self.pick(overflow, destination, now)
            return None
        total = sum(s.weight for s in eligible)
        best: Source | None = None
        for s in eligible:
            s.current += s.weight
            if best is None or s.current > best.current:
                best = s
        assert best is not None
        best.current -= total
        if best.warmup:
            state = self.state(best.address, destination, today)
            state.routed_today += 1
            state.dirty = True
        return best

    def state(self, ip: str, destination: str, today: str) -> WarmupState:
        state = self.states.get((ip, destination))
        if state is None:
            state = self.states[(ip, destination)] = WarmupState(ip, destination, 0, today, started_on=today)
        state.roll_over(today, self.settings)
        return state

    def note_outcome(self, ip: str, destination: str, *, delivered: bool, deferred: bool = False) -> None:
        """Count a delivery (or a deferral) against a warming IP's day."""
        state = self.states.get((ip, destination))
        if state is None:
            return
        if delivered:
            state.delivered_today += 1
        elif deferred:
            state.deferred_today += 1
        state.dirty = True

    def changed(self) -> list[WarmupState]:
        return [s for s in self.states.values() if s.dirty]
