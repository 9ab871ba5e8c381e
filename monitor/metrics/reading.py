"""The database connection the metrics read through.

The storage engine of SQLite (monitor/storage/db.py) starts every transaction
with BEGIN IMMEDIATE so writers queue instead of failing; a scrape going
through it would take the write lock for a read. The metrics get their own
SQLite engine instead: plain reads in WAL mode, which never block the daemon's
writers, with `query_only` so no code path can write. PostgreSQL reads do not
lock, so there the storage engine factory is used as is.
"""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from monitor.core.db import SQLITE_BUSY_TIMEOUT_MS, make_engine, normalize_url, run_on_every_sqlite_connection


def reader_engine(url: str | URL) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return make_engine(parsed)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=2,
        max_overflow=2,
        hide_parameters=True,
    )
    run_on_every_sqlite_connection(engine, [f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "PRAGMA query_only=ON"])
    return engine
