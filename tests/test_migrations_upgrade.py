"""Upgrading never loses data.

A database is brought to one revision, every table that revision has is
filled with rows by plain SQL (reflected tables, values made from each
column's type, foreign keys pointing at rows inserted before), then it is
upgraded to "heads" and every row must still be there, equal, on SQLite and
PostgreSQL. The revisions are read from the parts' Alembic folders
(monitor.parts.MIGRATION_DIRS): 0001_core, then the branches off it
(0002_signals, 0003_sender, 0004_health, and any added later), so a new
revision is covered the day it lands.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import types as satypes

CORE = "0001_core"
KNOWN = {"0001_core", "0002_signals", "0003_sender", "0004_health"}
ROWS_PER_TABLE = 3
Snapshot = dict[str, list[dict[str, Any]]]


def _value(table: sa.Table, column: sa.Column, n: int) -> Any:
    """A value of the column's type, distinct for each n (unique columns stay unique)."""
    kind = column.type
    if isinstance(kind, satypes.Enum) and kind.enums:
        return kind.enums[n % len(kind.enums)]
    if isinstance(kind, satypes.Boolean):
        return n % 2 == 0
    if isinstance(kind, satypes.Integer):
        return 1000 + n
    if isinstance(kind, satypes.Float):
        return 0.25 + n
    if isinstance(kind, satypes.Numeric):
        return decimal.Decimal(f"{n}.5")
    if isinstance(kind, satypes.DateTime):
        moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678000) + dt.timedelta(hours=n)
        return moment.replace(tzinfo=dt.timezone.utc) if kind.timezone else moment
    if isinstance(kind, satypes.Date):
        return dt.date(2026, 1, 2) + dt.timedelta(days=n)
    if isinstance(kind, satypes.Time):
        return dt.time(3, 4, n % 60)
    if isinstance(kind, satypes.Interval):
        return dt.timedelta(seconds=n)
    if isinstance(kind, satypes.JSON):
        return {"table": table.name, "n": n, "nested": [1, "two", None]}
    if isinstance(kind, satypes.LargeBinary):
        return f"{table.name}:{column.name}:{n}\x00\xff".encode("latin-1")
    if isinstance(kind, satypes.Uuid):
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"{table.name}.{column.name}.{n}")
    if isinstance(kind, satypes.String):
        text = f"{column.name}-{n}-{table.name}-ü"
        return text[: kind.length] if kind.length else text
    raise AssertionError(f"no test value for {table.name}.{column.name} of type {kind!r}")


def _row(table: sa.Table, n: int, inserted: Snapshot) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in table.columns:
        row[column.name] = _value(table, column, n)
    for fk in table.foreign_key_constraints:
        parents = inserted.get(fk.referred_table.name)
        assert parents, f"{table.name} refers to {fk.referred_table.name}, filled later"
        parent = parents[n % len(parents)]
        for local, remote in zip(fk.column_keys, [e.column.name for e in fk.elements], strict=True):
            row[local] = parent[remote]
    return row


def _tables(engine: sa.Engine) -> list[sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(engine)
    return [t for t in metadata.sorted_tables if t.name != "alembic_version"]


def _select_all(conn: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns) or list(table.columns)
    return [dict(r) for r in conn.execute(sa.select(table).order_by(*order)).mappings()]


def fill(engine: sa.Engine, snapshot: Snapshot, *, start: int) -> set[str]:
    """Insert ROWS_PER_TABLE rows into every table; `snapshot` gets what each table
    holds then, read back from the database. Returns the tables filled."""
    tables = _tables(engine)
    with engine.begin() as conn:
        for table in tables:
            rows = [_row(table, start + i, snapshot) for i in range(ROWS_PER_TABLE)]
            conn.execute(sa.insert(table), rows)
            snapshot[table.name] = _select_all(conn, table)
    return {t.name for t in tables}


def check_nothing_lost(engine: sa.Engine, before: Snapshot) -> None:
    tables = {t.name: t for t in _tables(engine)}
    assert set(before) <= set(tables), f"tables gone after the upgrade: {set(before) - set(tables)}"
    with engine.connect() as conn:
        for name, rows in before.items():
            now = _select_all(conn, tables[name])
            # columns a later revision added are new; every old column keeps its value
            now = [{k: r[k] for k in rows[0]} for r in now] if rows else now
            assert now == rows, f"rows of {name} changed in the upgrade"


def _script():
    from alembic.script import ScriptDirectory

    from monitor.core.db import alembic_config
    from monitor.parts import MIGRATION_DIRS

    return ScriptDirectory.from_config(alembic_config(MIGRATION_DIRS))


def all_revisions() -> list[str]:
    """Every revision, each after the ones it builds on."""
    return [s.revision for s in reversed(list(_script().walk_revisions()))]


def heads_after(*targets: str) -> set[str]:
    """What alembic_version holds once the database was upgraded to each target in turn."""
    script = _script()
    applied = {s.revision for t in targets for s in script.iterate_revisions(t, "base") if s is not None}
    below: set[str] = set()
    for revision in applied:
        found = script.get_revision(revision)
        assert found is not None
        down = found.down_revision
        below |= {down} if isinstance(down, str) else set(down or ())
    return applied - below


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "start" in metafunc.fixturenames:
        metafunc.parametrize("start", all_revisions())


def upgrade_schema(url: str, revision: str = "heads") -> None:
    from monitor.parts import upgrade_schema as upgrade

    upgrade(url, revision=revision)


def revisions(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}


@pytest.fixture
def db_engine(db_url: str):
    from monitor.core.db import make_engine

    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_the_known_revisions_are_all_there():
    revisions = all_revisions()
    assert revisions[0] == CORE and KNOWN <= set(revisions)
    assert heads_after("heads") == set(_script().get_heads())


def test_rows_written_at_a_revision_survive_the_upgrade_to_heads(db_url, db_engine, start):
    upgrade_schema(db_url, revision=start)
    assert revisions(db_engine) == {start}
    snapshot: Snapshot = {}
    filled = fill(db_engine, snapshot, start=0)
    assert "events" in filled  # 0001_core's tables are always there
    upgrade_schema(db_url)
    assert revisions(db_engine) == heads_after("heads")
    check_nothing_lost(db_engine, snapshot)
    # the tables the upgrade created are usable next to the old rows
    assert {t.name for t in _tables(db_engine)} >= filled
    fill(db_engine, snapshot, start=100)


def test_rows_written_at_every_step_survive_each_later_step(db_url, db_engine):
    snapshot: Snapshot = {}
    steps = [*all_revisions(), "heads"]
    seen_tables: set[str] = set()
    for i, revision in enumerate(steps):
        upgrade_schema(db_url, revision=revision)
        assert revisions(db_engine) == heads_after(*steps[: i + 1])
        check_nothing_lost(db_engine, snapshot)
        tables = fill(db_engine, snapshot, start=10 * i)  # more rows in old tables, first rows in new ones
        assert tables >= seen_tables
        seen_tables = tables
    upgrade_schema(db_url)  # at heads already: a no-op that must not touch rows either
    check_nothing_lost(db_engine, snapshot)
    assert all(len(rows) >= ROWS_PER_TABLE for rows in snapshot.values())
