"""How policy actions reach the sender: rows of its lane directive table.

The sender (sender/control.py, sender/lanes.py) reads active directives
whenever `sender_control.version` moves, at most 200 ms later, and applies a
pause / slow to every lane it covers before the next SMTP transaction. We
insert and end our own rows directly instead of calling
`sender.control.add_directive`: that function ends every other pause or slow
of the same scope (an operator's pause, another rule's), and a policy action
ending must never lift a pause someone else set. Each row says who set it
(`created_by` = "policy:<rule>" or "operator:<name>") and carries the
action's expiry, so the sender lifts it on time even when repmon's policy
loop is not running.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from sender.control import bump_version
from sender.models import SenderLaneDirective


def add_directives(conn: Connection, kind: str, source_ip: str, destinations: list[str], *, rate: float | None,
                   reason: str, created_by: str, now: float, expires_at: float | None) -> list[int]:
    table = SenderLaneDirective.__table__
    ids: list[int] = []
    for destination in destinations:
        row = conn.execute(table.insert().values(
            source_ip=source_ip[:64], destination=destination[:255], kind=kind, rate=rate, reason=reason[:1000],
            created_by=created_by[:100], created_at=now, expires_at=expires_at).returning(table.c.id)).first()
        ids.append(int(row[0]))
    if ids:
        bump_version(conn)
    return ids


def end_directives(conn: Connection, ids: list[int], now: float, why: str) -> int:
    if not ids:
        return 0
    n = conn.execute(text(
        f"UPDATE sender_lane_directive SET ended_at = :now, end_reason = :why WHERE ended_at IS NULL "
        f"AND id IN ({', '.join(str(int(i)) for i in ids)})"), {"now": now, "why": why[:100]}).rowcount or 0
    if n:
        bump_version(conn)
    return n
