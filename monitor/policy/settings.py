"""Settings of the policy: [policy], its [[policy.rules]] and [policy.ramp]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitor.core.config import Section, check_duration, check_rate, fraction, require_unique
from monitor.health.settings import MetricName, Severity, Window


class PolicyRuleConfig(Section):
    # One rule: every condition given must hold for a subject; then `action`.
    name: str = Field(min_length=1, max_length=100)
    subjects: list[Literal["ip", "domain", "lane", "rdomain"]] = Field(
        default_factory=lambda: list[Literal["ip", "domain", "lane", "rdomain"]](["lane"]))
    providers: list[str] | None = None  # lanes / per-provider figures of these destinations only
    state: list[Literal["warning", "critical", "blocked"]] | None = None
    metric: MetricName | None = None
    window: Window = "24h"
    above: float | str | None = None  # metric >= above (rates: fraction or "0.3%")
    below: float | str | None = None  # metric < below
    min_volume: int | None = Field(default=None, ge=0)  # default: the [health] threshold's
    listed_on: list[str] | None = None  # zone names, "major" or "any"
    action: Literal["pause", "slow", "resume", "suppress", "alert"]
    # pause / slow: "lane" (the subject's lane), "ip" (every destination of the
    # IP) or "zone_users" (the IP for the destinations that use the listing zone).
    scope: Literal["lane", "ip", "zone_users"] | None = None
    rate: str | float | None = None  # slow: "10/min"
    duration: str | float | None = None  # absent: until the condition clears
    ramp: bool = True  # when a pause / slow ends, resume with the [policy.ramp]
    severity: Severity = "critical"  # of the alert the action sends

    _rate_ok = field_validator("rate")(classmethod(lambda cls, v: check_rate(v)))

    @field_validator("duration")
    @classmethod
    def _duration_ok(cls, value: str | float | None) -> str | float | None:
        return None if value is None else check_duration(value)

    @model_validator(mode="after")
    def _complete(self) -> PolicyRuleConfig:
        rate_metric = self.metric is not None and self.metric.endswith("_rate")
        for name in ("above", "below"):
            value = getattr(self, name)
            if isinstance(value, str) or (rate_metric and value is not None):
                setattr(self, name, fraction(value))
        if self.state is None and self.metric is None and self.listed_on is None:
            raise ValueError(f"rule {self.name}: give a condition (state, metric or listed_on)")
        if self.metric is not None and self.above is None and self.below is None:
            raise ValueError(f"rule {self.name}: metric {self.metric} needs above or below")
        if (self.above is not None or self.below is not None) and self.metric is None:
            raise ValueError(f"rule {self.name}: above / below need a metric")
        if self.action == "slow" and self.rate is None:
            raise ValueError(f"rule {self.name}: slow needs a rate")
        if self.action in ("pause", "slow") and not set(self.subjects) <= {"ip", "lane"}:
            raise ValueError(f"rule {self.name}: {self.action} acts on ip or lane subjects")
        if self.action == "suppress" and self.subjects != ["rdomain"]:
            raise ValueError(f"rule {self.name}: suppress acts on recipient domains (subjects = [\"rdomain\"])")
        if self.scope == "zone_users" and self.listed_on is None:
            raise ValueError(f"rule {self.name}: scope zone_users needs listed_on")
        return self


class RampConfig(Section):
    # After a policy pause or slow ends: slow to `start`, multiply by `factor`
    # every `step`, and stop ramping after `steps` steps.
    start: str | float = "1/s"
    factor: float = Field(default=2.0, gt=1.0, le=100.0)
    step: str | float = "10m"
    steps: int = Field(default=6, ge=1, le=50)

    _rate_ok = field_validator("start")(classmethod(lambda cls, v: check_rate(v)))
    _step_ok = field_validator("step")(classmethod(lambda cls, v: check_duration(v)))


class PolicyConfig(Section):
    enabled: bool = True
    dry_run: bool = False  # decide and log, touch nothing
    defaults: bool = True  # the shipped rules (monitor/policy/defaults.py) after your own
    rules: list[PolicyRuleConfig] = Field(default_factory=list)
    ramp: RampConfig = Field(default_factory=RampConfig)

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[PolicyRuleConfig]) -> list[PolicyRuleConfig]:
        require_unique([r.name for r in value], "rule names")
        return value
