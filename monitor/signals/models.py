"""Tables of the reputation signals: blocklist states and zone health, DNS
authentication checks, postmaster figures, fetch states, and the events that
record every change.

Current states (one row per key, updated in place) are kept apart from the
append-only `signal_events`, which is what alerts and dashboards read. Times
are aware UTC datetimes; postmaster figures are per calendar day (UTC) as the
providers publish them.
"""

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import UTCDateTime, id_field, json_field, when_field


def _text(nullable: bool = True) -> Any:
    return Field(default=None if nullable else "", sa_column=Column(Text, nullable=nullable))


# --- blocklists ------------------------------------------------------------------------

class DnsblState(SQLModel, table=True):
    """The current state of one (target, zone): clean, listed or unknown."""

    __tablename__ = "dnsbl_states"

    target: str = Field(primary_key=True, max_length=255)  # IP or domain
    zone: str = Field(primary_key=True, max_length=255)  # display name, never a DQS key
    target_kind: str = Field(default="ip", max_length=8)
    state: str = Field(default="unknown", max_length=8)
    codes: list = json_field([])
    reason: str = _text(nullable=False)
    txt: str | None = _text()
    delist_url: str | None = Field(default=None, max_length=500)
    error_streak: int = 0
    last_error: str = _text(nullable=False)
    last_known: str = Field(default="unknown", max_length=8)
    changed_at: datetime | None = when_field(nullable=True)
    checked_at: datetime | None = when_field(nullable=True)

    __table_args__ = (Index("ix_dnsbl_states_state", "state"),)


class DnsblZoneHealth(SQLModel, table=True):
    """What the RFC 5782 test points said about a zone at the last cycle."""

    __tablename__ = "dnsbl_zone_health"

    zone: str = Field(primary_key=True, max_length=255)
    status: str = Field(max_length=8)  # ok | broken | dead | error
    detail: str = _text(nullable=False)
    checked_at: datetime = when_field(default_now=True)
    changed_at: datetime = when_field(default_now=True)


# --- events ------------------------------------------------------------------------------

class SignalEvent(SQLModel, table=True):
    """One change in an outside signal: a listing, a delisting, a state going
    unknown, a broken zone, an authentication regression, a postmaster fetch
    failing or a figure crossing a line. Append-only."""

    __tablename__ = "signal_events"

    id: int | None = id_field()
    occurred_at: datetime = when_field(default_now=True)
    source: str = Field(max_length=16)  # dnsbl | dnsbl_zone | dns_auth | postmaster
    kind: str = Field(max_length=40)  # listed, delisted, unknown, zone_broken, spf_ip_not_covered, ...
    subject: str = Field(max_length=255)  # the IP, domain, zone or feed it is about
    zone: str | None = Field(default=None, max_length=255)
    codes: list = json_field([])
    reason: str = _text(nullable=False)
    txt: str | None = _text()
    delist_url: str | None = Field(default=None, max_length=500)
    initial: bool = False  # first thing ever known about the subject (alerting may skip it)
    details: dict = json_field()

    __table_args__ = (
        Index("ix_signal_events_source_subject_occurred", "source", "subject", "occurred_at"),
        Index("ix_signal_events_kind_occurred", "kind", "occurred_at"),
        Index("ix_signal_events_occurred", "occurred_at"),
    )


# --- DNS authentication --------------------------------------------------------------

class DnsAuthCheck(SQLModel, table=True):
    """One check of a sending domain's SPF, DMARC, DKIM, MTA-STS and TLS-RPT.

    Each component is a JSON snapshot with a `status` of ok | invalid |
    missing | error; `error` means we could not find out (resolver trouble),
    which is never compared against as if it were a result.
    """

    __tablename__ = "dns_auth_checks"

    id: int | None = id_field()
    domain: str = Field(max_length=255)
    checked_at: datetime = when_field(default_now=True)
    status: str = Field(max_length=8)  # ok | partial | error
    error: str | None = _text()
    spf: dict = json_field()
    dmarc: dict = json_field()
    dkim: dict = json_field()
    mta_sts: dict = json_field()
    tls_rpt: dict = json_field()

    __table_args__ = (Index("ix_dns_auth_checks_domain_checked", "domain", "checked_at"),)


