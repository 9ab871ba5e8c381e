"""managed suppression list: operator audit (adds, removals with the removed row) and domain suppressions

Revision ID: 0005_suppression_admin
Revises: 0001_core
Written by hand from monitor/storage/admin_models.py; tests/test_suppressions_admin.py
compares the migrated schema with the models.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime

revision = "0005_suppression_admin"
down_revision = "0001_core"
branch_labels = ("suppression_admin",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppression_audit",
        sa.Column("id", BigId, nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("why", sa.String(length=500), nullable=False),
        sa.Column("snapshot", JsonDoc, nullable=False),
        sa.Column("event_floor", BigId, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_suppression_audit_target", "suppression_audit", ["target", "id"], unique=False)
    op.create_table(
        "suppressed_domains",
        sa.Column("id", BigId, nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain"),
    )


def downgrade() -> None:
    op.drop_table("suppressed_domains")
    op.drop_index("ix_suppression_audit_target", table_name="suppression_audit")
    op.drop_table("suppression_audit")
