"""The durable outbox: what is new goes in (by id cursor, per webhook and
source, cursor and rows in one transaction), delivered rows come out in id
order, failures wait with back-off, and one node per webhook delivers (a
lease in `webhook_state`).

Sources: stored events and the suppression list through storage's feeds
(monitor/storage/suppression_admin.py), policy actions from the policy's
table read by name (the policy offers no id-ordered read).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, func, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from monitor.core.dbtypes import utcnow
from monitor.storage import suppression_admin as feeds
from monitor.webhooks.models import WebhookCursor, WebhookOutbox, WebhookState
from monitor.webhooks.settings import WebhookConfig

_outbox: Table = WebhookOutbox.__table__  # type: ignore[attr-defined]
_cursors: Table = WebhookCursor.__table__  # type: ignore[attr-defined]
_state: Table = WebhookState.__table__  # type: ignore[attr-defined]

SOURCES = ("events", "suppressions", "removals", "actions")
# which source each event type comes from
SOURCE_OF = {"bounce": "events", "complaint": "events", "feedback": "events", "auto_reply": "events",
             "delivery_success": "events", "not_bounce": "events", "suppression": "suppressions",
             "unsuppression": "removals", "action": "actions"}
ACTION_COLUMNS = ("id", "subject", "action", "rule", "created_by", "evidence", "params", "destinations", "target",
                  "until", "started_at", "expires_at", "ended_at", "end_reason")


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def event_type(item: dict[str, Any]) -> str:
    kind = str(item.get("kind") or "")
    if kind == "feedback" and item.get("is_complaint"):
        return "complaint"
    return kind


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, bytes)) and value[:1] in ("[", "{", b"[", b"{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ActionsFeed:
    """policy_actions with id > n, read by table name (reflected once)."""

    def __init__(self) -> None:
        self._table: Table | None = None

    def __call__(self, conn: Connection, after_id: int, limit: int) -> list[dict[str, Any]]:
        if self._table is None:
            if "policy_actions" not in set(inspect(conn).get_table_names()):
                return []
            self._table = Table("policy_actions", MetaData(), autoload_with=conn)
        t = self._table
        rows = conn.execute(select(*[t.c[c] for c in ACTION_COLUMNS if c in t.c])
                            .where(t.c.id > after_id).order_by(t.c.id).limit(limit)).mappings()
        return [{k: _iso(_json_value(v)) for k, v in row.items()} for row in rows]

    def top(self, conn: Connection) -> int:
        if "policy_actions" not in set(inspect(conn).get_table_names()):
            return 0
        return int(conn.execute(select(func.max(Table("policy_actions", MetaData(), autoload_with=conn).c.id))).scalar()
                   or 0)


_ACTIONS = ActionsFeed()


def _events(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    return feeds.events_after(conn, after, limit, gap_grace_s=120.0)


FETCH: dict[str, Callable[[Connection, int, int], list[dict[str, Any]]]] = {
    "events": _events, "suppressions": feeds.suppressions_after, "removals": feeds.removals_after, "actions": _ACTIONS,
}


def _top(conn: Connection, source: str) -> int:
    if source == "actions":
        return _ACTIONS.top(conn)
    return feeds.top_ids(conn)[source]


def wanted_sources(hook: WebhookConfig) -> list[str]:
    wanted = {SOURCE_OF[e] for e in hook.events}
    return [s for s in SOURCES if s in wanted]


def _type_of(source: str, item: dict[str, Any]) -> str:
    if source == "events":
        return event_type(item)
    return {"suppressions": "suppression", "removals": "unsuppression", "actions": "action"}[source]


def body_of(event: str, source: str, item: dict[str, Any], now: datetime) -> str:
    return json.dumps({"type": event, "id": f"{source}:{item['id']}", "created": _iso(now), "data": item},
                      default=str, ensure_ascii=False, separators=(",", ":"))


def enqueue(conn: Connection, hook: WebhookConfig) -> int:
    """One pass over the webhook's sources: new rows into the outbox, cursors
    advanced, in the caller's transaction. Returns how many rows were queued."""
    queued = 0
    now = utcnow()
    for source in wanted_sources(hook):
        cursor = conn.execute(select(_cursors.c.last_id).where(_cursors.c.webhook == hook.key,
                                                                _cursors.c.source == source)).scalar()
        if cursor is None:
            start = 0 if hook.start == "beginning" else _top(conn, source)
            conn.execute(_insert(conn)(_cursors).values(webhook=hook.key, source=source, last_id=start, gaps=[],
                                                        updated_at=now).on_conflict_do_nothing())
            if hook.start == "now":
                continue
            cursor = start
        items = FETCH[source](conn, int(cursor), hook.batch)
        if not items:
            continue
        rows = [{"webhook": hook.key, "event_type": t, "source": source, "source_id": int(item["id"]),
                 "body": body_of(t, source, item, now), "created_at": now, "attempts": 0, "next_attempt_at": now}
                for item in items if (t := _type_of(source, item)) in hook.events]
        if rows:
            conn.execute(_insert(conn)(_outbox).on_conflict_do_nothing(index_elements=["webhook", "source", "source_id"]),
                         rows)
            queued += len(rows)
        conn.execute(update(_cursors).where(_cursors.c.webhook == hook.key, _cursors.c.source == source)
                     .values(last_id=int(items[-1]["id"]), updated_at=now))
    return queued


