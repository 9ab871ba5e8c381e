"""Core tables: ingested messages, the events they carried, reports, checkpoints,
quarantine and the suppression list.

Other parts add their own tables in their own modules and migrations
(monitor/signals/models.py: listings, health; sender/models.py: lanes, actions).

Times are aware UTC datetimes (`UTCDateTime`). Every table that the health
roll-ups read has an index that starts with what they group by (sending IP,
sending domain, recipient domain, kind) followed by the time column, so
"last 24 h per IP" is an index range scan.
"""

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, JsonDoc, id_field, when_field

# --- the ingestion ledger -------------------------------------------------------

class ProcessedMessage(SQLModel, table=True):
    """One row per distinct message ever ingested: the exactly-once ledger.

    The key is the SHA-256 of the raw bytes. A message's events are inserted in
    the same transaction as its ledger row, so a message is either fully
    counted or not at all; seeing the same bytes again (a restart before the
    IMAP move, a UIDVALIDITY change, the same file in two folders) is a no-op.
    Where it was first seen (source, folder, UID) is kept for the audit trail.
    """

    __tablename__ = "processed_messages"

    id: int | None = id_field()
    content_sha256: str = Field(max_length=64, unique=True)
    size: int
    source: str = Field(max_length=255)  # "imap:<mailbox name>" or "folder:<name>"
    folder: str | None = Field(default=None, max_length=255)
    uidvalidity: int | None = Field(default=None, sa_type=BigId)
    uid: int | None = Field(default=None, sa_type=BigId)
    outcome: str = Field(max_length=16)  # "stored" | "quarantined"
    event_count: int = 0
    header_message_id: str | None = Field(default=None, sa_type=Text)
    header_date: datetime | None = when_field(nullable=True)
    processed_at: datetime = when_field(index=True, default_now=True)


class MessageFailure(SQLModel, table=True):
    """Messages whose processing raised (not a parse failure: the pipeline
    itself, e.g. a database error). After `max_attempts` the message is
    quarantined instead of being retried for ever."""

    __tablename__ = "message_failures"

    content_sha256: str = Field(max_length=64, primary_key=True)
    source: str = Field(max_length=255)
    folder: str | None = Field(default=None, max_length=255)
    uid: int | None = Field(default=None, sa_type=BigId)
    attempts: int = 0
    last_error: str = Field(sa_type=Text)
    first_failed_at: datetime = when_field(default_now=True)
    last_failed_at: datetime = when_field(default_now=True)


class QuarantinedMessage(SQLModel, table=True):
    """A message we could not turn into events, kept with the reason.

    The raw bytes are stored here up to a size limit; `location` always says
    where the original is (the IMAP quarantine folder or the local file)."""

    __tablename__ = "quarantined_messages"

    id: int | None = id_field()
    content_sha256: str = Field(max_length=64, unique=True)
    source: str = Field(max_length=255)
    folder: str | None = Field(default=None, max_length=255)
    uid: int | None = Field(default=None, sa_type=BigId)
    size: int
    reason: str = Field(sa_type=Text)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    location: str | None = Field(default=None, sa_type=Text)
    header_message_id: str | None = Field(default=None, sa_type=Text)
    subject: str | None = Field(default=None, sa_type=Text)
    quarantined_at: datetime = when_field(index=True, default_now=True)
    released_at: datetime | None = when_field(nullable=True)


# --- where each source has got to ---------------------------------------------

class SourceCheckpoint(SQLModel, table=True):
    """Per IMAP mailbox folder: the UIDVALIDITY seen and the highest UID whose
    events are committed (advanced in the same transaction as the events)."""

    __tablename__ = "source_checkpoints"
    __table_args__ = (UniqueConstraint("source", "folder", name="uq_source_checkpoints_source_folder"),)

    id: int | None = id_field()
    source: str = Field(max_length=255)
    folder: str = Field(max_length=255)
    uidvalidity: int = Field(sa_type=BigId)
    last_uid: int = Field(default=0, sa_type=BigId)
    updated_at: datetime = when_field(default_now=True)


