"""Node registry: who runs, since when, and when each last showed a sign of life."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from monitor.cluster.models import ClusterNode, LaneConnectionClaim
from monitor.cluster.rows import ensure_row

NODES = ClusterNode.__table__  # type: ignore[attr-defined]
CLAIMS = LaneConnectionClaim.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str
    host: str
    pid: int
    started_at: float


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float

    def alive(self, now: float, ttl: float) -> bool:
        return now - self.heartbeat_at <= ttl


def new_identity(name: str | None = None, now: float | None = None) -> NodeIdentity:
    host = socket.gethostname()[:200]
    pid = os.getpid()
    node_id = name or f"{host[:40]}-{pid}-{uuid.uuid4().hex[:6]}"
    return NodeIdentity(node_id[:64], host, pid, time.time() if now is None else now)


def heartbeat(engine: Engine, node: NodeIdentity, now: float) -> None:
    """Register the node (first call) or renew its sign of life."""
    with engine.begin() as conn:
        ensure_row(conn, NODES, {"node_id": node.node_id, "host": node.host, "pid": node.pid,
                                 "started_at": node.started_at, "heartbeat_at": now})
        conn.execute(update(NODES).where(NODES.c.node_id == node.node_id).values(heartbeat_at=now))


def deregister(engine: Engine, node: NodeIdentity) -> None:
    """A clean stop: the node and its connection claims go at once (its leases
    are released by their keeper)."""
    with engine.begin() as conn:
        conn.execute(delete(CLAIMS).where(CLAIMS.c.node_id == node.node_id))
        conn.execute(delete(NODES).where(NODES.c.node_id == node.node_id))


def list_nodes(engine: Engine) -> list[NodeRow]:
    with engine.connect() as conn:
        rows = conn.execute(select(NODES).order_by(NODES.c.started_at, NODES.c.node_id)).all()
    return [NodeRow(r.node_id, r.host, r.pid, r.started_at, r.heartbeat_at) for r in rows]


def forget_dead(engine: Engine, now: float, older_than_s: float) -> int:
    """Drop nodes silent for longer than `older_than_s` (their claims too)."""
    with engine.begin() as conn:
        dead = [r.node_id for r in conn.execute(
            select(NODES.c.node_id).where(NODES.c.heartbeat_at < now - older_than_s))]
        if dead:
            conn.execute(delete(CLAIMS).where(CLAIMS.c.node_id.in_(dead)))
            conn.execute(delete(NODES).where(NODES.c.node_id.in_(dead)))
    return len(dead)
