"""Settings of health: [health] thresholds, per-provider overrides and zone weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section, fraction

Window = Literal["1h", "24h", "7d"]
Severity = Literal["info", "warning", "critical"]
# The figures a health assessment gives, by the names policy rules use.
def _percentage(value: Any) -> Any:
    """Before validation: "0.3%" -> 0.003 (numbers go on to the float check, then `fraction`'s range check)."""
    return fraction(value) if isinstance(value, str) else value


MetricName = Literal["complaint_rate", "spam_rate", "hard_bounce_rate", "bounce_rate", "deferral_rate",
                     "block_rate", "dmarc_pass_rate", "dkim_pass_rate", "spf_pass_rate", "score",
                     "hostunknown_rate", "complaints", "hard_bounces", "deferred", "delivered", "sent", "hostunknown"]


class RateThreshold(Section):
    # A rate where more is worse (complaints / delivered, ...). `min_volume` is
    # the smallest denominator the rate is judged on in a window: 1 complaint
    # in 50 messages is not a 2 % complaint rate anyone can act on.
    warning: float | None = None
    critical: float | None = None
    min_volume: int = Field(default=100, ge=1)
    windows: list[Window] = Field(default_factory=lambda: list[Window](["24h", "7d"]))

    _percentages = field_validator("warning", "critical", mode="before")(classmethod(lambda cls, v: _percentage(v)))
    _rates = field_validator("warning", "critical")(classmethod(lambda cls, v: fraction(v)))

    @model_validator(mode="after")
    def _ordered(self) -> RateThreshold:
        if self.warning is not None and self.critical is not None and self.warning > self.critical:
            raise ValueError("warning must not be above critical")
        return self


class PassRateThreshold(Section):
    # A rate where less is worse (DMARC pass rate): warn below `warning`.
    warning: float | None = None
    critical: float | None = None
    min_volume: int = Field(default=100, ge=1)
    windows: list[Window] = Field(default_factory=lambda: list[Window](["7d"]))

    _percentages = field_validator("warning", "critical", mode="before")(classmethod(lambda cls, v: _percentage(v)))
    _rates = field_validator("warning", "critical")(classmethod(lambda cls, v: fraction(v)))

    @model_validator(mode="after")
    def _ordered(self) -> PassRateThreshold:
        if self.warning is not None and self.critical is not None and self.warning < self.critical:
            raise ValueError("warning must not be below critical (a pass rate: lower is worse)")
        return self


class ProviderHealthConfig(Section):
    # [health.providers.NAME]: thresholds for one destination (yahoo, microsoft, ...).
    complaint_rate: RateThreshold | None = None
    deferral_rate: RateThreshold | None = None


class ZoneWeightConfig(Section):
    # How much a listing on a zone weighs (added to / overriding the built-in
    # table in monitor/health/zones.py). `major`: receivers block on it, so the
    # subject is "blocked". `used_by` / `not_used_by`: the destinations whose
    # lanes the listing affects ("*" = every destination).
    zone: str
    codes: list[str] = Field(default_factory=list)  # only these answers (empty: any listing code)
    weight: float = Field(ge=0, le=100)
    major: bool = False
    used_by: list[str] = Field(default_factory=lambda: ["*"])
    not_used_by: list[str] = Field(default_factory=list)


def _default_rate(warning: str, critical: str, min_volume: int, windows: list[str]) -> Any:
    return Field(default_factory=lambda: RateThreshold.model_validate(
        {"warning": warning, "critical": critical, "min_volume": min_volume, "windows": windows}))


class HealthConfig(Section):
    # Defaults follow published thresholds (see README, health section):
    # Gmail / Yahoo spam rate under 0.1 %, never 0.3 %; SES-style bounce
    # levels (review at 5 %, pause at 10 %); hard bounces 2 % / 5 %.
    interval_s: float = Field(default=0.25, gt=0, le=60)  # how often new rows are rolled up
    full_every_s: float = Field(default=30.0, gt=0)  # every subject re-assessed (windows slide)
    domains: list[str] = Field(default_factory=list)  # sending domains; default: [dnsbl] + [dns_auth] domains
    complaint_rate: RateThreshold = _default_rate("0.1%", "0.3%", 100, ["24h", "7d"])
    spam_rate: RateThreshold = _default_rate("0.1%", "0.3%", 1, ["24h", "7d"])  # Google Postmaster, per day
    hard_bounce_rate: RateThreshold = _default_rate("2%", "5%", 100, ["24h", "7d"])
    bounce_rate: RateThreshold = _default_rate("5%", "10%", 100, ["24h", "7d"])
    deferral_rate: RateThreshold = _default_rate("20%", "50%", 50, ["1h", "24h"])
    # 5xx answers that refuse us for reputation (blocked, badreputation, requireptr).
    block_rate: RateThreshold = _default_rate("5%", "20%", 20, ["1h", "24h"])
    dmarc_pass_rate: PassRateThreshold = Field(default_factory=lambda: PassRateThreshold.model_validate(
        {"warning": "98%", "critical": "90%", "min_volume": 100, "windows": ["7d"]}))
    dkim_pass_rate: PassRateThreshold = Field(default_factory=lambda: PassRateThreshold.model_validate(
        {"warning": "98%", "critical": None, "min_volume": 100, "windows": ["7d"]}))
    providers: dict[str, ProviderHealthConfig] = Field(default_factory=dict)
    zones: list[ZoneWeightConfig] = Field(default_factory=list)
    # DMARC aggregate rows count for a domain only from our own sending IPs
    # ([[sender.ips]], [dnsbl] ips): forwarders and spoofers are not our mail.
    dmarc_own_ips_only: bool = True
    retention_days: int = Field(default=400, ge=8)  # day buckets kept (hour buckets: 8 days)

    @field_validator("domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]