class PendingMove(SQLModel, table=True):
    """An IMAP message whose events are committed but which still has to be
    moved out of its folder. Written in the same transaction as the events and
    deleted once the server confirmed the move, so a crash in between is
    finished on the next pass instead of the message being read again."""

    __tablename__ = "pending_moves"
    __table_args__ = (
        UniqueConstraint("source", "folder", "uidvalidity", "uid", name="uq_pending_moves_message"),
    )

    id: int | None = id_field()
    source: str = Field(max_length=255)
    folder: str = Field(max_length=255)
    uidvalidity: int = Field(sa_type=BigId)
    uid: int = Field(sa_type=BigId)
    target: str = Field(max_length=255)  # the folder it goes to
    created_at: datetime = when_field(default_now=True)


class FolderFile(SQLModel, table=True):
    """Files of a local folder source already read (size + mtime say whether
    a file changed; the ledger's content hash says whether it is new)."""

    __tablename__ = "folder_files"
    __table_args__ = (UniqueConstraint("source", "path", name="uq_folder_files_source_path"),)

    id: int | None = id_field()
    source: str = Field(max_length=255)
    path: str = Field(max_length=1024)
    size: int = Field(sa_type=BigId)
    mtime_ns: int = Field(sa_type=BigId)
    content_sha256: str = Field(max_length=64)
    seen_at: datetime = when_field(default_now=True)


# --- events ------------------------------------------------------------------------

