"""Microsoft SNDS automated-access feeds: the data CSV and the IP-status CSV.

Both are headerless CSV. Data: one row per IP and activity period
(IP, start, end, RCPT, DATA, recipients, filter result, complaint rate,
trap period start, trap period end, trap hits, sample HELO, sample MAIL
FROM, comments). IP status: first IP, last IP, blocked, reason; an empty
body means nothing is blocked. Times look like "6/14/2026 8:07 AM" (UTC).

A row we cannot read is returned as a `BadRow` with the reason - kept, never
silently dropped - while the readable rows are still stored.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from dataclasses import dataclass
from datetime import UTC, date, datetime

import aiohttp

from monitor.signals.postmaster.http import FetchError, RetryPolicy, fetch

FILTER_RESULTS = ("GREEN", "YELLOW", "RED")
TIME_FORMATS = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class SndsDataRow:
    ip: str
    activity_start: datetime
    activity_end: datetime
    rcpt_commands: int
    data_commands: int
    message_recipients: int
    filter_result: str
    complaint_rate: float | None
    complaint_rate_text: str
    complaint_rate_below: bool
    trap_period_start: datetime | None
    trap_period_end: datetime | None
    trap_hits: int
    sample_helo: str | None
    sample_mail_from: str | None
    comments: str | None

    @property
    def day(self) -> date:
        return self.activity_start.date()


@dataclass(frozen=True, slots=True)
class SndsStatusRow:
    first_ip: str
    last_ip: str
    blocked: bool
    reason: str


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    text: str
    reason: str


def parse_time(text: str) -> datetime:
    value = text.strip()
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unrecognised time {value!r}")


def parse_rate(text: str) -> tuple[float | None, bool]:
    """'0.4%' -> (0.004, False); '< 0.1%' -> (0.001, True); '' -> (None, False)."""
    value = text.strip()
    if not value:
        return None, False
    below = value.startswith("<")
    number = value.lstrip("<").strip().rstrip("%").strip()
    return float(number) / 100.0, below


def _int(text: str) -> int:
    value = text.strip().replace(",", "")
    return int(value) if value else 0


def parse_data_csv(text: str) -> tuple[list[SndsDataRow], list[BadRow]]:
    rows: list[SndsDataRow] = []
    bad: list[BadRow] = []
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or not any(f.strip() for f in fields):
            continue
        raw = ",".join(fields)
        if len(fields) < 11:
            bad.append(BadRow(number, raw[:500], f"{len(fields)} columns, expected at least 11"))
            continue
        fields += [""] * (14 - len(fields))
        try:
            ip = str(ipaddress.ip_address(fields[0].strip()))
            result = fields[6].strip().upper()
            if result not in FILTER_RESULTS:
                raise ValueError(f"filter result {fields[6]!r} is not GREEN, YELLOW or RED")
            rate, below = parse_rate(fields[7])
            rows.append(SndsDataRow(
                ip=ip, activity_start=parse_time(fields[1]), activity_end=parse_time(fields[2]),
                rcpt_commands=_int(fields[3]), data_commands=_int(fields[4]), message_recipients=_int(fields[5]),
                filter_result=result, complaint_rate=rate, complaint_rate_text=fields[7].strip(),
                complaint_rate_below=below,
                trap_period_start=parse_time(fields[8]) if fields[8].strip() else None,
                trap_period_end=parse_time(fields[9]) if fields[9].strip() else None,
                trap_hits=_int(fields[10]), sample_helo=fields[11].strip() or None,
                sample_mail_from=fields[12].strip() or None, comments=",".join(fields[13:]).strip() or None,
            ))
        except ValueError as exc:
            bad.append(BadRow(number, raw[:500], str(exc)))
    return rows, bad


def parse_status_csv(text: str) -> tuple[list[SndsStatusRow], list[BadRow]]:
    rows: list[SndsStatusRow] = []
    bad: list[BadRow] = []
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or not any(f.strip() for f in fields):
            continue
        raw = ",".join(fields)
        if len(fields) < 3:
            bad.append(BadRow(number, raw[:500], f"{len(fields)} columns, expected at least 3"))
            continue
        try:
            first = str(ipaddress.ip_address(fields[0].strip()))
            last = str(ipaddress.ip_address(fields[1].strip()))
        except ValueError as exc:
            bad.append(BadRow(number, raw[:500], str(exc)))
            continue
        blocked = fields[2].strip().lower() in ("yes", "true", "blocked")
        rows.append(SndsStatusRow(first, last, blocked, ",".join(fields[3:]).strip()))
    return rows, bad


def _decode(body: bytes) -> str:
    return body.decode("utf-8-sig", "replace")


async def fetch_data(session: aiohttp.ClientSession, url: str, key: str, day: date | None,
                     policy: RetryPolicy) -> str:
    params = {"key": key}
    if day is not None:
        params["date"] = day.strftime("%m%d%y")
    what = f"SNDS data feed{f' for {day.isoformat()}' if day else ''}"
    try:
        reply = await fetch(session, "GET", url, what=what, policy=policy, params=params)
    except FetchError as exc:
        raise _explain(exc) from None
    return _decode(reply.body)


async def fetch_status(session: aiohttp.ClientSession, url: str, key: str, policy: RetryPolicy) -> str:
    try:
        reply = await fetch(session, "GET", url, what="SNDS IP status feed", policy=policy, params={"key": key})
    except FetchError as exc:
        raise _explain(exc) from None
    return _decode(reply.body)


def _explain(exc: FetchError) -> FetchError:
    # Microsoft answers 404 both for an expired key and for "no data"; keys expire after 30 days.
    if exc.status in (401, 403, 404):
        return FetchError(f"{exc} - the SNDS key may have expired (automated-access links last 30 days); "
                          "regenerate it on the SNDS Automated Data Access page", kind="auth", status=exc.status)
    return exc
