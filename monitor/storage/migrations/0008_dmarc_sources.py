"""DMARC aggregate records: where their mail came from (country, AS, service, reverse DNS)

Revision ID: 0008_dmarc_sources
Revises: 0001_core
Written by hand from monitor/storage/models.py (DmarcRecord.source_*); columns only,
nullable, so rows stored before the upgrade keep NULL (not looked up).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId

revision = "0008_dmarc_sources"
down_revision = "0001_core"
branch_labels = ("dmarc_sources",)
depends_on = None

_COLUMNS = (
    ("source_country", sa.String(length=8)),
    ("source_asn", BigId),
    ("source_as_name", sa.String(length=255)),
    ("source_as_domain", sa.String(length=255)),
    ("source_name", sa.String(length=255)),
    ("source_type", sa.String(length=64)),
    ("source_reverse_dns", sa.String(length=255)),
    ("source_base_domain", sa.String(length=255)),
)


def upgrade() -> None:
    with op.batch_alter_table("dmarc_records") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dmarc_records") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
