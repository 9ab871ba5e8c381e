"""delivery-log tables: file checkpoints, delivery outcomes, rejected lines, log-hook ledger

Revision ID: 0007_mtalogs
Revises: 0001_core
Written by hand from monitor/mtalogs/models.py; tests/test_mtalogs_store.py
compares the migrated schema with the models.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, UTCDateTime

revision = "0007_mtalogs"
down_revision = "0001_core"
branch_labels = ("mtalogs",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mtalog_checkpoints",
        sa.Column("id", BigId, nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("device", BigId, nullable=False),
        sa.Column("inode", BigId, nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("offset", BigId, nullable=False),
        sa.Column("head_len", sa.Integer(), nullable=False),
        sa.Column("head_sha256", sa.String(length=64), nullable=False),
        sa.Column("lines", BigId, nullable=False),
        sa.Column("records", BigId, nullable=False),
        sa.Column("rejected", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "device", "inode", name="uq_mtalog_checkpoints_file"),
    )
    op.create_table(
        "mtalog_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("mta", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("at_epoch", BigId, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("sending_domain", sa.String(length=255), nullable=True),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("destination_host", sa.String(length=255), nullable=True),
        sa.Column("recipient_domain", sa.String(length=255), nullable=True),
        sa.Column("queue_id", sa.String(length=64), nullable=True),
        sa.Column("dsn", sa.String(length=16), nullable=True),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("event_id", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mtalog_deliveries_ip_at", "mtalog_deliveries", ["source_ip", "at_epoch"])
    op.create_index("ix_mtalog_deliveries_domain_at", "mtalog_deliveries", ["sending_domain", "at_epoch"])
    op.create_index("ix_mtalog_deliveries_at", "mtalog_deliveries", ["at_epoch"])
    op.create_table(
        "mtalog_rejects",
        sa.Column("id", BigId, nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("offset", BigId, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("rejected_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mtalog_rejects_source_at", "mtalog_rejects", ["source", "rejected_at"])
    op.create_table(
        "mtalog_hook_records",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_index("ix_mtalog_hook_records_seen", "mtalog_hook_records", ["seen_at"])


def downgrade() -> None:
    op.drop_table("mtalog_hook_records")
    op.drop_table("mtalog_rejects")
    op.drop_table("mtalog_deliveries")
    op.drop_table("mtalog_checkpoints")
