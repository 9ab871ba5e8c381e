"""The alerts' tables: the alerting state, the notifications and their
deliveries (an outbox, so a restart loses no alert and sends none twice).

Created by the historic revision monitor/health/migrations/0004_health.py
(which made the health, policy and alert tables together); a later change is
a revision of its own branch depending on 0004_health.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, json_field, when_field


class AlertState(SQLModel, table=True):
    """Whether an alert (subject + cause) is firing, and when people last heard of it."""

    __tablename__ = "alert_states"

    key: str = Field(primary_key=True, max_length=400)  # "<subject>|<cause>"
    subject: str = Field(max_length=320)
    cause: str = Field(max_length=200)
    severity: str = Field(max_length=8)
    status: str = Field(max_length=8)  # firing | resolved
    summary: str = Field(sa_type=Text)
    first_fired_at: datetime = when_field()
    last_change_at: datetime = when_field()
    notified_at: datetime | None = when_field(nullable=True)
    notified_severity: str | None = Field(default=None, max_length=8)
    notified_status: str | None = Field(default=None, max_length=8)
    held: int = 0  # notifications not sent because of the cooldown


class AlertNotification(SQLModel, table=True):
    """Something people should hear about; grouped into messages by the dispatcher."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index("ix_alert_notifications_pending", "dispatched_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    key: str = Field(max_length=400)
    subject: str = Field(max_length=320)
    cause: str = Field(max_length=200)
    kind: str = Field(max_length=8)  # firing | resolved | action | ended
    severity: str = Field(max_length=8)
    title: str = Field(sa_type=Text)
    text: str = Field(sa_type=Text)
    details: dict = json_field({})
    created_at: datetime = when_field(default_now=True)
    dispatched_at: datetime | None = when_field(nullable=True)


class AlertDelivery(SQLModel, table=True):
    """One message to one channel (Slack webhook or email route), retried on
    429 / 5xx / network errors, given up on permanent errors."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    channel: str = Field(max_length=100)  # the [[alerts.slack]] / [[alerts.email]] name
    channel_kind: str = Field(max_length=8)  # slack | email
    notification_ids: list = json_field([])
    payload: dict = json_field({})
    status: str = Field(default="pending", max_length=8)  # pending | sent | failed
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = when_field(default_now=True)
    sent_at: datetime | None = when_field(nullable=True)
