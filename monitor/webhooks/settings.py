"""The [[webhooks]] section: where to POST, what, and the signing secret."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section

# What a webhook can ask for. Stored events by kind ("complaint" is a feedback
# event that is a complaint: abuse, fraud, virus; other feedback is "feedback"),
# new suppressions, removals by an operator, and new policy actions.
EVENT_TYPES = ("bounce", "complaint", "feedback", "auto_reply", "delivery_success", "not_bounce", "suppression",
               "unsuppression", "action")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class WebhookConfig(Section):
    # A stable name keeps the webhook's place in the outbox (default: from the URL).
    name: str | None = None
    url: str | None = Field(default=None, repr=False)  # may hold a token: never logged
    url_env: str | None = None
    events: list[str] = Field(default_factory=lambda: ["suppression", "bounce", "complaint", "action"])
    # The HMAC-SHA256 signing secret.
    secret: str | None = Field(default=None, repr=False)
    secret_env: str | None = None
    secret_file: Path | None = None
    # "now": a new webhook gets what is stored from now on; "beginning": everything stored.
    start: Literal["now", "beginning"] = "now"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retry_initial_s: float = Field(default=5.0, gt=0, le=3600)
    retry_max_s: float = Field(default=600.0, gt=0, le=86400)
    interval_s: float = Field(default=1.0, gt=0, le=3600)  # how often new rows are looked for
    batch: int = Field(default=200, ge=1, le=5000)  # rows per source per pass
    keep_delivered_s: float = Field(default=86400.0, ge=0)  # delivered outbox rows kept this long

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        if "*" in value:
            return list(EVENT_TYPES)
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event type {', '.join(unknown)}: use {', '.join(EVENT_TYPES)} or *")
        if not value:
            raise ValueError("give at least one event type")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError("letters, digits and ._- only, at most 100")
        return value

    @model_validator(mode="after")
    def _sources(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        if sum(x is not None for x in (self.secret, self.secret_env, self.secret_file)) != 1:
            raise ValueError("give exactly one of secret, secret_env or secret_file")
        if self.name is None and self.url_env is not None:
            self.name = self.url_env.lower()[:100]
        return self

    @property
    def key(self) -> str:
        """The webhook's name in the tables."""
        if self.name:
            return self.name
        return "url-" + hashlib.sha256((self.url or "").encode()).hexdigest()[:12]


def check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL")
    return value


def unique_names(hooks: list[WebhookConfig]) -> list[WebhookConfig]:
    names = [h.key for h in hooks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"webhook names must be unique, repeated: {', '.join(repeated)}")
    return hooks
