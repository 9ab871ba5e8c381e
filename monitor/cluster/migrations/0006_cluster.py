"""cluster: nodes, leases, shared lane budgets and connection claims

Revision ID: 0006_cluster
Revises: 0001_core
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_cluster"
down_revision = "0001_core"
branch_labels = ("cluster",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_index(op.f("ix_cluster_nodes_heartbeat_at"), "cluster_nodes", ["heartbeat_at"], unique=False)
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "cluster_lane_budgets",
        sa.Column("lane", sa.String(length=255), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("day_count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("lane"),
    )
    op.create_table(
        "cluster_lane_connections",
        sa.Column("lane", sa.String(length=255), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("connections", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("lane", "node_id"),
    )


def downgrade() -> None:
    op.drop_table("cluster_lane_connections")
    op.drop_table("cluster_lane_budgets")
    op.drop_table("cluster_leases")
    op.drop_index(op.f("ix_cluster_nodes_heartbeat_at"), table_name="cluster_nodes")
    op.drop_table("cluster_nodes")
