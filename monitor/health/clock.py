"""Time for health, policy and alerts: one injectable clock, so tests can
move time forward instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...  # epoch seconds (UTC)


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def to_epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def iso(value: datetime | float | None) -> str | None:
    """ISO 8601 in UTC with a Z, for JSON output."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = to_datetime(value)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
