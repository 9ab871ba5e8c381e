"""Tables of health: roll-up counters, cursors, routes and states.

Health is computed from roll-ups, never by rescanning events: `health_counts`
holds counters per (grain, bucket, scope, key, destination), added to as new
rows appear in the event tables (`health_cursors` remembers how far each
source table has been read). Three grains serve the three windows: 5-minute
buckets (kept 3 hours) for 1 h, hour buckets (kept 8 days) for 24 h, day
buckets for 7 d and for replaying history.

`health_states` is the latest assessment of every subject.

The policy's table lives in monitor/policy/models.py, the alerts' ones in
monitor/alerts/models.py. All three parts' tables were created by one historic
Alembic revision, monitor/health/migrations/0004_health.py; it stays where it
is (databases have it applied). A later change to a policy or alert table is
a revision of that part's own branch, depending on 0004_health.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, json_field, when_field

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
    gaps: list = json_field([])  # [[id, first_missed_epoch], ...]
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
    reasons: list = json_field([])
    findings: list = json_field([])  # structured reasons: cause, severity, metric, value, window, ...
    figures: dict = json_field({})  # the subject's figures per window
    evaluated_at: datetime = when_field(default_now=True)
    changed_at: datetime = when_field(default_now=True)
