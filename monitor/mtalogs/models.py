"""Tables of the delivery-log part (one writer: this part).

- `mtalog_checkpoints`: per source and file identity (device + inode), how far
  the file has been read (`offset`, the first byte not yet committed) and a
  fingerprint of its first bytes (an inode reused for a new file is seen as
  new). Advanced in the same transaction as the rows the read produced:
  exactly once, also across rotation, restarts and crashes.
- `mtalog_deliveries`: one row per logged delivery outcome (delivered,
  deferred, bounced) per source IP, sending domain and destination (provider
  or `mx:<host>`), read by health through `reading.delivery_counts`.
- `mtalog_rejects`: lines and records that could not be read, with the reason
  and the raw text (clipped), so nothing is dropped silently.
- `mtalog_hook_records`: the KumoMTA log hook's exactly-once ledger.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, UTCDateTime, id_field, utcnow

OUTCOMES = ("delivered", "deferred", "bounced")


class MtaLogCheckpoint(SQLModel, table=True):
    __tablename__ = "mtalog_checkpoints"
    __table_args__ = (UniqueConstraint("source", "device", "inode", name="uq_mtalog_checkpoints_file"),)

    id: int | None = id_field()
    source: str = Field(max_length=255)
    device: int = Field(sa_type=BigId)
    inode: int = Field(sa_type=BigId)
    path: str = Field(max_length=1024)  # where the file was last seen
    offset: int = Field(default=0, sa_type=BigId)
    head_len: int = 0  # bytes fingerprinted (up to 256)
    head_sha256: str = Field(default="", max_length=64)
    lines: int = Field(default=0, sa_type=BigId)  # lines read so far
    records: int = Field(default=0, sa_type=BigId)  # outcomes and complaints stored
    rejected: int = Field(default=0, sa_type=BigId)  # lines that could not be read
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MtaDelivery(SQLModel, table=True):
    __tablename__ = "mtalog_deliveries"
    __table_args__ = (
        Index("ix_mtalog_deliveries_ip_at", "source_ip", "at_epoch"),
        Index("ix_mtalog_deliveries_domain_at", "sending_domain", "at_epoch"),
        Index("ix_mtalog_deliveries_at", "at_epoch"),
    )

    id: int | None = id_field()
    source: str = Field(max_length=255)  # the [[delivery_logs]] name, or "kumomta-hook"
    mta: str = Field(max_length=16)  # postfix | pmta | kumomta
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    at_epoch: int = Field(sa_type=BigId)  # occurred_at in Unix seconds (buckets without date functions)
    outcome: str = Field(max_length=16)  # delivered | deferred | bounced
    source_ip: str | None = Field(default=None, max_length=64)
    sending_domain: str | None = Field(default=None, max_length=255)
    destination: str = Field(max_length=255)  # provider name, "mx:<host>", or "other"
    destination_host: str | None = Field(default=None, max_length=255)
    recipient_domain: str | None = Field(default=None, max_length=255)
    queue_id: str | None = Field(default=None, max_length=64)
    dsn: str | None = Field(default=None, max_length=16)
    reply_code: int | None = None
    diagnostic: str | None = Field(default=None, sa_type=Text)  # only for deferred and bounced
    event_id: int | None = Field(default=None, sa_type=BigId)  # the bounce event stored for it


class MtaLogReject(SQLModel, table=True):
    __tablename__ = "mtalog_rejects"
    __table_args__ = (Index("ix_mtalog_rejects_source_at", "source", "rejected_at"),)

    id: int | None = id_field()
    source: str = Field(max_length=255)
    path: str | None = Field(default=None, max_length=1024)
    offset: int | None = Field(default=None, sa_type=BigId)  # of the line in its file
    reason: str = Field(sa_type=Text)
    raw: str = Field(sa_type=Text)
    rejected_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MtaHookRecord(SQLModel, table=True):
    """The KumoMTA log hook's ledger: records already stored (by SHA-256 of
    their canonical JSON), so a POST sent again is not counted twice."""

    __tablename__ = "mtalog_hook_records"
    __table_args__ = (Index("ix_mtalog_hook_records_seen", "seen_at"),)

    sha256: str = Field(max_length=64, primary_key=True)
    source: str = Field(max_length=255)
    seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
