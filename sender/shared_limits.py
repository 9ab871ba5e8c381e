"""The sender's side of cluster-wide lane limits (monitor/cluster/budget.py).

With several nodes on one PostgreSQL database each lane's rate, daily cap and
connection count are shared: a lane's messages go only at times granted from
the lane's budget row, and a node opens only the connections it has claimed.
`SharedLimits` attaches a `SharedLaneRate` to each lane the sender makes,
fetches the next slot in a worker thread whenever a lane runs low, and renews
each lane's connection claim every `claim_every_s`: a fair share (the lane's
limit over the live nodes) while the lane has work, nothing when it is idle.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.cluster import nodes
from monitor.cluster.budget import LaneLimit, claim_connections, release_connections
from monitor.cluster.shared_rate import SharedLaneRate
from sender.lanes import Lane
from sender.throttle import default_burst

log = logging.getLogger("repmon.sender")

RunDb = Callable[..., Coroutine[Any, Any, Any]]


def lane_limit(lane: Lane) -> LaneLimit:
    rate = lane.effective_rate()
    burst = lane.settings.burst if lane.settings.burst is not None else (default_burst(rate) if rate else 1)
    if lane.overlay.rate is not None or lane.overlay.factor is not None:
        burst = 1  # a slowed lane earns no burst credit (as the local GCRA)
    return LaneLimit(rate=rate, burst=burst, daily_cap=lane.settings.daily_cap)


class SharedLimits:
    def __init__(self, engine: Engine, node_id: str, *, slice_s: float, claim_ttl_s: float,
                 claim_every_s: float) -> None:
        self.engine = engine
        self.node_id = node_id
        self.slice_s = slice_s
        self.claim_ttl_s = claim_ttl_s
        self.claim_every_s = claim_every_s
        self.live_nodes = 1
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, lane: Lane) -> None:
        lane.shared = SharedLaneRate(self.engine, lane.key, lane_limit(lane), self.slice_s)
        lane.claimed_connections = 0  # nothing until the first claim
        lane.on_low_budget = self._refill_soon
        lane.on_limit_change = self._reconfigure

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refill_soon(self, lane: Lane) -> None:
        shared = lane.shared
        if shared is None or shared.refilling:
            return
        shared.refilling = True  # one refill in flight per lane
        self._spawn(self._refill(lane, shared))

    async def _refill(self, lane: Lane, shared: SharedLaneRate) -> None:
        try:
            await asyncio.to_thread(shared.refill)
        except SQLAlchemyError as exc:
            shared.failed()
            log.warning("lane %s: cannot get a slot of the shared budget: %s", lane.key,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        lane.notify()

    def _reconfigure(self, lane: Lane) -> None:
        shared = lane.shared
        if shared is not None and shared.reconfigure(lane_limit(lane)):
            self._spawn(self._release(shared))

    async def _release(self, shared: SharedLaneRate) -> None:
        try:
            await asyncio.to_thread(shared.release)
        except SQLAlchemyError:
            pass  # the slot simply goes unused

    def claim_round(self, lanes: list[Lane], now: float) -> None:
        """Renew every lane's connection claim (blocking: run in a thread)."""
        self.live_nodes = max(1, sum(1 for n in nodes.list_nodes(self.engine) if n.alive(now, self.claim_ttl_s)))
        for lane in lanes:
            limit = lane.settings.connections
            has_work = bool(lane.buffered() or lane.active)
            want = math.ceil(limit / self.live_nodes) if has_work else 0
            lane.claimed_connections = claim_connections(self.engine, lane.key, self.node_id, want, limit,
                                                         self.claim_ttl_s, now)

    async def serve(self, lanes: Callable[[], list[Lane]], stopping: asyncio.Event) -> None:
        """Claims renewed until the sender stops; then every claim and held slot goes back."""
        try:
            while not stopping.is_set():
                try:
                    await asyncio.to_thread(self.claim_round, lanes(), time.time())
                except SQLAlchemyError as exc:
                    log.warning("cannot renew connection claims: %s", str(exc).splitlines()[0] if str(exc) else exc)
                for lane in lanes():
                    lane.notify()
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=self.claim_every_s)
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.to_thread(self.give_back_all, lanes())

    def give_back_all(self, lanes: list[Lane]) -> None:
        try:
            for lane in lanes:
                if lane.shared is not None:
                    lane.shared.release()
                lane.claimed_connections = 0
            release_connections(self.engine, self.node_id)
        except SQLAlchemyError as exc:
            log.warning("cannot give back lane budgets (they expire by themselves): %s", exc)
