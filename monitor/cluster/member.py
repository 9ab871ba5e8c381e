"""This node's membership: heartbeat, the leases it wants, and whether it holds them.

`ClusterMember.holds(name)` is what a job asks before each pass. It is answered
locally, from the last successful renewal: a renewal at time t is trusted until
t + ttl - heartbeat (earlier than the expiry the other nodes see), so a node cut
off from the database stops acting before another one can take over.
With the cluster off (one node, SQLite) every lease is held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.cluster import leases, nodes
from monitor.cluster.budget import release_connections
from monitor.cluster.nodes import NodeIdentity
from monitor.cluster.settings import ClusterConfig

log = logging.getLogger("repmon.cluster")

FORGET_AFTER_TTLS = 20  # a node silent for 20 lease periods is dropped from the registry


class ClusterMember:
    def __init__(self, engine: Engine, settings: ClusterConfig, *, enabled: bool,
                 identity: NodeIdentity | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.settings = settings
        self.enabled = enabled
        self.clock = clock
        self.identity = identity or nodes.new_identity(settings.node_name, clock())
        self._wanted: set[str] = set()
        self._trusted_until: dict[str, float] = {}
        self._epochs: dict[str, int] = {}

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def want(self, names: Iterable[str]) -> None:
        """Leases this node competes for (every job that must run once)."""
        self._wanted.update(names)

    def holds(self, name: str) -> bool:
        if not self.enabled:
            return True
        return self.clock() < self._trusted_until.get(name, 0.0)

    def missing(self) -> list[str]:
        """Wanted leases this node does not hold (another node has them, or a
        dead node's lease has not expired yet)."""
        return sorted(name for name in self._wanted if not self.holds(name))

    def held(self) -> list[str]:
        return sorted(name for name in self._wanted if self.holds(name))

    def beat(self) -> None:
        """One heartbeat (synchronous; the service runs it in a thread)."""
        if not self.enabled:
            return
        now = self.clock()
        nodes.heartbeat(self.engine, self.identity, now)
        trust = self.settings.lease_ttl_s - self.settings.heartbeat_s
        for name in sorted(self._wanted):
            started = self.clock()
            epoch = leases.try_acquire(self.engine, name, self.node_id, self.settings.lease_ttl_s, started)
            if epoch is None:
                if self._trusted_until.pop(name, None) is not None:
                    log.warning("lease %s lost to another node", name, extra={"lease": name})
                continue
            if self._epochs.get(name) != epoch:
                log.info("lease %s taken (epoch %d)", name, epoch, extra={"lease": name, "node": self.node_id})
                self._epochs[name] = epoch
            self._trusted_until[name] = started + trust
        nodes.forget_dead(self.engine, now, FORGET_AFTER_TTLS * self.settings.lease_ttl_s)

    async def gather_leases(self) -> list[str]:
        """For one pass (`repmon run --once`): beat until every wanted lease is
        held, or until a dead node's lease would have expired; the leases still
        missing then are held by a live node."""
        await asyncio.to_thread(self.beat)
        deadline = self.clock() + self.settings.lease_ttl_s + self.settings.heartbeat_s
        while self.enabled and self.missing() and self.clock() < deadline:
            await asyncio.sleep(self.settings.heartbeat_s)
            await asyncio.to_thread(self.beat)
        return self.missing()

    async def serve(self, stopping: asyncio.Event) -> None:
        """Heartbeat until asked to stop, then hand the leases back."""
        if not self.enabled:
            await stopping.wait()
            return
        try:
            while not stopping.is_set():
                try:
                    await asyncio.to_thread(self.beat)
                except SQLAlchemyError as exc:
                    log.error("cluster heartbeat failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=self.settings.heartbeat_s)
                except TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(self.leave)

    def leave(self) -> None:
        """A clean stop: leases free at once, so another node takes over now."""
        if not self.enabled:
            return
        self._trusted_until.clear()
        try:
            for name in sorted(self._wanted):
                leases.release(self.engine, name, self.node_id)
            release_connections(self.engine, self.node_id)
            nodes.deregister(self.engine, self.identity)
        except SQLAlchemyError as exc:
            log.warning("cluster: could not leave cleanly (leases expire by themselves): %s", exc)
