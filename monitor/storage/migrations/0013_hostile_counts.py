"""DMARC record counts 64-bit; DMARC and TLS reports keyed by content too (issue 14)

Revision ID: 0013_hostile_counts
Revises: 0001_core
Written by hand from monitor/storage/models.py. dmarc_records.count was a 32-bit
INTEGER on PostgreSQL (SQLite's INTEGER is 64-bit already, so there it is a no-op).
A report with another report's org/domain/id but other content is kept beside it
(content_sha256, conflict_of) instead of being hidden by the first one stored.
"""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from monitor.core.dbtypes import BigId

revision = "0013_hostile_counts"
down_revision = "0001_core"
branch_labels = ("hostile_counts",)
depends_on = None

# (table, its child table, old unique constraint, new one, identity columns)
_REPORTS = (
    ("dmarc_reports", "dmarc_records", "uq_dmarc_reports_org_domain_report",
     "uq_dmarc_reports_org_domain_report_content", ["org_name", "domain", "report_id"]),
    ("tls_reports", "tls_policies", "uq_tls_reports_org_report", "uq_tls_reports_org_report_content",
     ["organization_name", "report_id"]),
)


def _keeping_children(table: str, child: str, change: Callable[[], None]) -> None:
    """Run `change` on `table`. On SQLite batch mode recreates the table, and
    dropping the old one deletes its child rows (ON DELETE CASCADE, foreign keys
    on, which a transaction cannot switch off): they are kept aside and put back."""
    if op.get_bind().dialect.name != "sqlite":
        change()
        return
    op.execute(f"CREATE TEMP TABLE _keep_{child} AS SELECT * FROM {child}")
    change()
    op.execute(f"INSERT INTO {child} SELECT * FROM _keep_{child} WHERE id NOT IN (SELECT id FROM {child})")
    op.execute(f"DROP TABLE _keep_{child}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("dmarc_records", "count", type_=sa.BigInteger(), existing_type=sa.Integer(),
                        existing_nullable=False)
    for table, child, old, new, identity in _REPORTS:
        def change(table: str = table, old: str = old, new: str = new, identity: list[str] = identity) -> None:
            with op.batch_alter_table(table) as batch:
                batch.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
                batch.add_column(sa.Column("conflict_of", BigId, nullable=True))
                batch.drop_constraint(old, type_="unique")
                batch.create_unique_constraint(new, [*identity, "content_sha256"])
        _keeping_children(table, child, change)


def downgrade() -> None:
    for table, child, old, new, identity in reversed(_REPORTS):
        def change(table: str = table, old: str = old, new: str = new, identity: list[str] = identity) -> None:
            with op.batch_alter_table(table) as batch:
                batch.drop_constraint(new, type_="unique")
                batch.create_unique_constraint(old, identity)
                batch.drop_column("conflict_of")
                batch.drop_column("content_sha256")
        _keeping_children(table, child, change)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("dmarc_records", "count", type_=sa.Integer(), existing_type=sa.BigInteger(),
                        existing_nullable=False)
