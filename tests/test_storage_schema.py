"""The schema: migrations match the models, engines are set up as promised,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from monitor.core.config import ConfigError
from monitor.core.db import current_revisions, make_engine, redact_url, session_scope
from monitor.parts import all_tables, upgrade_schema
from monitor.storage.models import ProcessedMessage, StoredEvent
from tests.fixtures._peers import peer_unavailable


def test_migrations_create_exactly_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, all_tables())
    # A difference means a model changed without a migration (or the reverse).
    assert diff == [], "\n".join(map(str, diff))


def test_database_is_at_every_head(engine):
    from alembic.script import ScriptDirectory

    from monitor.core.db import alembic_config
    from monitor.parts import MIGRATION_DIRS

    heads = set(ScriptDirectory.from_config(alembic_config(MIGRATION_DIRS)).get_heads())
    assert current_revisions(engine) == heads


def test_upgrade_twice_is_a_no_op_and_keeps_data(engine, migrated_db_url):
    with session_scope(engine) as session:
        session.add(ProcessedMessage(content_sha256="a" * 64, size=10, source="t", outcome="stored"))
    upgrade_schema(migrated_db_url)
    with session_scope(engine) as session:
        assert session.execute(select(ProcessedMessage.content_sha256)).scalars().all() == ["a" * 64]


def test_core_tables_exist(engine):
    tables = set(inspect(engine).get_table_names())
    assert {"processed_messages", "events", "dmarc_reports", "dmarc_records", "dmarc_failures", "tls_reports",
            "tls_policies", "source_checkpoints", "pending_moves", "folder_files", "quarantined_messages",
            "message_failures", "suppressions"} <= tables
    event_indexes = {ix["name"] for ix in inspect(engine).get_indexes("events")}
    assert {"ix_events_sending_ip_occurred", "ix_events_recipient_domain_occurred",
            "ix_events_occurred_at"} <= event_indexes


def test_times_come_back_as_aware_utc(engine):
    given = datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as session:
        session.add(StoredEvent(kind="bounce", occurred_at=given))
    with session_scope(engine) as session:
        got = session.execute(select(StoredEvent.occurred_at)).scalar_one()
    assert got == given and got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got.hour == 10


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(StoredEvent(kind="bounce", occurred_at=datetime.now(UTC), message_id=999_999))


def test_deleting_a_ledger_row_cascades_to_its_events(engine):
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        message = ProcessedMessage(content_sha256="b" * 64, size=1, source="t", outcome="stored")
        session.add(message)
        session.flush()
        session.add(StoredEvent(kind="bounce", occurred_at=now, message_id=message.id))
    with session_scope(engine) as session:
        session.execute(text("DELETE FROM processed_messages"))
    with session_scope(engine) as session:
        assert session.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    engine = make_engine(url, create_dir=True)  # [database] create_dir = true: 'sub' is made
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_plain_postgresql_url_means_psycopg3():
    engine = make_engine("postgresql://u:secret@127.0.0.1:1/x")
    try:
        assert engine.dialect.driver == "psycopg"
        assert "secret" not in repr(engine) and "secret" not in str(engine.url.render_as_string(hide_password=True))
    finally:
        engine.dispose()


def test_bad_urls_are_config_errors_without_the_password():
    with pytest.raises(ConfigError) as info:
        make_engine("mysql://u:hunter2@127.0.0.1/x")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in redact_url("postgresql://u:hunter2@h/x")


def test_unique_ledger_key(engine):
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(ProcessedMessage(content_sha256="c" * 64, size=1, source="a", outcome="stored"))
            session.flush()
            session.add(ProcessedMessage(content_sha256="c" * 64, size=1, source="b", outcome="stored"))
            session.flush()


@pytest.mark.postgres
def test_throwaway_cluster_for_machines_without_a_running_server():
    """What CI does when PostgreSQL is installed but not running."""
    from tests.fixtures.databases import start_throwaway_cluster

    try:
        server = start_throwaway_cluster()
    except RuntimeError as exc:  # no PostgreSQL binaries: skipped locally, a failure under CI
        peer_unavailable(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    try:
        assert server.port != 5432
        name = server.create_database()
        upgrade_schema(server.url(name))
        engine = make_engine(server.url(name))
        try:
            assert "events" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
    finally:
        server.stop()
    assert not server.data_dir.exists()
