"""Alembic environment: run by monitor.core.db.upgrade_schema (never by hand
through alembic.ini; there is none). The connection comes in through
config.attributes["connection"]; the revisions come from the folders each part
keeps its migrations in (monitor/parts.py lists them)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

config = context.config
# The tables of whatever parts the caller imported (autogenerate only).
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise SystemExit("run migrations through monitor.parts.upgrade_schema (or `repmon run`)")
    _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
run_migrations_online()
