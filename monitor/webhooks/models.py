"""Tables of the webhooks part (its one writer is this part).

- `webhook_outbox`: one row per (webhook, thing to tell), the exact JSON body
  to POST, written in the same transaction that advances the cursor, so a
  crash neither loses nor repeats an enqueue. Delivered in id order per
  webhook; a failed head row blocks the rows behind it (order is kept) and is
  retried with back-off. Delivered rows are purged after a while.
- `webhook_cursors`: per webhook and source (events, suppressions, removals,
  actions) the highest id enqueued, and ids below it not seen yet (gaps:
  PostgreSQL can commit a lower id after a higher one).
- `webhook_state`: per webhook the delivery lease (one node delivers) and
  totals for `repmon webhooks status`.

Created by monitor/webhooks/migrations/0012_webhooks.py (branch "webhooks").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, JsonDoc, when_field


class WebhookOutbox(SQLModel, table=True):
    __tablename__ = "webhook_outbox"
    __table_args__ = (
        UniqueConstraint("webhook", "source", "source_id", name="uq_webhook_outbox_item"),
        Index("ix_webhook_outbox_pending", "webhook", "delivered_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    webhook: str = Field(max_length=100)
    event_type: str = Field(max_length=32)
    source: str = Field(max_length=16)  # events | suppressions | removals | actions
    source_id: int = Field(sa_type=BigId)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = when_field(default_now=True)
    attempts: int = 0
    next_attempt_at: datetime = when_field(default_now=True)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = when_field(nullable=True)


class WebhookCursor(SQLModel, table=True):
    __tablename__ = "webhook_cursors"

    webhook: str = Field(primary_key=True, max_length=100)
    source: str = Field(primary_key=True, max_length=16)
    last_id: int = Field(default=0, sa_type=BigId)
    gaps: list = Field(default_factory=list, sa_column=Column(JsonDoc, nullable=False))  # [[id, first_missed_epoch]]
    updated_at: datetime = when_field(default_now=True)


class WebhookState(SQLModel, table=True):
    __tablename__ = "webhook_state"

    webhook: str = Field(primary_key=True, max_length=100)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_until: float = 0.0
    delivered_total: int = Field(default=0, sa_type=BigId)
    failed_total: int = Field(default=0, sa_type=BigId)
    last_success_at: datetime | None = when_field(nullable=True)
    last_failure_at: datetime | None = when_field(nullable=True)
    last_error: str | None = Field(default=None, max_length=500)