# --- delivery side ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    event_type: str
    body: str
    attempts: int
    next_attempt_at: datetime


def take_lease(conn: Connection, webhook: str, owner: str, now: float, ttl: float) -> bool:
    """True when `owner` may deliver for this webhook for the next `ttl` seconds."""
    conn.execute(_insert(conn)(_state).values(webhook=webhook, lease_owner=None, lease_until=0.0, delivered_total=0,
                                              failed_total=0).on_conflict_do_nothing())
    done = conn.execute(update(_state).where(
        _state.c.webhook == webhook,
        (_state.c.lease_owner == owner) | (_state.c.lease_owner.is_(None)) | (_state.c.lease_until < now),
    ).values(lease_owner=owner, lease_until=now + ttl))
    return bool(done.rowcount)


def head(conn: Connection, webhook: str, limit: int) -> list[Pending]:
    """The oldest undelivered rows of a webhook, in delivery order."""
    rows = conn.execute(select(_outbox.c.id, _outbox.c.event_type, _outbox.c.body, _outbox.c.attempts,
                               _outbox.c.next_attempt_at)
                        .where(_outbox.c.webhook == webhook, _outbox.c.delivered_at.is_(None))
                        .order_by(_outbox.c.id).limit(limit))
    return [Pending(*r) for r in rows]


def mark_delivered(conn: Connection, webhook: str, ids: list[int], status: int) -> None:
    if not ids:
        return
    now = utcnow()
    conn.execute(update(_outbox).where(_outbox.c.id.in_(ids)).values(delivered_at=now, last_status=status))
    conn.execute(update(_state).where(_state.c.webhook == webhook).values(
        delivered_total=_state.c.delivered_total + len(ids), last_success_at=now))


def mark_failed(conn: Connection, webhook: str, item: Pending, status: int | None, error: str, delay_s: float) -> None:
    now = utcnow()
    conn.execute(update(_outbox).where(_outbox.c.id == item.id).values(
        attempts=_outbox.c.attempts + 1, next_attempt_at=now + timedelta(seconds=delay_s), last_status=status,
        last_error=error[:500]))
    conn.execute(update(_state).where(_state.c.webhook == webhook).values(
        failed_total=_state.c.failed_total + 1, last_failure_at=now, last_error=error[:500]))


def purge(conn: Connection, webhook: str, keep_s: float, limit: int = 5000) -> int:
    cutoff = utcnow() - timedelta(seconds=keep_s)
    ids = list(conn.execute(select(_outbox.c.id).where(
        _outbox.c.webhook == webhook, _outbox.c.delivered_at.is_not(None), _outbox.c.delivered_at < cutoff)
        .order_by(_outbox.c.id).limit(limit)).scalars())
    if ids:
        conn.execute(_outbox.delete().where(_outbox.c.id.in_(ids)))
    return len(ids)


# --- status ---------------------------------------------------------------------------------------

def status(conn: Connection, hooks: list[WebhookConfig]) -> list[dict[str, Any]]:
    """Per webhook: pending rows, lag (age of the oldest pending), the head's
    attempts and error, totals, and rows not even queued yet per source."""
    now = utcnow()
    out = []
    for hook in hooks:
        pending = int(conn.execute(select(func.count()).select_from(_outbox).where(
            _outbox.c.webhook == hook.key, _outbox.c.delivered_at.is_(None))).scalar() or 0)
        first = conn.execute(select(_outbox).where(_outbox.c.webhook == hook.key, _outbox.c.delivered_at.is_(None))
                             .order_by(_outbox.c.id).limit(1)).first()
        state = conn.execute(select(_state).where(_state.c.webhook == hook.key)).first()
        behind = {}
        for row in conn.execute(select(_cursors.c.source, _cursors.c.last_id).where(_cursors.c.webhook == hook.key)):
            behind[row.source] = max(0, _top(conn, row.source) - int(row.last_id))
        out.append({
            "webhook": hook.key, "events": list(hook.events), "pending": pending,
            "lag_s": round((now - first.created_at).total_seconds(), 1) if first is not None else 0.0,
            "head_attempts": first.attempts if first is not None else 0,
            "next_attempt": _iso(first.next_attempt_at) if first is not None and first.attempts else None,
            "head_error": first.last_error if first is not None else None,
            "delivered_total": int(state.delivered_total) if state is not None else 0,
            "failed_total": int(state.failed_total) if state is not None else 0,
            "last_success": _iso(state.last_success_at) if state is not None else None,
            "last_failure": _iso(state.last_failure_at) if state is not None else None,
            "last_error": state.last_error if state is not None else None,
            "not_queued_yet": behind,
        })
    return out
