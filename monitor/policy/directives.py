"""How policy actions reach the sender: directives stored through its
control API (sender/control.py, the one writer of its lane tables).

The sender reads active directives whenever `sender_control.version` moves,
at most 200 ms later, and applies a pause / slow to every lane it covers
before the next SMTP transaction. We use `insert_directives` /
`end_directives` rather than `sender.control.add_directive`: that function
ends every other pause or slow of the same scope (an operator's pause,
another rule's), and a policy action ending must never lift a pause someone
else set. Each row says who set it (`created_by` = "policy:<rule>" or
"operator:<name>") and carries the action's expiry, so the sender lifts it
on time even when repmon's policy loop is not running.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from sender import control


def add_directives(conn: Connection, kind: str, source_ip: str, destinations: list[str], *, rate: float | None,
                   reason: str, created_by: str, now: float, expires_at: float | None) -> list[int]:
    return control.insert_directives(conn, kind, source_ip, destinations, rate=rate, reason=reason,
                                     created_by=created_by, now=now, expires_at=expires_at)


def end_directives(conn: Connection, ids: list[int], now: float, why: str) -> int:
    return control.end_directives(conn, ids, now, why)
