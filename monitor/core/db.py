"""Engines, sessions and schema upgrades for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode so the daemon can write while
`repmon stats` or the HTTP API read; every write transaction starts with
BEGIN IMMEDIATE so two writers queue on the busy timeout instead of failing
half-way with "database is locked". PostgreSQL is reached through psycopg 3
(`postgresql+psycopg://user@host/db`; a bare `postgresql://` URL is taken to
mean the same).

The schema is managed by Alembic; `upgrade_schema` brings any database to the
newest revision of every branch (core, signals, sender, health) found in the
folders it is given (each part keeps its own revisions; monitor/parts.py lists
the folders) and is what `repmon run` calls at start-up. Upgrades only add: they
never drop user data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session, create_engine

from monitor.core.config import ConfigError

# The Alembic environment; the revisions live with the parts that own the tables.
MIGRATIONS_ENV_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any fixed number: all repmon nodes upgrading one PostgreSQL database take
# this advisory lock so only one runs the migrations.
_PG_MIGRATION_LOCK = 0x7265706D6F6E  # "repmon"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain postgresql:// means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database url is not a valid URL: {redact_url(str(url))}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"database url: only sqlite and postgresql are supported, not {parsed.get_backend_name()}")
    return parsed


def redact_url(url: str | URL) -> str:
    """The URL with any password replaced by ***, for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database url>"


def make_engine(url: str | URL, *, echo: bool = False, create_dir: bool = False) -> Engine:
    """create_dir ([database] create_dir): make a SQLite file's missing folder;
    otherwise a missing folder is a ConfigError (a mistyped path must not
    silently start an empty database)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo, create_dir)
    return create_engine(
        parsed,
        echo=echo,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,  # survive a PostgreSQL restart between jobs
        pool_recycle=1800,
        hide_parameters=True,  # raw message bytes and addresses stay out of error text
    )


def _sqlite_engine(url: URL, echo: bool, create_dir: bool = False) -> Engine:
    database = url.database or ""
    if database and database != ":memory:":
        folder = Path(database).parent
        if create_dir:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise ConfigError(f"database url: the folder {folder} does not exist; create it, or set "
                              "[database] create_dir = true")
    engine = create_engine(
        url,
        echo=echo,
        # The driver's own transaction handling is switched off (isolation_level
        # None) so that we can issue BEGIN IMMEDIATE ourselves below.
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        pool_size=5,
        max_overflow=5,
        hide_parameters=True,
    )

    pragmas = ["PRAGMA journal_mode=WAL"] if database and database != ":memory:" else []
    pragmas += [
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys=ON",
        # In WAL mode NORMAL is still crash-safe for the database; only the
        # last transactions before a power cut can roll back.
        "PRAGMA synchronous=NORMAL",
    ]
    run_on_every_sqlite_connection(engine, pragmas)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def run_on_every_sqlite_connection(engine: Engine, pragmas: list[str]) -> None:
    """Run `pragmas` on each new connection of a SQLite engine: SQLite keeps
    these settings per connection, not in the database file."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on an exception."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(version_dirs: Sequence[Path], connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_ENV_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(str(d) for d in version_dirs))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_schema(engine_or_url: Engine | str | URL, version_dirs: Sequence[Path], revision: str = "heads") -> None:
    """Apply every Alembic migration not applied yet (all branches by default)."""
    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()
            try:
                command.upgrade(alembic_config(version_dirs, connection), revision)
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    connection.rollback()
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    connection.commit()
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def current_revisions(engine: Engine) -> set[str]:
    """The Alembic revisions the database is at (empty before the first upgrade)."""
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
