"""core tables: ledger, events, reports, checkpoints, quarantine, suppressions

Revision ID: 0001_core
Revises:
Hand-checked autogenerate output; the schema test compares it with the models.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime

revision = '0001_core'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('folder_files',
    sa.Column('id', BigId, nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('size', BigId, nullable=False),
    sa.Column('mtime_ns', BigId, nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('seen_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'path', name='uq_folder_files_source_path')
    )
    op.create_table('message_failures',
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('folder', sa.String(length=255), nullable=True),
    sa.Column('uid', BigId, nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('first_failed_at', UTCDateTime(), nullable=False),
    sa.Column('last_failed_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('content_sha256')
    )
    op.create_table('pending_moves',
    sa.Column('id', BigId, nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('folder', sa.String(length=255), nullable=False),
    sa.Column('uidvalidity', BigId, nullable=False),
    sa.Column('uid', BigId, nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'folder', 'uidvalidity', 'uid', name='uq_pending_moves_message')
    )
    op.create_table('processed_messages',
    sa.Column('id', BigId, nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('folder', sa.String(length=255), nullable=True),
    sa.Column('uidvalidity', BigId, nullable=True),
    sa.Column('uid', BigId, nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('header_message_id', sa.Text(), nullable=True),
    sa.Column('header_date', UTCDateTime(), nullable=True),
    sa.Column('processed_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_sha256')
    )
    op.create_index('ix_processed_messages_processed_at', 'processed_messages', ['processed_at'], unique=False)

    op.create_table('quarantined_messages',
    sa.Column('id', BigId, nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('folder', sa.String(length=255), nullable=True),
    sa.Column('uid', BigId, nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=True),
    sa.Column('location', sa.Text(), nullable=True),
    sa.Column('header_message_id', sa.Text(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('quarantined_at', UTCDateTime(), nullable=False),
    sa.Column('released_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_sha256')
    )
    op.create_index('ix_quarantined_messages_quarantined_at', 'quarantined_messages', ['quarantined_at'], unique=False)

    op.create_table('source_checkpoints',
    sa.Column('id', BigId, nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('folder', sa.String(length=255), nullable=False),
    sa.Column('uidvalidity', BigId, nullable=False),
    sa.Column('last_uid', BigId, nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'folder', name='uq_source_checkpoints_source_folder')
    )
    op.create_table('dmarc_failures',
    sa.Column('id', BigId, nullable=False),
    sa.Column('message_id', BigId, nullable=True),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('stored_at', UTCDateTime(), nullable=False),
    sa.Column('arrival_date', UTCDateTime(), nullable=True),
    sa.Column('reported_domain', sa.String(length=255), nullable=True),
    sa.Column('source_ip', sa.String(length=45), nullable=True),
    sa.Column('feedback_type', sa.String(length=32), nullable=True),
    sa.Column('auth_failure', sa.String(length=64), nullable=True),
    sa.Column('original_mail_from', sa.String(length=320), nullable=True),
    sa.Column('original_rcpt_to', sa.String(length=320), nullable=True),
    sa.Column('delivery_result', sa.String(length=32), nullable=True),
    sa.Column('dkim_domain', sa.String(length=255), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['processed_messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_dmarc_failures_domain_occurred', 'dmarc_failures', ['reported_domain', 'occurred_at'],
                    unique=False)
    op.create_index('ix_dmarc_failures_message', 'dmarc_failures', ['message_id'], unique=False)
    op.create_index('ix_dmarc_failures_source_ip_occurred', 'dmarc_failures', ['source_ip', 'occurred_at'],
                    unique=False)

    op.create_table('dmarc_reports',
    sa.Column('id', BigId, nullable=False),
    sa.Column('message_id', BigId, nullable=True),
    sa.Column('report_id', sa.String(length=255), nullable=False),
    sa.Column('org_name', sa.String(length=255), nullable=False),
    sa.Column('org_email', sa.String(length=320), nullable=True),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('policy', sa.String(length=16), nullable=True),
    sa.Column('subdomain_policy', sa.String(length=16), nullable=True),
    sa.Column('adkim', sa.String(length=4), nullable=True),
    sa.Column('aspf', sa.String(length=4), nullable=True),
    sa.Column('pct', sa.Integer(), nullable=True),
    sa.Column('begin', UTCDateTime(), nullable=False),
    sa.Column('end', UTCDateTime(), nullable=False),
    sa.Column('errors', JsonDoc, nullable=True),
    sa.Column('stored_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['processed_messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_name', 'domain', 'report_id', name='uq_dmarc_reports_org_domain_report')
    )
    op.create_index('ix_dmarc_reports_domain_begin', 'dmarc_reports', ['domain', 'begin'], unique=False)

    op.create_table('events',
    sa.Column('id', BigId, nullable=False),
    sa.Column('message_id', BigId, nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('occurred_at', UTCDateTime(), nullable=False),
    sa.Column('stored_at', UTCDateTime(), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=True),
    sa.Column('recipient_domain', sa.String(length=255), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('hard_or_soft', sa.String(length=8), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('reply_code', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=True),
    sa.Column('remote_mta', sa.String(length=255), nullable=True),
    sa.Column('smtp_agent', sa.String(length=64), nullable=True),
    sa.Column('feedback_type', sa.String(length=32), nullable=True),
    sa.Column('is_complaint', sa.Boolean(), nullable=False),
    sa.Column('original_message_id', sa.Text(), nullable=True),
    sa.Column('original_mail_from', sa.String(length=320), nullable=True),
    sa.Column('reported_domain', sa.String(length=255), nullable=True),
    sa.Column('source_ip', sa.String(length=45), nullable=True),
    sa.Column('tracking_message_id', sa.String(length=255), nullable=True),
    sa.Column('tracking_source_ip', sa.String(length=45), nullable=True),
    sa.Column('campaign', sa.String(length=255), nullable=True),
    sa.Column('sending_ip', sa.String(length=45), nullable=True),
    sa.Column('sending_domain', sa.String(length=255), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('details', JsonDoc, nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['processed_messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_campaign_occurred', 'events', ['campaign', 'occurred_at'], unique=False)
    op.create_index('ix_events_kind_occurred', 'events', ['kind', 'occurred_at'], unique=False)
    op.create_index('ix_events_message', 'events', ['message_id'], unique=False)
    op.create_index('ix_events_occurred_at', 'events', ['occurred_at'], unique=False)
    op.create_index('ix_events_recipient', 'events', ['recipient'], unique=False)
    op.create_index('ix_events_recipient_domain_occurred', 'events', ['recipient_domain', 'occurred_at'], unique=False)
    op.create_index('ix_events_sending_domain_occurred', 'events', ['sending_domain', 'occurred_at'], unique=False)
    op.create_index('ix_events_sending_ip_occurred', 'events', ['sending_ip', 'occurred_at'], unique=False)

    op.create_table('tls_reports',
    sa.Column('id', BigId, nullable=False),
    sa.Column('message_id', BigId, nullable=True),
    sa.Column('report_id', sa.String(length=255), nullable=False),
    sa.Column('organization_name', sa.String(length=255), nullable=False),
    sa.Column('contact_info', sa.String(length=320), nullable=True),
    sa.Column('begin', UTCDateTime(), nullable=True),
    sa.Column('end', UTCDateTime(), nullable=True),
    sa.Column('stored_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['processed_messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('organization_name', 'report_id', name='uq_tls_reports_org_report')
    )
    op.create_index('ix_tls_reports_begin', 'tls_reports', ['begin'], unique=False)

    op.create_table('dmarc_records',
    sa.Column('id', BigId, nullable=False),
    sa.Column('report_pk', BigId, nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('begin', UTCDateTime(), nullable=False),
    sa.Column('end', UTCDateTime(), nullable=False),
    sa.Column('source_ip', sa.String(length=45), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('disposition', sa.String(length=16), nullable=True),
    sa.Column('dkim', sa.String(length=16), nullable=True),
    sa.Column('spf', sa.String(length=16), nullable=True),
    sa.Column('header_from', sa.String(length=255), nullable=True),
    sa.Column('envelope_from', sa.String(length=255), nullable=True),
    sa.Column('dkim_results', JsonDoc, nullable=True),
    sa.Column('spf_results', JsonDoc, nullable=True),
    sa.ForeignKeyConstraint(['report_pk'], ['dmarc_reports.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_dmarc_records_domain_begin', 'dmarc_records', ['domain', 'begin'], unique=False)
    op.create_index('ix_dmarc_records_report', 'dmarc_records', ['report_pk'], unique=False)
    op.create_index('ix_dmarc_records_source_ip_begin', 'dmarc_records', ['source_ip', 'begin'], unique=False)

    op.create_table('suppressions',
    sa.Column('id', BigId, nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.String(length=255), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('source_event_id', BigId, nullable=True),
    sa.Column('first_seen_at', UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', UTCDateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['source_event_id'], ['events.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address')
    )
    op.create_index('ix_suppressions_domain', 'suppressions', ['domain'], unique=False)
    op.create_index('ix_suppressions_expires_at', 'suppressions', ['expires_at'], unique=False)

    op.create_table('tls_policies',
    sa.Column('id', BigId, nullable=False),
    sa.Column('report_pk', BigId, nullable=False),
    sa.Column('policy_domain', sa.String(length=255), nullable=False),
    sa.Column('policy_type', sa.String(length=16), nullable=True),
    sa.Column('successful_session_count', BigId, nullable=False),
    sa.Column('failed_session_count', BigId, nullable=False),
    sa.Column('failure_details', JsonDoc, nullable=True),
    sa.ForeignKeyConstraint(['report_pk'], ['tls_reports.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_tls_policies_domain', 'tls_policies', ['policy_domain'], unique=False)
    op.create_index('ix_tls_policies_report', 'tls_policies', ['report_pk'], unique=False)



def downgrade() -> None:
    op.drop_index('ix_tls_policies_report', table_name='tls_policies')
    op.drop_index('ix_tls_policies_domain', table_name='tls_policies')

    op.drop_table('tls_policies')
    op.drop_index('ix_suppressions_expires_at', table_name='suppressions')
    op.drop_index('ix_suppressions_domain', table_name='suppressions')

    op.drop_table('suppressions')
    op.drop_index('ix_dmarc_records_source_ip_begin', table_name='dmarc_records')
    op.drop_index('ix_dmarc_records_report', table_name='dmarc_records')
    op.drop_index('ix_dmarc_records_domain_begin', table_name='dmarc_records')

    op.drop_table('dmarc_records')
    op.drop_index('ix_tls_reports_begin', table_name='tls_reports')

    op.drop_table('tls_reports')
    op.drop_index('ix_events_sending_ip_occurred', table_name='events')
    op.drop_index('ix_events_sending_domain_occurred', table_name='events')
    op.drop_index('ix_events_recipient_domain_occurred', table_name='events')
    op.drop_index('ix_events_recipient', table_name='events')
    op.drop_index('ix_events_occurred_at', table_name='events')
    op.drop_index('ix_events_message', table_name='events')
    op.drop_index('ix_events_kind_occurred', table_name='events')
    op.drop_index('ix_events_campaign_occurred', table_name='events')

    op.drop_table('events')
    op.drop_index('ix_dmarc_reports_domain_begin', table_name='dmarc_reports')

    op.drop_table('dmarc_reports')
    op.drop_index('ix_dmarc_failures_source_ip_occurred', table_name='dmarc_failures')
    op.drop_index('ix_dmarc_failures_message', table_name='dmarc_failures')
    op.drop_index('ix_dmarc_failures_domain_occurred', table_name='dmarc_failures')

    op.drop_table('dmarc_failures')
    op.drop_table('source_checkpoints')
    op.drop_index('ix_quarantined_messages_quarantined_at', table_name='quarantined_messages')

    op.drop_table('quarantined_messages')
    op.drop_index('ix_processed_messages_processed_at', table_name='processed_messages')

    op.drop_table('processed_messages')
    op.drop_table('pending_moves')
    op.drop_table('message_failures')
    op.drop_table('folder_files')
