"""signals tables: blocklist states and zone health, signal events, DNS
authentication checks, postmaster figures (Google, SNDS) and fetch states

Revision ID: 0002_signals
Revises: 0001_core
Hand-checked autogenerate output; tests/test_signals_storage.py compares the
migrated schema with monitor/signals/models.py.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime

revision = "0002_signals"
down_revision = "0001_core"
branch_labels = ("signals",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dnsbl_states",
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("zone", sa.String(length=255), nullable=False),
        sa.Column("target_kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("codes", JsonDoc, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("txt", sa.Text(), nullable=True),
        sa.Column("delist_url", sa.String(length=500), nullable=True),
        sa.Column("error_streak", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_known", sa.String(length=8), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=True),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("target", "zone"),
    )
    op.create_index("ix_dnsbl_states_state", "dnsbl_states", ["state"], unique=False)

    op.create_table(
        "dnsbl_zone_health",
        sa.Column("zone", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("zone"),
    )

    op.create_table(
        "signal_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("zone", sa.String(length=255), nullable=True),
        sa.Column("codes", JsonDoc, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("txt", sa.Text(), nullable=True),
        sa.Column("delist_url", sa.String(length=500), nullable=True),
        sa.Column("initial", sa.Boolean(), nullable=False),
        sa.Column("details", JsonDoc, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_signal_events_kind_occurred", "signal_events", ["kind", "occurred_at"], unique=False)
    op.create_index("ix_signal_events_occurred", "signal_events", ["occurred_at"], unique=False)
    op.create_index("ix_signal_events_source_subject_occurred", "signal_events",
                    ["source", "subject", "occurred_at"], unique=False)

    op.create_table(
        "dns_auth_checks",
        sa.Column("id", BigId, nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("spf", JsonDoc, nullable=False),
        sa.Column("dmarc", JsonDoc, nullable=False),
        sa.Column("dkim", JsonDoc, nullable=False),
        sa.Column("mta_sts", JsonDoc, nullable=False),
        sa.Column("tls_rpt", JsonDoc, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dns_auth_checks_domain_checked", "dns_auth_checks", ["domain", "checked_at"], unique=False)

    op.create_table(
        "postmaster_domain_days",
        sa.Column("id", BigId, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("api", sa.String(length=4), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("spam_rate", sa.Float(), nullable=True),
        sa.Column("spam_rate_lower", sa.Float(), nullable=True),
        sa.Column("spam_rate_upper", sa.Float(), nullable=True),
        sa.Column("spf_success_rate", sa.Float(), nullable=True),
        sa.Column("dkim_success_rate", sa.Float(), nullable=True),
        sa.Column("dmarc_success_rate", sa.Float(), nullable=True),
        sa.Column("tls_inbound_rate", sa.Float(), nullable=True),
        sa.Column("tls_outbound_rate", sa.Float(), nullable=True),
        sa.Column("delivery_error_rate", sa.Float(), nullable=True),
        sa.Column("domain_reputation", sa.String(length=16), nullable=True),
        sa.Column("delivery_errors", JsonDoc, nullable=False),
        sa.Column("ip_reputations", JsonDoc, nullable=False),
        sa.Column("feedback_loops", JsonDoc, nullable=False),
        sa.Column("metrics", JsonDoc, nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "api", "domain", "day", name="uq_postmaster_domain_days_key"),
    )
    op.create_index("ix_postmaster_domain_days_domain_day", "postmaster_domain_days", ["domain", "day"], unique=False)

    op.create_table(
        "snds_ip_days",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("activity_start", UTCDateTime(), nullable=False),
        sa.Column("activity_end", UTCDateTime(), nullable=False),
        sa.Column("rcpt_commands", sa.Integer(), nullable=False),
        sa.Column("data_commands", sa.Integer(), nullable=False),
        sa.Column("message_recipients", sa.Integer(), nullable=False),
        sa.Column("filter_result", sa.String(length=8), nullable=False),
        sa.Column("complaint_rate", sa.Float(), nullable=True),
        sa.Column("complaint_rate_text", sa.String(length=32), nullable=False),
        sa.Column("complaint_rate_below", sa.Boolean(), nullable=False),
        sa.Column("trap_hits", sa.Integer(), nullable=False),
        sa.Column("trap_period_start", UTCDateTime(), nullable=True),
        sa.Column("trap_period_end", UTCDateTime(), nullable=True),
        sa.Column("sample_helo", sa.String(length=255), nullable=True),
        sa.Column("sample_mail_from", sa.String(length=320), nullable=True),
        sa.Column("comments", sa.Text(), nullable=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ip", "activity_start", name="uq_snds_ip_days_ip_start"),
    )
    op.create_index("ix_snds_ip_days_ip_day", "snds_ip_days", ["ip", "day"], unique=False)

    op.create_table(
        "snds_ip_status",
        sa.Column("id", BigId, nullable=False),
        sa.Column("first_ip", sa.String(length=64), nullable=False),
        sa.Column("last_ip", sa.String(length=64), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("first_ip", "last_ip", name="uq_snds_ip_status_range"),
    )

    op.create_table(
        "signal_fetch_states",
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("source"),
    )


def downgrade() -> None:
    op.drop_table("signal_fetch_states")
    op.drop_table("snds_ip_status")
    op.drop_index("ix_snds_ip_days_ip_day", table_name="snds_ip_days")
    op.drop_table("snds_ip_days")
    op.drop_index("ix_postmaster_domain_days_domain_day", table_name="postmaster_domain_days")
    op.drop_table("postmaster_domain_days")
    op.drop_index("ix_dns_auth_checks_domain_checked", table_name="dns_auth_checks")
    op.drop_table("dns_auth_checks")
    op.drop_index("ix_signal_events_source_subject_occurred", table_name="signal_events")
    op.drop_index("ix_signal_events_occurred", table_name="signal_events")
    op.drop_index("ix_signal_events_kind_occurred", table_name="signal_events")
    op.drop_table("signal_events")
    op.drop_table("dnsbl_zone_health")
    op.drop_index("ix_dnsbl_states_state", table_name="dnsbl_states")
    op.drop_table("dnsbl_states")
