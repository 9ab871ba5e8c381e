"""Read-only queries over the policy's tables, returning plain data: what the
metrics show, without importing the tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from monitor.policy.models import PolicyAction

_actions = PolicyAction.__table__  # type: ignore[attr-defined]


def active_policy_actions(conn: Connection, at: datetime) -> list[tuple[str, int]]:
    """(action, count) of the policy actions in force at `at`."""
    t = _actions
    rows = conn.execute(select(t.c.action, func.count()).where(
        t.c.ended_at.is_(None), or_(t.c.expires_at.is_(None), t.c.expires_at > at)).group_by(t.c.action))
    return [(action, int(n)) for action, n in rows]
