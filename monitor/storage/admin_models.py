"""Tables of the managed suppression list (monitor/storage/suppression_admin.py
is their one writer): the audit of every operator change and the domain
suppressions. The address list itself stays in `suppressions`
(monitor/storage/models.py, written through monitor/storage/suppression.py).

Created by monitor/storage/migrations/0005_suppression_admin.py (branch
"suppression_admin", on top of 0001_core).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, JsonDoc, when_field


class SuppressionAudit(SQLModel, table=True):
    """One operator change of the list: who, why, when, and what it was.

    op "add" or "remove"; target an address or "@domain". A removal keeps the
    removed row (`snapshot`: reason, detail, source, event, first/last seen,
    count, expiry) and `event_floor`, the highest event id stored when it was
    removed: evidence from events up to that id (the old event that put it
    there) never suppresses the address again. The ids of removal rows are
    the removal half of the export cursor.
    """

    __tablename__ = "suppression_audit"
    __table_args__ = (Index("ix_suppression_audit_target", "target", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    op: str = Field(max_length=8)  # add | remove
    target: str = Field(max_length=320)
    at: datetime = when_field(default_now=True)
    actor: str = Field(max_length=100)  # "cli:alice", "api:bob", "web:carol"
    why: str = Field(max_length=500)
    snapshot: dict = Field(default_factory=dict, sa_column=Column(JsonDoc, nullable=False))
    event_floor: int = Field(default=0, sa_type=BigId)
    source: str | None = Field(default=None, max_length=64)  # the removed row's source (policy:<id>, bounce, ...)


class SuppressedDomain(SQLModel, table=True):
    """Every address of a domain is suppressed (`repmon suppressions add @example.net`)."""

    __tablename__ = "suppressed_domains"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    domain: str = Field(max_length=255, unique=True)
    reason: str = Field(max_length=32)
    detail: str | None = Field(default=None, max_length=255)
    source: str = Field(max_length=64)
    created_at: datetime = when_field(default_now=True)
    expires_at: datetime | None = when_field(nullable=True)
