"""The sender's tables: the durable queue, lanes with their counters, lane
directives (set by operators or the policy engine), lane actions (set by the
response rules), warm-up state and the delivery log.

Times are epoch seconds (UTC) in float columns: the queue's hot predicates
(`next_attempt_at <= now`, lease expiry) are then plain number comparisons on
both SQLite and PostgreSQL, with no time-zone conversion per row.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId

# Message states. A message is `queued` (lane '' until routed), `inflight`
# while one sender holds its lease, then ends delivered / bounced / expired
# (the retries ran out) / suppressed (the address was on the list at enqueue
# or at delivery).
QUEUED = "queued"
INFLIGHT = "inflight"
DELIVERED = "delivered"
BOUNCED = "bounced"
EXPIRED = "expired"
SUPPRESSED = "suppressed"
FINAL_STATES = (DELIVERED, BOUNCED, EXPIRED, SUPPRESSED)


class SenderMessage(SQLModel, table=True):
    __tablename__ = "sender_message"
    __table_args__ = (
        # The claim query: due messages of one lane, oldest first.
        Index("ix_sender_message_claim", "state", "lane", "next_attempt_at"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    campaign: str = Field(max_length=200)
    pool: str = Field(max_length=100)
    recipient: str = Field(max_length=320)
    domain: str = Field(max_length=255)
    mail_from: str = Field(max_length=320)  # envelope sender before VERP
    message_id: str = Field(max_length=400)  # the Message-ID header, without <>
    body_hash: str | None = Field(default=None, max_length=100)  # DKIM bh= (relaxed, sha256)
    eight_bit: bool = False
    state: str = Field(default=QUEUED, max_length=20)
    lane: str = Field(default="", max_length=300)  # "source_ip|destination"; '' until routed
    source_ip: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    created_at: float
    next_attempt_at: float
    updated_at: float
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: float | None = None
    last_reply: str | None = None
    reason: str | None = Field(default=None, max_length=40)


class SenderMessageContent(SQLModel, table=True):
    """The message itself, apart from its queue row: state changes then
    rewrite a small row, not kilobytes of content (SQLite rewrites a whole
    record on every UPDATE). Deleted when the message is done."""

    __tablename__ = "sender_message_content"

    message_ref: int = Field(sa_column=Column(BigId, primary_key=True, autoincrement=False))
    # Personalised header block (CRLF lines, unstuffed) and the body in wire
    # form (CRLF, dot-stuffed): delivery adds only the tracking and DKIM lines.
    headers: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SenderLane(SQLModel, table=True):
    """Every lane the sender has used, with today's counters (UTC day)."""

    __tablename__ = "sender_lane"

    lane: str = Field(primary_key=True, max_length=300)
    source_ip: str = Field(max_length=64)
    destination: str = Field(max_length=255)  # provider name, "relay", or "mx:<host>"
    day: str = Field(max_length=10)  # YYYY-MM-DD the counters belong to
    delivered_today: int = 0
    deferred_today: int = 0
    bounced_today: int = 0
    delivered_total: int = Field(default=0, sa_type=BigId)
    last_reply: str | None = None
    updated_at: float


class SenderLaneDirective(SQLModel, table=True):
    """pause / slow / resume set by an operator (`repmon lanes`) or the policy
    engine. `source_ip` and `destination` may be '*' (every IP / provider)."""

    __tablename__ = "sender_lane_directive"
    __table_args__ = (Index("ix_sender_lane_directive_active", "ended_at"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    source_ip: str = Field(max_length=64)
    destination: str = Field(max_length=255)
    kind: str = Field(max_length=10)  # pause | slow | resume
    rate: float | None = None  # messages/s for slow
    reason: str = Field(default="", max_length=1000)
    created_by: str = Field(default="operator", max_length=100)
    created_at: float
    expires_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = Field(default=None, max_length=100)


class SenderLaneAction(SQLModel, table=True):
    """What a response rule did to a lane, with the rule and the response that
    triggered it. Ends when it expires, or when an operator resumes the lane."""

    __tablename__ = "sender_lane_action"
    __table_args__ = (Index("ix_sender_lane_action_active", "ended_at"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    source_ip: str = Field(max_length=64)
    destination: str = Field(max_length=255)  # '*' for IP-wide actions
    action: str = Field(max_length=10)  # suspend | slow | halt
    rate: float | None = None
    connections: int | None = None
    deliveries_per_connection: int | None = None
    rule: str = Field(max_length=200)
    pattern: str = Field(default="", max_length=1000)
    response: str = Field(default="", max_length=2000)
    created_at: float
    expires_at: float | None = None  # None for halt: until an operator clears it
    ended_at: float | None = None
    end_reason: str | None = Field(default=None, max_length=100)


class SenderControl(SQLModel, table=True):
    """One row whose version goes up whenever directives or actions change, so
    running senders notice with one cheap read."""

    __tablename__ = "sender_control"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_type=BigId)


class SenderWarmup(SQLModel, table=True):
    """Warm-up progress of one (source IP, provider)."""

    __tablename__ = "sender_warmup"

    source_ip: str = Field(primary_key=True, max_length=64)
    destination: str = Field(primary_key=True, max_length=255)
    day_index: int = 0  # position in the schedule; past its end: warm
    day: str = Field(max_length=10)  # UTC day the counters belong to
    routed_today: int = 0
    delivered_today: int = 0
    deferred_today: int = 0
    started_on: str = Field(max_length=10)
    updated_at: float


class SenderDeliveryLog(SQLModel, table=True):
    """One row per delivery attempt outcome (and per suppression at delivery)."""

    __tablename__ = "sender_delivery_log"
    __table_args__ = (Index("ix_sender_delivery_log_message", "message_ref"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    message_ref: int = Field(sa_type=BigId)
    at: float
    lane: str = Field(max_length=300)
    recipient: str = Field(max_length=320)
    outcome: str = Field(max_length=20)  # delivered | deferred | bounced | expired | suppressed
    attempt: int = 0
    reply_code: int | None = None
    status: str | None = Field(default=None, max_length=20)
    reply: str | None = None
    reason: str | None = Field(default=None, max_length=40)
