"""webhooks: durable outbox, per-source cursors, delivery state

Revision ID: 0012_webhooks
Revises: 0001_core
Written by hand from monitor/webhooks/models.py; tests/test_webhooks_delivery.py
compares the migrated schema with the models.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime

revision = "0012_webhooks"
down_revision = "0001_core"
branch_labels = ("webhooks",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("webhook", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_id", BigId, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook", "source", "source_id", name="uq_webhook_outbox_item"),
    )
    op.create_index("ix_webhook_outbox_pending", "webhook_outbox", ["webhook", "delivered_at", "id"], unique=False)
    op.create_table(
        "webhook_cursors",
        sa.Column("webhook", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("last_id", BigId, nullable=False),
        sa.Column("gaps", JsonDoc, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("webhook", "source"),
    )
    op.create_table(
        "webhook_state",
        sa.Column("webhook", sa.String(length=100), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("delivered_total", BigId, nullable=False),
        sa.Column("failed_total", BigId, nullable=False),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("webhook"),
    )


def downgrade() -> None:
    op.drop_table("webhook_state")
    op.drop_table("webhook_cursors")
    op.drop_index("ix_webhook_outbox_pending", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
