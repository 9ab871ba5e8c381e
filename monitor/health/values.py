"""Reading stored values back the same way on SQLite and PostgreSQL: JSON
columns may come back as text, timestamps and days as ISO strings."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any


def json_value(value: Any) -> Any:
    """A JSON column's value; None when text that is not JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def as_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime (naive values are UTC), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def as_date(value: Any) -> date:
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        return value.date()
    return value
