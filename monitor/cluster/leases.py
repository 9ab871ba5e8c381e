"""Named leases: one owner per job across the cluster.

A lease is a row (name, owner, expires_at, epoch). Taking or renewing it is one
conditional UPDATE: it succeeds when the lease is free, expired, or already
ours, so two nodes can never both hold it. The holder renews it every
heartbeat; a node that dies (SIGKILL) stops renewing and another takes the
lease over once it expires (lease_ttl_s, 6 s by default, so a job moves within
10 s). A node that cannot reach the database stops acting on a lease at its
own local deadline, which is earlier than the expiry others see.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, or_, select, update
from sqlalchemy.engine import Engine

from monitor.cluster.models import ClusterLease
from monitor.cluster.rows import ensure_row

LEASES = ClusterLease.__table__  # type: ignore[attr-defined]

LEADER = "leader"  # health roll-up, policy, alert dispatch


@dataclass(frozen=True, slots=True)
class LeaseRow:
    name: str
    owner: str | None
    expires_at: float
    acquired_at: float
    epoch: int


def try_acquire(engine: Engine, name: str, owner: str, ttl_s: float, now: float) -> int | None:
    """Take or renew the lease; its epoch when held, None when another node has it."""
    with engine.begin() as conn:
        ensure_row(conn, LEASES, {"name": name, "owner": None, "expires_at": 0.0, "acquired_at": 0.0, "epoch": 0})
        ours = LEASES.c.owner == owner
        result = conn.execute(
            update(LEASES)
            .where(LEASES.c.name == name, or_(ours, LEASES.c.owner.is_(None), LEASES.c.expires_at < now))
            .values(owner=owner, expires_at=now + ttl_s,
                    epoch=case((ours, LEASES.c.epoch), else_=LEASES.c.epoch + 1),
                    acquired_at=case((ours, LEASES.c.acquired_at), else_=now))
        )
        if result.rowcount != 1:
            return None
        epoch = conn.execute(select(LEASES.c.epoch).where(LEASES.c.name == name)).scalar_one()
    return int(epoch)


def release(engine: Engine, name: str, owner: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(update(LEASES).where(LEASES.c.name == name, LEASES.c.owner == owner)
                              .values(owner=None, expires_at=0.0))
    return result.rowcount == 1


def list_leases(engine: Engine) -> list[LeaseRow]:
    with engine.connect() as conn:
        rows = conn.execute(select(LEASES).order_by(LEASES.c.name)).all()
    return [LeaseRow(r.name, r.owner, r.expires_at, r.acquired_at, r.epoch) for r in rows]