# --- postmaster data --------------------------------------------------------------------

class PostmasterDomainDay(SQLModel, table=True):
    """Google Postmaster Tools figures for one domain and day (fractions 0..1)."""

    __tablename__ = "postmaster_domain_days"

    id: int | None = id_field()
    provider: str = Field(default="google", max_length=16)
    api: str = Field(max_length=4)  # v1 | v2
    domain: str = Field(max_length=255)
    day: date
    spam_rate: float | None = None
    spam_rate_lower: float | None = None  # v1 only: confidence interval
    spam_rate_upper: float | None = None
    spf_success_rate: float | None = None
    dkim_success_rate: float | None = None
    dmarc_success_rate: float | None = None
    tls_inbound_rate: float | None = None
    tls_outbound_rate: float | None = None
    delivery_error_rate: float | None = None  # all delivery errors (v2: rejects + temp fails)
    domain_reputation: str | None = Field(default=None, max_length=16)  # v1 only
    delivery_errors: list = json_field([])  # [{"class"/"type", "reason", "rate"|"count"}]
    ip_reputations: list = json_field([])  # v1 only
    feedback_loops: list = json_field([])  # [{"id", "spam_rate"}]
    metrics: dict = json_field()  # every metric as received, by our metric name
    fetched_at: datetime = when_field(default_now=True)

    __table_args__ = (
        UniqueConstraint("provider", "api", "domain", "day", name="uq_postmaster_domain_days_key"),
        Index("ix_postmaster_domain_days_domain_day", "domain", "day"),
    )


class SndsIpDay(SQLModel, table=True):
    """One row of the SNDS data feed: one IP over one activity period."""

    __tablename__ = "snds_ip_days"

    id: int | None = id_field()
    ip: str = Field(max_length=64)
    day: date
    activity_start: datetime = Field(sa_type=UTCDateTime)
    activity_end: datetime = Field(sa_type=UTCDateTime)
    rcpt_commands: int = 0
    data_commands: int = 0
    message_recipients: int = 0
    filter_result: str = Field(max_length=8)  # GREEN | YELLOW | RED
    complaint_rate: float | None = None  # fraction; "< 0.1%" is stored as its bound
    complaint_rate_text: str = Field(default="", max_length=32)
    complaint_rate_below: bool = False  # the feed only said "< x%"
    trap_hits: int = 0
    trap_period_start: datetime | None = when_field(nullable=True)
    trap_period_end: datetime | None = when_field(nullable=True)
    sample_helo: str | None = Field(default=None, max_length=255)
    sample_mail_from: str | None = Field(default=None, max_length=320)
    comments: str | None = _text()
    fetched_at: datetime = when_field(default_now=True)

    __table_args__ = (
        UniqueConstraint("ip", "activity_start", name="uq_snds_ip_days_ip_start"),
        Index("ix_snds_ip_days_ip_day", "ip", "day"),
    )


class SndsIpStatus(SQLModel, table=True):
    """A range the SNDS IP-status feed reports as blocked (the current list)."""

    __tablename__ = "snds_ip_status"

    id: int | None = id_field()
    first_ip: str = Field(max_length=64)
    last_ip: str = Field(max_length=64)
    blocked: bool = True
    reason: str = _text(nullable=False)
    first_seen_at: datetime = when_field(default_now=True)
    fetched_at: datetime = when_field(default_now=True)

    __table_args__ = (UniqueConstraint("first_ip", "last_ip", name="uq_snds_ip_status_range"),)


class SignalFetchState(SQLModel, table=True):
    """Whether a feed (a postmaster API, an SNDS key, a domain's DNS check) works."""

    __tablename__ = "signal_fetch_states"

    source: str = Field(primary_key=True, max_length=255)  # "google:v2:example.com", "snds:data", ...
    status: str = Field(default="ok", max_length=8)  # ok | error
    error: str | None = _text()
    http_status: int | None = None
    consecutive_failures: int = 0
    last_attempt_at: datetime | None = when_field(nullable=True)
    last_success_at: datetime | None = when_field(nullable=True)
