"""Tables of health, policy and alerts.

Health is computed from roll-ups, never by rescanning events: `health_counts`
holds counters per (grain, bucket, scope, key, destination), added to as new
rows appear in the event tables (`health_cursors` remembers how far each
source table has been read). Three grains serve the three windows: 5-minute
buckets (kept 3 hours) for 1 h, hour buckets (kept 8 days) for 24 h, day
buckets for 7 d and for replaying history.

`health_states` is the latest assessment of every subject; `policy_actions`
every action the policy (or an operator through `repmon actions`) took, with
its evidence; `alert_*` the alerting state, the notifications and their
deliveries (an outbox, so a restart loses no alert and sends none twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, JsonDoc, UTCDateTime, utcnow

# Counter columns of health_counts, in one place (roll-up, windows and replay use it).
COUNTERS = (
    "attempts",  # delivery attempts with an SMTP verdict (delivered + deferred + bounced)
    "delivered",
    "deferred",
    "sent",  # delivered + refused with 5xx: the denominator of bounce rates
    "hard_bounces",
    "soft_bounces",
    "blocks",  # bounces for IP / domain reputation (blocked, badreputation, requireptr)
    "hostunknown",  # recipient domain does not exist / has no mail server
    "complaints",
    "dmarc_messages",  # DMARC aggregate reports: messages seen by receivers
    "dmarc_pass",
    "dkim_pass",
    "spf_pass",
)


def _counter() -> Any:
    return Field(default=0, sa_type=BigId, nullable=False)


def _json(default: Any) -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default))
    return Field(default_factory=factory, sa_column=Column(JsonDoc, nullable=False))


def _when(nullable: bool = False, default_now: bool = False) -> Any:
    if default_now:
        return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=nullable)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable)


class HealthCount(SQLModel, table=True):
    """Counters of one subject key in one time bucket.

    scope: "ip" (key = sending IP), "domain" (sending domain) or "rdomain"
    (recipient domain, day grain only). destination: the sender's lane
    destination ("google", "relay", ...) the counts belong to, or "" where
    the source says nothing about it (DMARC reports). An ip row with a
    destination is a lane.
    """

    __tablename__ = "health_counts"
    __table_args__ = (Index("ix_health_counts_subject", "scope", "key", "grain", "bucket"),)

    grain: str = Field(primary_key=True, max_length=4)  # 5m | 1h | 1d
    bucket: int = Field(primary_key=True, sa_type=BigId)  # epoch seconds of the bucket start
    scope: str = Field(primary_key=True, max_length=8)
    key: str = Field(primary_key=True, max_length=255)
    destination: str = Field(primary_key=True, max_length=255)
    attempts: int = _counter()
    delivered: int = _counter()
    deferred: int = _counter()
    sent: int = _counter()
    hard_bounces: int = _counter()
    soft_bounces: int = _counter()
    blocks: int = _counter()
    hostunknown: int = _counter()
    complaints: int = _counter()
    dmarc_messages: int = _counter()
    dmarc_pass: int = _counter()
    dkim_pass: int = _counter()
    spf_pass: int = _counter()


class HealthCursor(SQLModel, table=True):
    """How far the roll-up has read one source table (by id).

    `gaps` are ids below `last_id` not seen yet: on PostgreSQL a transaction
    that took a lower id can commit after a higher one, so a missing id is
    looked for again until `gap_timeout` says it was rolled back.
    """

    __tablename__ = "health_cursors"

    source: str = Field(primary_key=True, max_length=32)
    last_id: int = Field(default=0, sa_type=BigId)
    gaps: list = _json([])  # [[id, first_missed_epoch], ...]
    updated_at: float = 0.0


class HealthRoute(SQLModel, table=True):
    """Which lane destination a recipient domain's mail goes to, as the
    sender's delivery log shows it. Events name recipients, not lanes: this is
    how a complaint from a Yahoo user lands on the IP's yahoo lane."""

    __tablename__ = "health_routes"

    recipient_domain: str = Field(primary_key=True, max_length=255)
    destination: str = Field(max_length=255)
    seen_at: float = 0.0