class StoredEvent(SQLModel, table=True):
    """A per-recipient event: bounce, feedback (complaint, opt-out, ...),
    auto-reply, delivery success, or a message that was none of these.

    The columns are what queries filter and group by; `details` keeps the
    parser's whole event (its JSON form) so nothing the parser found is lost.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_kind_occurred", "kind", "occurred_at"),
        Index("ix_events_sending_ip_occurred", "sending_ip", "occurred_at"),
        Index("ix_events_sending_domain_occurred", "sending_domain", "occurred_at"),
        Index("ix_events_recipient_domain_occurred", "recipient_domain", "occurred_at"),
        Index("ix_events_campaign_occurred", "campaign", "occurred_at"),
        Index("ix_events_recipient", "recipient"),
        Index("ix_events_message", "message_id"),
    )

    id: int | None = id_field()
    message_id: int | None = Field(
        default=None, sa_column=Column(BigId, ForeignKey("processed_messages.id", ondelete="CASCADE"), nullable=True)
    )
    kind: str = Field(max_length=32)  # bounce | feedback | auto_reply | delivery_success | not_bounce
    # When it happened: the feedback message's own Date header (clamped to the
    # time we read it), else the time we read it.
    occurred_at: datetime = when_field(index=True)
    stored_at: datetime = when_field(default_now=True)

    recipient: str | None = Field(default=None, max_length=320)
    recipient_domain: str | None = Field(default=None, max_length=255)

    # bounces
    reason: str | None = Field(default=None, max_length=64)
    hard_or_soft: str | None = Field(default=None, max_length=8)
    status: str | None = Field(default=None, max_length=16)
    reply_code: int | None = None
    action: str | None = Field(default=None, max_length=32)
    remote_mta: str | None = Field(default=None, max_length=255)
    smtp_agent: str | None = Field(default=None, max_length=64)

    # feedback
    feedback_type: str | None = Field(default=None, max_length=32)
    # True for complaints only (abuse, fraud, virus): never for auth-failure,
    # opt-out or not-spam reports.
    is_complaint: bool = False

    # the message the event is about, and who sent it
    original_message_id: str | None = Field(default=None, sa_type=Text)
    original_mail_from: str | None = Field(default=None, max_length=320)
    reported_domain: str | None = Field(default=None, max_length=255)
    source_ip: str | None = Field(default=None, max_length=45)  # as the report gives it
    # Our own tracking token (parsers/tracking.py), when the message carried it.
    tracking_message_id: str | None = Field(default=None, max_length=255)
    tracking_source_ip: str | None = Field(default=None, max_length=45)
    campaign: str | None = Field(default=None, max_length=255)
    # Best knowledge of the sending IP / domain (tracking first, then the report).
    sending_ip: str | None = Field(default=None, max_length=45)
    sending_domain: str | None = Field(default=None, max_length=255)

    subject: str | None = Field(default=None, sa_type=Text)
    details: dict | None = Field(default=None, sa_type=JsonDoc)


# --- DMARC and TLS reports ------------------------------------------------------------

class DmarcReport(SQLModel, table=True):
    """A DMARC aggregate report (RFC 7489 appendix C). The same report sent
    twice (another wrapper mail, another mailbox) is stored once."""

    __tablename__ = "dmarc_reports"
    __table_args__ = (
        # Keyed by content too (revision 0013_hostile_counts): a forged report that
        # arrives first with a genuine report's org/domain/id must not hide it.
        UniqueConstraint("org_name", "domain", "report_id", "content_sha256",
                         name="uq_dmarc_reports_org_domain_report_content"),
        Index("ix_dmarc_reports_domain_begin", "domain", "begin"),
    )

    id: int | None = id_field()
    message_id: int | None = Field(
        default=None, sa_column=Column(BigId, ForeignKey("processed_messages.id", ondelete="CASCADE"), nullable=True)
    )
    report_id: str = Field(max_length=255)
    org_name: str = Field(max_length=255)
    org_email: str | None = Field(default=None, max_length=320)
    domain: str = Field(max_length=255)
    policy: str | None = Field(default=None, max_length=16)
    subdomain_policy: str | None = Field(default=None, max_length=16)
    adkim: str | None = Field(default=None, max_length=4)
    aspf: str | None = Field(default=None, max_length=4)
    pct: int | None = None
    begin: datetime = when_field()
    end: datetime = when_field()
    errors: list | None = Field(default=None, sa_type=JsonDoc)
    stored_at: datetime = when_field(default_now=True)
    # SHA-256 of the parsed report (NULL for reports stored before revision 0013), and the
    # id of the report stored first under the same org/domain/id when the content differs.
    content_sha256: str | None = Field(default=None, max_length=64)
    conflict_of: int | None = Field(default=None, sa_type=BigId)


class DmarcRecord(SQLModel, table=True):
    """One row of an aggregate report: a source IP and what happened to its mail.
    Domain and period are copied from the report so roll-ups need no join."""

    __tablename__ = "dmarc_records"
    __table_args__ = (
        Index("ix_dmarc_records_source_ip_begin", "source_ip", "begin"),
        Index("ix_dmarc_records_domain_begin", "domain", "begin"),
        Index("ix_dmarc_records_report", "report_pk"),
    )

    id: int | None = id_field()
    report_pk: int = Field(sa_column=Column(BigId, ForeignKey("dmarc_reports.id", ondelete="CASCADE"), nullable=False))
    domain: str = Field(max_length=255)
    begin: datetime = when_field()
    end: datetime = when_field()
    source_ip: str = Field(max_length=45)
    count: int = Field(sa_type=BigId)  # 64-bit on both databases (revision 0013_hostile_counts)
    disposition: str | None = Field(default=None, max_length=16)
    dkim: str | None = Field(default=None, max_length=16)
    spf: str | None = Field(default=None, max_length=16)
    header_from: str | None = Field(default=None, max_length=255)
    envelope_from: str | None = Field(default=None, max_length=255)
    dkim_results: list | None = Field(default=None, sa_type=JsonDoc)
    spf_results: list | None = Field(default=None, sa_type=JsonDoc)
    # Where the mail came from (parsers/reports/sources.py: parsedmarc's offline
    # values; reverse_dns / base_domain only with [dmarc] reverse_dns = true).
    # Revision 0008_dmarc_sources.
    source_country: str | None = Field(default=None, max_length=8)
    source_asn: int | None = Field(default=None, sa_type=BigId)
    source_as_name: str | None = Field(default=None, max_length=255)
    source_as_domain: str | None = Field(default=None, max_length=255)
    source_name: str | None = Field(default=None, max_length=255)
    source_type: str | None = Field(default=None, max_length=64)
    source_reverse_dns: str | None = Field(default=None, max_length=255)
    source_base_domain: str | None = Field(default=None, max_length=255)


class DmarcFailure(SQLModel, table=True):
    """A DMARC failure (forensic) report: one message that failed authentication."""

    __tablename__ = "dmarc_failures"
    __table_args__ = (
        Index("ix_dmarc_failures_source_ip_occurred", "source_ip", "occurred_at"),
        Index("ix_dmarc_failures_domain_occurred", "reported_domain", "occurred_at"),
        Index("ix_dmarc_failures_message", "message_id"),
    )

    id: int | None = id_field()
    message_id: int | None = Field(
        default=None, sa_column=Column(BigId, ForeignKey("processed_messages.id", ondelete="CASCADE"), nullable=True)
    )
    occurred_at: datetime = when_field()
    stored_at: datetime = when_field(default_now=True)
    arrival_date: datetime | None = when_field(nullable=True)
    reported_domain: str | None = Field(default=None, max_length=255)
    source_ip: str | None = Field(default=None, max_length=45)
    feedback_type: str | None = Field(default=None, max_length=32)
    auth_failure: str | None = Field(default=None, max_length=64)
    original_mail_from: str | None = Field(default=None, max_length=320)
    original_rcpt_to: str | None = Field(default=None, max_length=320)
    delivery_result: str | None = Field(default=None, max_length=32)
    dkim_domain: str | None = Field(default=None, max_length=255)
    subject: str | None = Field(default=None, sa_type=Text)


class TlsReport(SQLModel, table=True):
    """An SMTP TLS report (RFC 8460), stored once per organisation + report id."""

    __tablename__ = "tls_reports"
    __table_args__ = (UniqueConstraint("organization_name", "report_id", "content_sha256",
                                       name="uq_tls_reports_org_report_content"),)

    id: int | None = id_field()
    message_id: int | None = Field(
        default=None, sa_column=Column(BigId, ForeignKey("processed_messages.id", ondelete="CASCADE"), nullable=True)
    )
    report_id: str = Field(max_length=255)
    organization_name: str = Field(max_length=255)
    contact_info: str | None = Field(default=None, max_length=320)
    begin: datetime | None = when_field(nullable=True, index=True)
    end: datetime | None = when_field(nullable=True)
    stored_at: datetime = when_field(default_now=True)
    content_sha256: str | None = Field(default=None, max_length=64)  # as DmarcReport
    conflict_of: int | None = Field(default=None, sa_type=BigId)


class TlsPolicyResult(SQLModel, table=True):
    """One policy of a TLS report: sessions that succeeded and failed, with details."""

    __tablename__ = "tls_policies"
    __table_args__ = (
        Index("ix_tls_policies_domain", "policy_domain"),
        Index("ix_tls_policies_report", "report_pk"),
    )

    id: int | None = id_field()
    report_pk: int = Field(sa_column=Column(BigId, ForeignKey("tls_reports.id", ondelete="CASCADE"), nullable=False))
    policy_domain: str = Field(max_length=255)
    policy_type: str | None = Field(default=None, max_length=16)
    successful_session_count: int = Field(default=0, sa_type=BigId)
    failed_session_count: int = Field(default=0, sa_type=BigId)
    failure_details: list | None = Field(default=None, sa_type=JsonDoc)


# --- the suppression list ------------------------------------------------------------

class Suppression(SQLModel, table=True):
    """An address the sender must not mail, and why.

    `reason` is one of SUPPRESSION_REASONS (monitor/storage/suppression.py).
    Hard reasons never expire (`expires_at` is NULL); a soft reason (repeated
    soft bounces) lasts until `expires_at`. `count` is how many events
    confirmed it, `source_event_id` the event that put it there first.
    """

    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_domain", "domain"),)

    id: int | None = id_field()
    address: str = Field(max_length=320, unique=True)
    domain: str = Field(max_length=255)
    reason: str = Field(max_length=32)
    detail: str | None = Field(default=None, max_length=255)
    source: str = Field(max_length=64)
    source_event_id: int | None = Field(
        default=None, sa_column=Column(BigId, ForeignKey("events.id", ondelete="SET NULL"), nullable=True)
    )
    first_seen_at: datetime = when_field()
    last_seen_at: datetime = when_field()
    count: int = 1
    expires_at: datetime | None = when_field(nullable=True, index=True)
