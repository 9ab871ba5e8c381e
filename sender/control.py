"""Lane directives and rule actions in the database, and the version counter
running senders poll to notice a change within a second.

This module is the one writer of those tables: repmon lanes, the policy
engine (monitor/policy/directives.py) and the sender's own rule hits all
call it.

Writers (repmon lanes, the policy engine, the sender's own rule hits) change
rows and bump `sender_control.version` in the same transaction; a sender
reads that one integer every 200 ms and reloads the active rows only when it
moved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from sender.models import SenderLaneDirective

DIRECTIVE_KINDS = ("pause", "slow", "resume")


def bump_version(conn: Connection) -> None:
    result = conn.execute(text("UPDATE sender_control SET version = version + 1 WHERE id = 1"))
    if not result.rowcount:
        conn.execute(text("INSERT INTO sender_control (id, version) VALUES (1, 1)"))


def read_version(conn: Connection) -> int:
    row = conn.execute(text("SELECT version FROM sender_control WHERE id = 1")).first()
    return int(row[0]) if row else 0


@dataclass(slots=True)
class DirectiveResult:
    id: int
    ended_directives: int = 0
    ended_actions: int = 0


def add_directive(conn: Connection, kind: str, source_ip: str, destination: str, *, rate: float | None = None,
                  reason: str = "", created_by: str = "operator", expires_at: float | None = None,
                  now: float | None = None) -> DirectiveResult:
    """Store a pause / slow / resume. A resume ends every pause and slow
    directive and every rule action (suspend, slow, halt) it covers: it is
    how an operator clears a halt."""
    if kind not in DIRECTIVE_KINDS:
        raise ValueError(f"unknown directive {kind!r}")
    if kind == "slow" and (rate is None or rate <= 0):
        raise ValueError("slow needs a positive rate")
    now = time.time() if now is None else now
    ended_d = ended_a = 0
    if kind in ("resume", "pause", "slow"):
        # A new directive replaces the earlier ones of the same scope; a
        # resume replaces them all and cancels the rule actions as well.
        kinds = ("pause", "slow") if kind == "resume" else (kind,)
        where, params = _scope_where(source_ip, destination)
        params.update({"now": now, "why": f"replaced by {kind}" if kind != "resume" else "resumed by operator"})
        kind_list = ", ".join(f"'{k}'" for k in kinds)
        ended_d = conn.execute(text(
            f"UPDATE sender_lane_directive SET ended_at = :now, end_reason = :why WHERE ended_at IS NULL "
            f"AND kind IN ({kind_list}) AND {where}"), params).rowcount or 0
        if kind == "resume":
            ended_a = conn.execute(text(
                f"UPDATE sender_lane_action SET ended_at = :now, end_reason = 'cancelled by operator' "
                f"WHERE ended_at IS NULL AND {where}"), params).rowcount or 0
    row = conn.execute(text(
        "INSERT INTO sender_lane_directive (source_ip, destination, kind, rate, reason, created_by, created_at, "
        "expires_at, ended_at, end_reason) "
        "VALUES (:ip, :dest, :kind, :rate, :reason, :by, :now, :exp, :ended, :end_reason) "
        "RETURNING id"),
        {"ip": source_ip, "dest": destination, "kind": kind, "rate": rate, "reason": reason, "by": created_by,
         "now": now, "exp": expires_at, "ended": now if kind == "resume" else None,
         "end_reason": "applied" if kind == "resume" else None}).first()
    assert row is not None
    bump_version(conn)
    return DirectiveResult(int(row[0]), ended_d, ended_a)


def insert_directives(conn: Connection, kind: str, source_ip: str, destinations: Sequence[str], *,
                      rate: float | None, reason: str, created_by: str, now: float,
                      expires_at: float | None) -> list[int]:
    """Store one directive per destination *without* ending any other (unlike
    `add_directive`): for a writer such as the policy engine whose directive
    ending must never lift a pause someone else set. Returns the new ids."""
    if kind not in DIRECTIVE_KINDS:
        raise ValueError(f"unknown directive {kind!r}")
    table = SenderLaneDirective.__table__  # type: ignore[attr-defined]
    ids: list[int] = []
    for destination in destinations:
        row = conn.execute(table.insert().values(
            source_ip=source_ip[:64], destination=destination[:255], kind=kind, rate=rate, reason=reason[:1000],
            created_by=created_by[:100], created_at=now, expires_at=expires_at).returning(table.c.id)).first()
        assert row is not None
        ids.append(int(row[0]))
    if ids:
        bump_version(conn)
    return ids


def end_directives(conn: Connection, ids: Sequence[int], now: float, why: str) -> int:
    """End the given directives (those still running); returns how many ended."""
    if not ids:
        return 0
    n = conn.execute(text(
        f"UPDATE sender_lane_directive SET ended_at = :now, end_reason = :why WHERE ended_at IS NULL "
        f"AND id IN ({', '.join(str(int(i)) for i in ids)})"), {"now": now, "why": why[:100]}).rowcount or 0
    if n:
        bump_version(conn)
    return n


def _scope_where(source_ip: str, destination: str) -> tuple[str, dict[str, Any]]:
    """Rows a directive for (source_ip, destination) covers; '*' covers all."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if source_ip != "*":
        clauses.append("source_ip IN (:sip, '*')")
        params["sip"] = source_ip
    if destination != "*":
        clauses.append("destination IN (:sdest, '*')")
        params["sdest"] = destination
    return (" AND ".join(clauses) or "1 = 1"), params


