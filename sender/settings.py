"""Settings of the sender: [sender] and its tables (see config.example.toml)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from monitor.core.config import Section, check_duration, check_rate, require_unique

TlsMode = Literal["opportunistic", "required", "none"]


class LaneLimits(Section):
    # Limits of one lane (source IP x provider, or source IP x relay). A value
    # left unset falls back to [sender.lane_defaults].
    connections: int | None = Field(default=None, ge=1, le=2000)
    deliveries_per_connection: int | None = Field(default=None, ge=1)
    rate: str | float | None = None  # "10/s", "600/min", "1000/h"; absent: no limit
    burst: int | None = Field(default=None, ge=1)  # messages allowed back to back; default: one second's worth
    daily_cap: int | None = Field(default=None, ge=1)  # per UTC day
    tls: TlsMode | None = None

    _rate_ok = field_validator("rate")(classmethod(lambda cls, v: check_rate(v)))


class RelayConfig(LaneLimits):
    # A smarthost that takes every message instead of the recipients' MX hosts.
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    connections: int | None = Field(default=10, ge=1, le=2000)


class ProviderConfig(LaneLimits):
    # [sender.providers.NAME]: MX host suffixes rolled up into this provider
    # (added to the built-in ones when NAME is a built-in provider).
    mx_suffixes: list[str] = Field(default_factory=list)


class SendingIpConfig(Section):
    address: str  # the source address bound for each connection
    ehlo_name: str  # should match the address's PTR record
    pool: str = "default"
    weight: float = Field(default=1.0, gt=0)
    warmup: bool = False  # cap daily volume per provider by the [sender.warmup] schedule

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))


class DkimKeyConfig(Section):
    domain: str  # the d= domain; signs mail whose From: is this domain or a subdomain
    selector: str
    key_file: Path  # PEM private key (RSA or Ed25519)
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"


class UnsubscribeConfig(Section):
    # One-click unsubscribe (RFC 8058): List-Unsubscribe points at
    # `url`/<token>; the endpoint listening on `listen` suppresses the address.
    url: str
    mailto: str | None = None  # optional mailto: alternative
    listen: str = "127.0.0.1:8026"  # host:port of the POST endpoint
    secret: str | None = Field(default=None, repr=False)  # HMAC key of the tokens
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL (RFC 8058 asks for https)")
        return value.rstrip("/")


class WarmupConfig(Section):
    # Daily volume per (new IP, provider), one entry per warm-up day. An IP
    # moves to the next day only when it delivered `advance_fraction` of the
    # day's target with at most `max_deferral_rate` of its attempts deferred.
    schedule: list[int] = Field(default_factory=lambda: [
        150, 300, 600, 1_000, 1_600, 2_500, 4_000, 6_000, 9_000, 13_000, 19_000, 27_000, 38_000, 52_000, 70_000,
        95_000, 125_000, 165_000, 215_000, 280_000, 360_000, 460_000, 590_000, 750_000, 950_000,
        1_200_000, 1_500_000, 1_900_000, 2_400_000, 3_000_000])
    advance_fraction: float = Field(default=0.9, gt=0, le=1)
    max_deferral_rate: float = Field(default=0.05, ge=0, le=1)
    overflow_pool: str | None = None  # where mail over a cold IP's cap goes; none: it waits


class SenderConfig(Section):
    # Envelope sender. Its local part gets the VERP tracking token:
    # bounces+rm-<token>@bounce.example.com.
    mail_from: str = "bounces@localhost"
    feedback_id_sender: str = "repmon"  # last field of Feedback-ID
    relay: RelayConfig | None = None
    ips: list[SendingIpConfig] = Field(default_factory=list)
    lane_defaults: LaneLimits = Field(default_factory=lambda: LaneLimits(
        connections=10, deliveries_per_connection=100, rate="100/s", tls="opportunistic"))
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    dkim: list[DkimKeyConfig] = Field(default_factory=list)
    unsubscribe: UnsubscribeConfig | None = None
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    rules_file: Path | None = None  # lane rules; the shipped defaults apply after it
    default_rules: bool = True
    max_age: str | float = "3d"  # a message still deferred after this expires into a bounce
    retry_initial: str | float = "5m"
    retry_max: str | float = "4h"
    resume_step: str | float = "30s"  # after a suspension: one more connection per step
    batch_size: int = Field(default=500, ge=1, le=10_000)
    nameservers: list[str] = Field(default_factory=list)  # "host" or "host:port"; default: the system's
    mx_port: int = Field(default=25, ge=1, le=65535)  # port of MX hosts (only tests change it)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    command_timeout_s: float = Field(default=300.0, gt=0)

    _durations_ok = field_validator("max_age", "retry_initial", "retry_max", "resume_step")(
        classmethod(lambda cls, v: check_duration(v)))

    @field_validator("ips")
    @classmethod
    def _unique_ips(cls, value: list[SendingIpConfig]) -> list[SendingIpConfig]:
        require_unique([ip.address for ip in value], "sending addresses")
        return value

    @field_validator("mail_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.count("@") != 1 or not all(value.split("@")):
            raise ValueError("must be an address local@domain")
        return value

