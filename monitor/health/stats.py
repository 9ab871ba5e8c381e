"""Read-only queries over health's tables, returning plain data: what the
metrics show, without importing the tables. (Policy actions and alerts are
read through monitor/policy/stats.py and monitor/alerts/stats.py.)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from monitor.health.models import HealthState

_states = HealthState.__table__  # type: ignore[attr-defined]


def health_states(conn: Connection) -> list[tuple[str, str, str, float]]:
    """(subject, kind, state, score) of every assessed subject."""
    t = _states
    return [(subject, kind, state, float(score)) for subject, kind, state, score in
            conn.execute(select(t.c.subject, t.c.kind, t.c.state, t.c.score))]
