"""What the API reads and changes, as plain functions over an engine: the
suppression list (storage's managed-list API), the event feed, health states
and policy actions. Everything here is synchronous and runs in the server's
database threads.

Reads go through a reader engine: on SQLite the storage engine starts every
transaction with BEGIN IMMEDIATE, so a read through it would queue behind the
daemon's writers; the reader engine reads WAL snapshots with `query_only`.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, inspect, select
from sqlalchemy.engine import URL, Engine
from sqlmodel import Session

from monitor.api import actions
from monitor.config import RepmonConfig
from monitor.core.db import SQLITE_BUSY_TIMEOUT_MS, make_engine, normalize_url, run_on_every_sqlite_connection, session_scope
from monitor.core.dbtypes import utcnow
from monitor.health.clock import SystemClock
from monitor.storage import suppression_admin as admin

MAX_LIMIT = admin.MAX_PAGE


def reader_engine(url: str | URL, pool_size: int) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return make_engine(parsed)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                           pool_size=pool_size, max_overflow=2, hide_parameters=True)
    run_on_every_sqlite_connection(engine, [f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "PRAGMA query_only=ON"])
    return engine


class ApiData:
    """The API's view of the database: `reader` for reads, `writer` for changes."""

    def __init__(self, config: RepmonConfig, writer: Engine, reader: Engine) -> None:
        self.config = config
        self.writer = writer
        self.reader = reader
        self._health_table: Table | None = None
        self._lock = threading.Lock()

    # -- suppressions ----------------------------------------------------------------------

    def list_suppressions(self, filters: admin.Filters, cursor: str | None, limit: int) -> admin.Page:
        with Session(self.reader) as session:
            return admin.list_suppressions(session, filters, cursor=cursor, limit=limit)

    def show(self, address: str) -> dict[str, Any] | None:
        with Session(self.reader) as session:
            return admin.show(session, address)

    def check(self, address: str) -> dict[str, Any]:
        with self.reader.connect() as conn:
            return admin.check(conn, address)

    def add(self, address: str, why: str, actor: str) -> dict[str, Any]:
        with session_scope(self.writer) as session:
            return admin.add(session, address, why=why, actor=actor)

    def remove(self, address: str, why: str, actor: str) -> dict[str, Any] | None:
        with session_scope(self.writer) as session:
            return admin.remove(session, address, why=why, actor=actor)

    # -- events ----------------------------------------------------------------------------

    def events(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return admin.events_after(conn, after_id, limit)

    # -- health (the health part's table, read by name) -------------------------------------

    def health_states(self) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            table = self._health(conn)
            if table is None:
                return []
            rows = conn.execute(select(table).order_by(table.c.subject)).mappings().all()
        return [_health_json(r) for r in rows]

    def _health(self, conn: Any) -> Table | None:
        with self._lock:
            if self._health_table is None:
                if "health_states" not in set(inspect(conn).get_table_names()):
                    return None
                self._health_table = Table("health_states", MetaData(), autoload_with=conn)
            return self._health_table

    # -- policy actions ---------------------------------------------------------------------

    def actions(self, active_only: bool, since: datetime | None) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return actions.list_json(conn, active_only=active_only, since=since)

    def cancel_action(self, action_id: int, user: str, reason: str) -> dict[str, Any]:
        with self.writer.begin() as conn:
            return actions.cancel(self.config, self.writer, conn, action_id, user=user, reason=reason,
                                  now=SystemClock().now())


def _loads(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        text = value.isoformat() if value.tzinfo is not None else value.isoformat() + "+00:00"
        return text.replace("+00:00", "Z")
    return str(value)


def _health_json(row: Any) -> dict[str, Any]:
    return {"subject": row.get("subject"), "kind": row.get("kind"), "state": row.get("state"), "score": row.get("score"),
            "reasons": _loads(row.get("reasons")) or [], "findings": _loads(row.get("findings")) or [],
            "evaluated": _time(row.get("evaluated_at")), "changed": _time(row.get("changed_at"))}


def now_utc() -> datetime:
    return utcnow()