def add_action(conn: Connection, *, source_ip: str, destination: str, action: str, rule: str, pattern: str,
               response: str, expires_at: float | None, rate: float | None = None, connections: int | None = None,
               deliveries_per_connection: int | None = None, now: float | None = None) -> int:
    """Record a rule action. The same rule on the same lane again extends the
    running action instead of stacking a second one."""
    now = time.time() if now is None else now
    existing = conn.execute(text(
        "SELECT id FROM sender_lane_action WHERE ended_at IS NULL AND source_ip = :ip AND destination = :dest "
        "AND rule = :rule AND action = :action"),
        {"ip": source_ip, "dest": destination, "rule": rule, "action": action}).first()
    if existing is not None:
        conn.execute(text("UPDATE sender_lane_action SET expires_at = :exp, response = :resp WHERE id = :id"),
                     {"exp": expires_at, "resp": response[:2000], "id": existing[0]})
        bump_version(conn)
        return int(existing[0])
    row = conn.execute(text(
        "INSERT INTO sender_lane_action (source_ip, destination, action, rate, connections, deliveries_per_connection, "
        "rule, pattern, response, created_at, expires_at) VALUES (:ip, :dest, :action, :rate, :conns, :dpc, :rule, "
        ":pattern, :resp, :now, :exp) RETURNING id"),
        {"ip": source_ip, "dest": destination, "action": action, "rate": rate, "conns": connections,
         "dpc": deliveries_per_connection, "rule": rule, "pattern": pattern[:1000], "resp": response[:2000],
         "now": now, "exp": expires_at}).first()
    assert row is not None
    bump_version(conn)
    return int(row[0])


def end_expired(conn: Connection, now: float | None = None) -> int:
    """Close actions and directives whose time is up; bumps the version when any did."""
    now = time.time() if now is None else now
    n = conn.execute(text("UPDATE sender_lane_action SET ended_at = expires_at, end_reason = 'expired' "
                          "WHERE ended_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now"),
                     {"now": now}).rowcount or 0
    n += conn.execute(text("UPDATE sender_lane_directive SET ended_at = expires_at, end_reason = 'expired' "
                           "WHERE ended_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now"),
                      {"now": now}).rowcount or 0
    if n:
        bump_version(conn)
    return n


_DIRECTIVE_COLS = ("id", "source_ip", "destination", "kind", "rate", "reason", "created_by", "created_at", "expires_at",
                   "ended_at", "end_reason")
_ACTION_COLS = ("id", "source_ip", "destination", "action", "rate", "connections", "deliveries_per_connection", "rule",
                "pattern", "response", "created_at", "expires_at", "ended_at", "end_reason")


def active_directives(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(text(f"SELECT {', '.join(_DIRECTIVE_COLS)} FROM sender_lane_directive WHERE ended_at IS NULL "
                             "ORDER BY id"))
    return [dict(zip(_DIRECTIVE_COLS, r, strict=True)) for r in rows]


def active_actions(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(text(f"SELECT {', '.join(_ACTION_COLS)} FROM sender_lane_action WHERE ended_at IS NULL "
                             "ORDER BY id"))
    return [dict(zip(_ACTION_COLS, r, strict=True)) for r in rows]


def recent_actions(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(text(f"SELECT {', '.join(_ACTION_COLS)} FROM sender_lane_action ORDER BY id DESC LIMIT :n"),
                        {"n": limit})
    return [dict(zip(_ACTION_COLS, r, strict=True)) for r in rows]


def recent_resumes(conn: Connection, since: float) -> list[dict[str, Any]]:
    rows = conn.execute(text("SELECT source_ip, destination, created_at FROM sender_lane_directive "
                             "WHERE kind = 'resume' AND created_at >= :since"), {"since": since})
    return [{"source_ip": r[0], "destination": r[1], "created_at": r[2]} for r in rows]
