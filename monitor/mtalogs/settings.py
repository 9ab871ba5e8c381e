"""Settings of the delivery-log sources: `[[delivery_logs]]`, one table per log.

    [[delivery_logs]]
    name = "mx1"                      # shown in logs and `repmon delivery-logs status`
    kind = "postfix"                  # postfix | postfix-journal | pmta | kumomta
    path = "/var/log/mail.log"        # one file (followed across rotation) or a glob
    source_ip = "192.0.2.10"          # when the log does not say which address sent
    source_ips = { "postfix-ip2/smtp" = "192.0.2.11" }   # per syslog name / vmta / egress source
    timezone = "local"                # zone of year-less syslog stamps (Postfix)
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from monitor.core.config import Section, require_unique

Kind = Literal["postfix", "postfix-journal", "pmta", "kumomta"]
GLOB_CHARS = frozenset("*?[")


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


class DeliveryLogConfig(Section):
    name: str | None = None  # default: kind:path
    kind: Kind
    # A file followed across rotation (rename + create, or copytruncate), or a
    # glob ("/var/log/kumomta/*.log", "/var/log/pmta/acct-*.csv"): every match is
    # read once to its end and followed while it grows.
    path: Path
    source_ip: str | None = None
    source_ips: dict[str, str] = Field(default_factory=dict)
    # Zone of year-less syslog stamps (Postfix writes local time): "local" (the
    # machine's zone, with its summer time), "UTC" or an IANA name ("Europe/Paris").
    timezone: str = "local"
    start_at: Literal["beginning", "end"] = "beginning"  # a file seen for the first time
    interval_s: float = Field(default=5.0, gt=0)
    batch_lines: int = Field(default=5000, gt=0, le=100_000)  # lines per transaction
    max_batches_per_pass: int = Field(default=200, gt=0)  # then the job yields until its next run
    # Postfix delivery agents whose lines count (local/virtual/pipe deliveries are not reputation).
    postfix_agents: list[str] = Field(default_factory=lambda: ["smtp", "lmtp", "error", "retry"])
    # Bounced and deferred outcomes with a diagnostic also become bounce events
    # (suppression and health see them); false: counted as outcomes only.
    bounce_events: bool = True
    # Extra MX host suffixes per provider ("google" = [".google.com"]), besides the built-in ones.
    providers: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("source_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else _check_ip(value)

    @field_validator("source_ips")
    @classmethod
    def _ips(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _check_ip(v) for k, v in value.items()}

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone_of(value)
        return value

    @property
    def display_name(self) -> str:
        return self.name or f"{self.kind}:{self.path}"

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARS for c in str(self.path))

    @property
    def tz(self) -> tzinfo:
        return zone_of(self.timezone)


def zone_of(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    if name == "local":
        return _local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (write UTC, local or an IANA name)") from None


def _local_zone() -> tzinfo:
    """The machine's zone as the C library sees it: $TZ, else /etc/localtime, else UTC."""
    configured = os.environ.get("TZ", "").lstrip(":")
    if configured:
        try:
            return ZoneInfo(configured)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return UTC


def check_unique_names(logs: list[DeliveryLogConfig]) -> list[DeliveryLogConfig]:
    """For the file model's validator: every source needs its own checkpoints."""
    require_unique([log.display_name for log in logs], "delivery_logs names")
    return logs
