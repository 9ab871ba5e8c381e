"""Timestamps as MTAs write them: BSD syslog ("Dec  2 16:24:37", no year, local
time), ISO 8601 / RFC 3339 (rsyslog, journalctl -o short-iso, PowerMTA, KumoMTA)
and Unix epoch seconds (PowerMTA's default, KumoMTA). Pure functions; every
one returns an aware UTC datetime or None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
# Epoch seconds accepted: 2000-01-01 .. 2100-01-01 (a number outside is not a time).
_EPOCH_MIN, _EPOCH_MAX = 946_684_800, 4_102_444_800


def from_epoch(value: float | int | str) -> datetime | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if seconds > _EPOCH_MAX * 1000:  # microseconds (journald __REALTIME_TIMESTAMP)
        seconds /= 1_000_000
    elif seconds > _EPOCH_MAX:  # milliseconds
        seconds /= 1000
    if not _EPOCH_MIN <= seconds <= _EPOCH_MAX:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def from_iso(text: str, default_tz: tzinfo = UTC) -> datetime | None:
    """ISO 8601 with or without a zone ("2024-05-01 10:00:00-0700", "...T...Z")."""
    text = text.strip()
    if len(text) < 10 or len(text) > 40:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=default_tz)
    return value.astimezone(UTC)


def any_time(value: object, default_tz: tzinfo = UTC) -> datetime | None:
    """Epoch seconds (number or digits) or ISO 8601."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return from_epoch(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.replace(".", "", 1).isdigit():
        return from_epoch(text)
    return from_iso(text, default_tz)


def from_bsd(month: str, day: str, clock: str, now: datetime, tz: tzinfo) -> datetime | None:
    """A year-less syslog time ("Dec", "2", "16:24:37[.123456]") in `tz`: the year
    is the one that puts it no more than a day after `now` (a December line
    read in January belongs to last year)."""
    number = _MONTHS.get(month.lower())
    if number is None or not day.isdigit():
        return None
    hms, _, fraction = clock.partition(".")
    parts = hms.split(":")
    if len(parts) != 3 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    local_now = now.astimezone(tz)
    for year in (local_now.year, local_now.year - 1):
        try:
            value = datetime(year, number, int(day), int(parts[0]), int(parts[1]), int(parts[2]), micro, tzinfo=tz)
        except ValueError:
            continue  # 29 Feb of a year that has none: try the year before
        if value <= local_now + timedelta(days=1):
            return value.astimezone(UTC)
    return None
