"""health tables: roll-up counters and cursors, recipient-domain routes, health
states, policy actions, alert states, notifications and deliveries

Revision ID: 0004_health
Revises: 0001_core
Written by hand from what was then monitor/health/models.py. The policy and
alert tables have since moved to their parts (monitor/policy/models.py,
monitor/alerts/models.py); this historic revision stays here, since databases
have it applied. tests/test_health_schema.py compares the migrated schema with
the three modules.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime

revision = "0004_health"
down_revision = "0001_core"
branch_labels = ("health",)
depends_on = None

COUNTERS = ("attempts", "delivered", "deferred", "sent", "hard_bounces", "soft_bounces", "blocks", "hostunknown",
            "complaints", "dmarc_messages", "dmarc_pass", "dkim_pass", "spf_pass")


def upgrade() -> None:
    op.create_table(
        "health_counts",
        sa.Column("grain", sa.String(length=4), nullable=False),
        sa.Column("bucket", BigId, nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        *[sa.Column(name, BigId, nullable=False) for name in COUNTERS],
        sa.PrimaryKeyConstraint("grain", "bucket", "scope", "key", "destination"),
    )
    op.create_index("ix_health_counts_subject", "health_counts", ["scope", "key", "grain", "bucket"], unique=False)

    op.create_table(
        "health_cursors",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("last_id", BigId, nullable=False),
        sa.Column("gaps", JsonDoc, nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )

    op.create_table(
        "health_routes",
        sa.Column("recipient_domain", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("recipient_domain"),
    )

    op.create_table(
        "health_states",
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("reasons", JsonDoc, nullable=False),
        sa.Column("findings", JsonDoc, nullable=False),
        sa.Column("figures", JsonDoc, nullable=False),
        sa.Column("evaluated_at", UTCDateTime(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subject"),
    )
    op.create_index("ix_health_states_state", "health_states", ["state"], unique=False)

    op.create_table(
        "policy_actions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("evidence", JsonDoc, nullable=False),
        sa.Column("params", JsonDoc, nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("destinations", JsonDoc, nullable=False),
        sa.Column("target", sa.String(length=320), nullable=True),
        sa.Column("directive_ids", JsonDoc, nullable=False),
        sa.Column("until", sa.String(length=8), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_policy_actions_active", "policy_actions", ["ended_at"], unique=False)
    op.create_index("ix_policy_actions_subject_rule", "policy_actions", ["subject", "rule"], unique=False)
    op.create_index("ix_policy_actions_started", "policy_actions", ["started_at"], unique=False)

    op.create_table(
        "alert_states",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("cause", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("first_fired_at", UTCDateTime(), nullable=False),
        sa.Column("last_change_at", UTCDateTime(), nullable=False),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("notified_severity", sa.String(length=8), nullable=True),
        sa.Column("notified_status", sa.String(length=8), nullable=True),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )

    op.create_table(
        "alert_notifications",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("cause", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("details", JsonDoc, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_notifications_pending", "alert_notifications", ["dispatched_at"], unique=False)

    op.create_table(
        "alert_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("channel_kind", sa.String(length=8), nullable=False),
        sa.Column("notification_ids", JsonDoc, nullable=False),
        sa.Column("payload", JsonDoc, nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    for index, table in (("ix_alert_deliveries_due", "alert_deliveries"),
                         ("ix_alert_notifications_pending", "alert_notifications"),
                         ("ix_policy_actions_started", "policy_actions"),
                         ("ix_policy_actions_subject_rule", "policy_actions"),
                         ("ix_policy_actions_active", "policy_actions"),
                         ("ix_health_states_state", "health_states"),
                         ("ix_health_counts_subject", "health_counts")):
        op.drop_index(index, table_name=table)
    for table in ("alert_deliveries", "alert_notifications", "alert_states", "policy_actions", "health_states",
                  "health_routes", "health_cursors", "health_counts"):
        op.drop_table(table)
