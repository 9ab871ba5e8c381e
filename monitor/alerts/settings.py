"""Settings of alerts: [alerts], its Slack and email channels and [alerts.smtp]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section, check_duration, require_unique, resolve_secret
from monitor.health.settings import Severity


class SlackAlertConfig(Section):
    # A Slack incoming webhook. The URL is a secret: never logged.
    name: str = "slack"
    webhook_url: str | None = Field(default=None, repr=False)
    webhook_url_env: str | None = None
    min_severity: Severity = "warning"

    @model_validator(mode="after")
    def _one_source(self) -> SlackAlertConfig:
        if (self.webhook_url is None) == (self.webhook_url_env is None):
            raise ValueError("give exactly one of webhook_url, webhook_url_env")
        return self

    def resolve_url(self) -> str:
        url = resolve_secret(f"alerts.slack {self.name}", self.webhook_url, self.webhook_url_env)
        assert url is not None
        return url


class EmailAlertConfig(Section):
    name: str = "email"
    to: list[str] = Field(min_length=1)
    min_severity: Severity = "critical"


class AlertSmtpConfig(Section):
    # The server alert mails go through (aiosmtplib).
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_env: str | None = None
    sender: str = "repmon@localhost"  # From:
    timeout_s: float = Field(default=30.0, gt=0)
    verify_tls: bool = True

    def resolve_password(self) -> str | None:
        return resolve_secret("alerts.smtp password", self.password, self.password_env)


class AlertsConfig(Section):
    # Alerts fire on health findings (a listing, a rate over its threshold),
    # on policy actions, and say "resolved" when they clear. Per subject and
    # cause, a repeat within `cooldown` is not sent again (an escalation is).
    min_severity: Severity = "warning"
    cooldown: str | float = "1h"
    # More notifications than this within `gather_s` go out as one digest per channel.
    digest_threshold: int = Field(default=5, ge=1)
    gather_s: float = Field(default=3.0, ge=0, le=300)
    max_attempts: int = Field(default=8, ge=1, le=100)  # per message, on 429 / 5xx / network errors
    slack: list[SlackAlertConfig] = Field(default_factory=list)
    email: list[EmailAlertConfig] = Field(default_factory=list)
    smtp: AlertSmtpConfig | None = None

    _cooldown_ok = field_validator("cooldown")(classmethod(lambda cls, v: check_duration(v)))

    @model_validator(mode="after")
    def _smtp_for_email(self) -> AlertsConfig:
        if self.email and self.smtp is None:
            raise ValueError("email alerts need [alerts.smtp]")
        require_unique([t.name for t in self.slack] + [t.name for t in self.email], "alert channel names")
        return self

