"""The sender's Alembic revision creates exactly the tables sender/models.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, text

from monitor.parts import all_tables


def test_migrated_sender_schema_matches_the_models(engine):
    full = all_tables()
    ours = MetaData()
    for table in full.sorted_tables:
        if table.name.startswith("sender_"):
            table.to_metadata(ours)
    assert len(ours.tables) == 8
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, ours)
                 if not (d[0] == "remove_table"
                         or (d[0] == "remove_index" and not d[1].table.name.startswith("sender_")))]
        version = conn.execute(text("SELECT version FROM sender_control WHERE id = 1")).scalar()
        heads = {r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))}
    assert diffs == []
    assert version == 0
    assert "0003_sender" in heads
