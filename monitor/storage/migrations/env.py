"""Alembic environment: run by monitor.storage.db.upgrade_schema (never by hand
through alembic.ini; there is none). The connection comes in through
config.attributes["connection"]."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from monitor.storage.schema import import_all_models

config = context.config
target_metadata = import_all_models()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # e.g. `alembic -x url=...` by a developer
        from monitor.storage.db import make_engine

        url = context.get_x_argument(as_dictionary=True).get("url")
        if not url:
            raise SystemExit("pass the database with -x url=...")
        engine = make_engine(url)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
        return
    _run(connection)


def _run(connection) -> None:
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
