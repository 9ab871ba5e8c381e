"""The 0004_health migration creates exactly the tables of monitor/health/models.py,
monitor/policy/models.py and monitor/alerts/models.py (a historic revision that
made the three parts' tables together)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from monitor.alerts import models as alert_models
from monitor.core.db import alembic_config
from monitor.health import models
from monitor.parts import MIGRATION_DIRS, all_tables
from monitor.policy import models as policy_models

HEALTH_TABLES = {"health_counts", "health_cursors", "health_routes", "health_states", "policy_actions",
                 "alert_states", "alert_notifications", "alert_deliveries"}


def test_each_part_defines_its_own_tables():
    assert {t.name for t in models.SQLModel.metadata.sorted_tables} >= HEALTH_TABLES
    assert policy_models.PolicyAction.__tablename__ == "policy_actions"
    assert {m.__tablename__ for m in (alert_models.AlertState, alert_models.AlertNotification,
                                      alert_models.AlertDelivery)} == {"alert_states", "alert_notifications",
                                                                       "alert_deliveries"}
    assert not hasattr(models, "PolicyAction") and not hasattr(models, "AlertState")


def _table_of(diff) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        name = getattr(part, "name", None) if not isinstance(part, str) else None
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            return table.name
        if name:
            return name
    return item[2] if len(item) > 2 and isinstance(item[2], str) else None


def test_health_migration_matches_models(engine):
    metadata = all_tables()
    assert HEALTH_TABLES <= set(metadata.tables)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    ours = [d for d in diff if _table_of(d) in HEALTH_TABLES]
    assert ours == [], "\n".join(map(str, ours))


def test_health_revision_is_its_own_branch():
    script = ScriptDirectory.from_config(alembic_config(MIGRATION_DIRS))
    revision = script.get_revision("0004_health")
    assert revision.down_revision == "0001_core" and "health" in revision.branch_labels
    assert "0004_health" in script.get_heads()
    assert models.COUNTERS[0] == "attempts"
