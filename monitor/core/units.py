"""Rates, durations and fractions as people write them in the config and on the command
line: "10/s", "600/min", "1000/h", "50000/day"; "90s", "15m", "2h", "3d"."""

from __future__ import annotations

import re

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_UNIT_SECONDS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "90s", "15m", "2h", "3d", "1.5 hours" or a plain number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match or match.group(2).lower() not in _UNIT_SECONDS:
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 15m, 2h, 3d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def parse_rate(value: str | int | float | None) -> float | None:
    """Messages per second from "10/s", "600/min", "1000/h", "50000/day" or a
    plain number (per second). None, "unlimited" and "none" mean no limit."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a rate must be positive: {value}")
        return float(value)
    text = str(value).strip()
    if text.lower() in ("unlimited", "none", ""):
        return None
    match = _RATE_RE.match(text)
    if not match or match.group(3).lower() not in _UNIT_SECONDS:
        try:
            return parse_rate(float(text))
        except ValueError:
            raise ValueError(f"not a rate: {value!r} (write e.g. 10/s, 600/min, 1000/h, 50000/day)") from None
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _UNIT_SECONDS[match.group(3).lower()]
    if count <= 0:
        raise ValueError(f"a rate must be positive: {value!r}")
    return count / period


def format_rate(per_second: float | None) -> str:
    """The shortest honest rendering of a rate for listings."""
    if per_second is None:
        return "unlimited"
    for unit, seconds in (("s", 1), ("min", 60), ("h", 3600), ("day", 86400)):
        amount = per_second * seconds
        if amount >= 1 and abs(amount - round(amount)) < 1e-6:
            return f"{int(round(amount))}/{unit}"
    return f"{per_second:.4g}/s"


def format_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def parse_fraction(value: float | str | None) -> float | None:
    """0.003, "0.3%" -> 0.003. Rates in the config are fractions or percentages."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{value!r}: write a fraction (0.003) or a percentage (\"0.3%\")")
        value = float(text[:-1]) / 100.0
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{value!r}: a rate must be between 0 and 1 (or 0% and 100%)")
    return float(value)
