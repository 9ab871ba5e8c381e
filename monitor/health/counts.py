"""Counters of one subject over one window, and the rates derived from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

from sqlalchemy import text
from sqlalchemy.engine import Connection

from monitor.health.models import COUNTERS

WINDOWS = ("1h", "24h", "7d")
# window -> (grain, grain seconds, number of buckets). A window is the
# current bucket and the ones before it: 1 h = twelve 5-minute buckets,
# 24 h = twenty-four hour buckets, 7 d = seven day buckets.
WINDOW_GRAINS: dict[str, tuple[str, int, int]] = {
    "1h": ("5m", 300, 12),
    "24h": ("1h", 3600, 24),
    "7d": ("1d", 86400, 7),
}
GRAIN_SECONDS = {"5m": 300, "1h": 3600, "1d": 86400}
# How long each grain's buckets are kept (the 1d retention comes from the config).
GRAIN_RETENTION_S = {"5m": 3 * 3600, "1h": 8 * 86400}


@dataclass(slots=True)
class Counts:
    attempts: int = 0
    delivered: int = 0
    deferred: int = 0
    sent: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    blocks: int = 0
    hostunknown: int = 0
    complaints: int = 0
    dmarc_messages: int = 0
    dmarc_pass: int = 0
    dkim_pass: int = 0
    spf_pass: int = 0

    @classmethod
    def of(cls, values) -> Counts:
        return cls(*(int(v or 0) for v in values))

    def add(self, other: Counts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def add_values(self, values) -> None:
        for name, value in zip(COUNTERS, values, strict=False):
            if value:
                setattr(self, name, getattr(self, name) + int(value))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in COUNTERS)

    @property
    def bounces(self) -> int:
        return self.hard_bounces + self.soft_bounces

    @property
    def hostunknown_or_delivered(self) -> int:
        return self.hostunknown + self.delivered


assert tuple(f.name for f in fields(Counts)) == COUNTERS

# metric -> (numerator, denominator, what the denominator is called)
RATES: dict[str, tuple[str, str, str]] = {
    "complaint_rate": ("complaints", "delivered", "delivered"),
    "hard_bounce_rate": ("hard_bounces", "sent", "sent"),
    "bounce_rate": ("bounces", "sent", "sent"),
    "deferral_rate": ("deferred", "attempts", "attempts"),
    "block_rate": ("blocks", "sent", "sent"),
    "dmarc_pass_rate": ("dmarc_pass", "dmarc_messages", "messages in DMARC reports"),
    "dkim_pass_rate": ("dkim_pass", "dmarc_messages", "messages in DMARC reports"),
    "spf_pass_rate": ("spf_pass", "dmarc_messages", "messages in DMARC reports"),
    # a recipient domain that does not exist: "host unknown" bounces against deliveries
    "hostunknown_rate": ("hostunknown", "hostunknown_or_delivered", "host-unknown bounces and deliveries"),
}


@dataclass(frozen=True, slots=True)
class Rate:
    value: float
    count: int
    volume: int


def rate(counts: Counts, metric: str) -> Rate | None:
    """The rate, or None without a denominator."""
    num_name, den_name, _ = RATES[metric]
    num = getattr(counts, num_name)
    den = getattr(counts, den_name)
    if den <= 0:
        return None
    return Rate(min(1.0, num / den), num, den)


def window_start(window: str, now: float) -> int:
    """The first bucket of `window` ending at `now`."""
    _grain, seconds, buckets = WINDOW_GRAINS[window]
    current = int(now // seconds) * seconds
    return current - (buckets - 1) * seconds


def bucket_of(epoch: float, grain: str) -> int:
    seconds = GRAIN_SECONDS[grain]
    return int(epoch // seconds) * seconds


def stored_buckets(conn: Connection, grain: str, start: float, end: float
                   ) -> Iterator[tuple[int, str, str, str, list[int]]]:
    """(bucket, scope, key, destination, counter values in COUNTERS order) of the
    IP and domain buckets of one grain between start and end, ordered by series
    then bucket: the stored history `repmon policy replay` replays."""
    sql = (f"SELECT bucket, scope, key, destination, {', '.join(COUNTERS)} FROM health_counts "
           f"WHERE grain = :g AND bucket >= :start AND bucket <= :end AND scope IN ('ip', 'domain') "
           f"ORDER BY scope, key, destination, bucket")
    for bucket, scope, key, dest, *values in conn.execute(text(sql), {"g": grain, "start": int(start), "end": int(end)}):
        yield int(bucket), scope, key, dest, [int(v or 0) for v in values]
