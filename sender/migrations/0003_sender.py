"""sender tables: durable queue, message content, lanes, lane directives and actions, warm-up, delivery log

Revision ID: 0003_sender
Revises: 0001_core
Hand-checked autogenerate output; tests/test_sender_schema.py compares it with sender/models.py.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId

revision = "0003_sender"
down_revision = "0001_core"
branch_labels = ("sender",)
depends_on = None


def upgrade() -> None:
    op.create_table('sender_control',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', BigId, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('sender_delivery_log',
    sa.Column('id', BigId, nullable=False),
    sa.Column('message_ref', BigId, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('lane', sa.String(length=300), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('reply_code', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=True),
    sa.Column('reply', sa.String(), nullable=True),
    sa.Column('reason', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sender_delivery_log_message', 'sender_delivery_log', ['message_ref'], unique=False)
    op.create_table('sender_lane',
    sa.Column('lane', sa.String(length=300), nullable=False),
    sa.Column('source_ip', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('delivered_today', sa.Integer(), nullable=False),
    sa.Column('deferred_today', sa.Integer(), nullable=False),
    sa.Column('bounced_today', sa.Integer(), nullable=False),
    sa.Column('delivered_total', BigId, nullable=False),
    sa.Column('last_reply', sa.String(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('lane')
    )
    op.create_table('sender_lane_action',
    sa.Column('id', BigId, nullable=False),
    sa.Column('source_ip', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('rate', sa.Float(), nullable=True),
    sa.Column('connections', sa.Integer(), nullable=True),
    sa.Column('deliveries_per_connection', sa.Integer(), nullable=True),
    sa.Column('rule', sa.String(length=200), nullable=False),
    sa.Column('pattern', sa.String(length=1000), nullable=False),
    sa.Column('response', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('end_reason', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sender_lane_action_active', 'sender_lane_action', ['ended_at'], unique=False)
    op.create_table('sender_lane_directive',
    sa.Column('id', BigId, nullable=False),
    sa.Column('source_ip', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('rate', sa.Float(), nullable=True),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('end_reason', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sender_lane_directive_active', 'sender_lane_directive', ['ended_at'], unique=False)
    op.create_table('sender_message',
    sa.Column('id', BigId, nullable=False),
    sa.Column('campaign', sa.String(length=200), nullable=False),
    sa.Column('pool', sa.String(length=100), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('mail_from', sa.String(length=320), nullable=False),
    sa.Column('message_id', sa.String(length=400), nullable=False),
    sa.Column('body_hash', sa.String(length=100), nullable=True),
    sa.Column('eight_bit', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('lane', sa.String(length=300), nullable=False),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('last_reply', sa.String(), nullable=True),
    sa.Column('reason', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_sender_message_claim', 'sender_message', ['state', 'lane', 'next_attempt_at'], unique=False)
    op.create_table('sender_message_content',
    sa.Column('message_ref', BigId, autoincrement=False, nullable=False),
    sa.Column('headers', sa.LargeBinary(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('message_ref')
    )
    op.create_table('sender_warmup',
    sa.Column('source_ip', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('day_index', sa.Integer(), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('routed_today', sa.Integer(), nullable=False),
    sa.Column('delivered_today', sa.Integer(), nullable=False),
    sa.Column('deferred_today', sa.Integer(), nullable=False),
    sa.Column('started_on', sa.String(length=10), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('source_ip', 'destination')
    )
    # The control row running senders poll for changes.
    op.execute("INSERT INTO sender_control (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table('sender_warmup')
    op.drop_table('sender_message_content')
    op.drop_index('ix_sender_message_claim', table_name='sender_message')
    op.drop_table('sender_message')
    op.drop_index('ix_sender_lane_directive_active', table_name='sender_lane_directive')
    op.drop_table('sender_lane_directive')
    op.drop_index('ix_sender_lane_action_active', table_name='sender_lane_action')
    op.drop_table('sender_lane_action')
    op.drop_table('sender_lane')
    op.drop_index('ix_sender_delivery_log_message', table_name='sender_delivery_log')
    op.drop_table('sender_delivery_log')
    op.drop_table('sender_control')
