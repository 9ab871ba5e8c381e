"""Insert-if-missing on both engines (the row every later UPDATE can lock)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def ensure_row(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: two nodes creating the same row at
    once both go on, neither fails."""
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())


def needs_row_lock(conn: Connection) -> bool:
    """Whether SELECT ... FOR UPDATE is needed: PostgreSQL locks rows; on SQLite
    every write transaction already holds the database lock (BEGIN IMMEDIATE)."""
    return conn.dialect.name == "postgresql"
