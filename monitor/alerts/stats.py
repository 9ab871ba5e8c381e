"""Read-only queries over the alerts' tables, returning plain data: what the
metrics show, without importing the tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from monitor.alerts.models import AlertState

_alerts = AlertState.__table__  # type: ignore[attr-defined]


def firing_alerts(conn: Connection) -> list[tuple[str, int]]:
    """(severity, count) of the alerts firing."""
    t = _alerts
    rows = conn.execute(select(t.c.severity, func.count()).where(t.c.status == "firing").group_by(t.c.severity))
    return [(severity, int(n)) for severity, n in rows]