class HealthState(SQLModel, table=True):
    """The latest assessment of one subject (ip:ADDR, domain:NAME, lane:ADDR/DEST)."""

    __tablename__ = "health_states"
    __table_args__ = (Index("ix_health_states_state", "state"),)

    subject: str = Field(primary_key=True, max_length=320)
    kind: str = Field(max_length=8)
    state: str = Field(max_length=8)  # healthy | warning | critical | blocked
    score: int
    reasons: list = _json([])
    findings: list = _json([])  # structured reasons: cause, severity, metric, value, window, ...
    figures: dict = _json({})  # the subject's figures per window
    evaluated_at: datetime = _when(default_now=True)
    changed_at: datetime = _when(default_now=True)


class PolicyAction(SQLModel, table=True):
    """One action on a subject: what, why (rule + evidence), from when to when.

    pause / slow / ramp reach the sender as rows of its lane directive table
    (`directive_ids`); suppress as suppression rows (source "policy:<id>");
    alert only as an alert. Ended by expiry, by the condition clearing, or by
    an operator (`repmon actions cancel`), which `end_reason` says.
    """

    __tablename__ = "policy_actions"
    __table_args__ = (
        Index("ix_policy_actions_active", "ended_at"),
        Index("ix_policy_actions_subject_rule", "subject", "rule"),
        Index("ix_policy_actions_started", "started_at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True, sa_type=BigId)
    subject: str = Field(max_length=320)
    action: str = Field(max_length=10)  # pause | slow | ramp | suppress | alert
    rule: str = Field(max_length=100)
    created_by: str = Field(default="policy", max_length=100)  # policy | operator:<name>
    evidence: list = _json([])  # the reasons that made the rule fire
    params: dict = _json({})  # rate, scope, zone, destinations, evidence counts, ramp step...
    source_ip: Optional[str] = Field(default=None, max_length=64)
    destinations: list = _json([])  # lane destinations it covers ("*" = all)
    target: Optional[str] = Field(default=None, max_length=320)  # suppress: recipient or @domain
    directive_ids: list = _json([])
    until: str = Field(default="clear", max_length=8)  # clear | expiry | manual
    started_at: datetime = _when()
    expires_at: Optional[datetime] = _when(nullable=True)
    ended_at: Optional[datetime] = _when(nullable=True)
    end_reason: Optional[str] = Field(default=None, sa_type=Text)


class AlertState(SQLModel, table=True):
    """Whether an alert (subject + cause) is firing, and when people last heard of it."""

    __tablename__ = "alert_states"

    key: str = Field(primary_key=True, max_length=400)  # "<subject>|<cause>"
    subject: str = Field(max_length=320)
    cause: str = Field(max_length=200)
    severity: str = Field(max_length=8)
    status: str = Field(max_length=8)  # firing | resolved
    summary: str = Field(sa_type=Text)
    first_fired_at: datetime = _when()
    last_change_at: datetime = _when()
    notified_at: Optional[datetime] = _when(nullable=True)
    notified_severity: Optional[str] = Field(default=None, max_length=8)
    notified_status: Optional[str] = Field(default=None, max_length=8)
    held: int = 0  # notifications not sent because of the cooldown


class AlertNotification(SQLModel, table=True):
    """Something people should hear about; grouped into messages by the dispatcher."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index("ix_alert_notifications_pending", "dispatched_at"),)

    id: Optional[int] = Field(default=None, primary_key=True, sa_type=BigId)
    key: str = Field(max_length=400)
    subject: str = Field(max_length=320)
    cause: str = Field(max_length=200)
    kind: str = Field(max_length=8)  # firing | resolved | action | ended
    severity: str = Field(max_length=8)
    title: str = Field(sa_type=Text)
    text: str = Field(sa_type=Text)
    details: dict = _json({})
    created_at: datetime = _when(default_now=True)
    dispatched_at: Optional[datetime] = _when(nullable=True)


class AlertDelivery(SQLModel, table=True):
    """One message to one channel (Slack webhook or email route), retried on
    429 / 5xx / network errors, given up on permanent errors."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    id: Optional[int] = Field(default=None, primary_key=True, sa_type=BigId)
    channel: str = Field(max_length=100)  # the [[alerts.slack]] / [[alerts.email]] name
    channel_kind: str = Field(max_length=8)  # slack | email
    notification_ids: list = _json([])
    payload: dict = _json({})
    status: str = Field(default="pending", max_length=8)  # pending | sent | failed
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: Optional[str] = Field(default=None, sa_type=Text)
    created_at: datetime = _when(default_now=True)
    sent_at: Optional[datetime] = _when(nullable=True)
