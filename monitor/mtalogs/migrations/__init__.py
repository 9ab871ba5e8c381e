"""Alembic revisions of this part (run through monitor.core.db.upgrade_schema)."""
