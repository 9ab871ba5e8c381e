"""Column types shared by every part's tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), while
# PostgreSQL tables that take millions of events a day want 64-bit keys.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# JSON documents (event details, DMARC auth results): JSONB where it exists.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """A point in time, always handed back as an aware UTC datetime.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is
    stored as naive UTC. Naive datetimes given to us are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Field makers every part's models use (one definition, not one per models.py).

def id_field() -> Any:
    """A 64-bit auto-increment primary key (see BigId)."""
    return Field(default=None, primary_key=True, sa_type=BigId)


def when_field(*, index: bool = False, nullable: bool = False, default_now: bool = False) -> Any:
    """A UTC point in time; `default_now`: set to now when the row is made."""
    if default_now:
        return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def json_field(default: list[Any] | dict[str, Any] | None = None) -> Any:
    """A JSON document column, never NULL; a fresh copy of `default` per row."""
    if isinstance(default, list):
        items = list(default)
        return Field(default_factory=lambda: list(items), sa_column=Column(JsonDoc, nullable=False))
    mapping = dict(default or {})
    return Field(default_factory=lambda: dict(mapping), sa_column=Column(JsonDoc, nullable=False))
