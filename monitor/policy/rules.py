"""Policy rules, compiled from the [policy] section, and whether one holds for an assessment."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.core.units import parse_duration, parse_rate
from monitor.health.assess import LABELS, SEVERITY_RANK, Assessment, Listing, Thresholds, pct
from monitor.health.counts import RATES
from monitor.health.settings import HealthConfig
from monitor.policy.defaults import DEFAULT_RULES
from monitor.policy.settings import PolicyConfig, PolicyRuleConfig

_COUNT_LABELS = {"complaints": "complaints", "hard_bounces": "hard bounces", "deferred": "deferred attempts",
                 "delivered": "deliveries", "sent": "messages sent", "hostunknown": "host-unknown bounces",
                 "bounces": "bounces"}


@dataclass(frozen=True, slots=True)
class PolicyRule:
    name: str
    subjects: tuple[str, ...]
    action: str
    providers: tuple[str, ...] | None = None
    state: tuple[str, ...] | None = None
    metric: str | None = None
    window: str = "24h"
    above: float | None = None
    below: float | None = None
    min_volume: int | None = None
    listed_on: tuple[str, ...] | None = None
    scope: str = "lane"
    rate: float | None = None  # messages per second
    duration: float | None = None  # seconds; None: until the condition clears
    ramp: bool = True
    severity: str = "critical"
    origin: str = "config"  # config | default

    @property
    def until(self) -> str:
        return "clear" if self.duration is None else "expiry"

    @classmethod
    def from_config(cls, rule: PolicyRuleConfig, origin: str = "config") -> PolicyRule:
        scope = rule.scope or ("lane" if rule.action in ("pause", "slow") and "lane" in rule.subjects else "ip")
        return cls(
            name=rule.name, subjects=tuple(rule.subjects), action=rule.action,
            providers=tuple(rule.providers) if rule.providers else None,
            state=tuple(rule.state) if rule.state else None, metric=rule.metric, window=rule.window,
            above=None if rule.above is None else float(rule.above),
            below=None if rule.below is None else float(rule.below), min_volume=rule.min_volume,
            listed_on=tuple(z.lower() for z in rule.listed_on) if rule.listed_on else None, scope=scope,
            rate=parse_rate(rule.rate), duration=None if rule.duration is None else parse_duration(rule.duration),
            ramp=rule.ramp, severity=rule.severity, origin=origin)


def compile_rules(policy: PolicyConfig) -> list[PolicyRule]:
    rules = [PolicyRule.from_config(r) for r in policy.rules]
    if policy.defaults:
        own = {r.name for r in rules}
        rules += [PolicyRule.from_config(PolicyRuleConfig.model_validate(d), origin="default")
                  for d in DEFAULT_RULES if d["name"] not in own]
    return rules


@dataclass
class Match:
    """A rule holding for a subject, with what it saw."""

    rule: PolicyRule
    assessment: Assessment
    evidence: list[str]
    # numbers that say whether the evidence grew since an earlier action ended
    counts: dict[str, float] = field(default_factory=dict)
    listings: list[Listing] = field(default_factory=list)


def match(rule: PolicyRule, assessment: Assessment, thresholds: Thresholds) -> Match | None:
    subject = assessment.subject
    if subject.kind not in rule.subjects:
        return None
    if rule.providers and subject.kind == "lane" and subject.destination not in rule.providers:
        return None
    evidence: list[str] = []
    counts: dict[str, float] = {}
    listings: list[Listing] = []
    if rule.state is not None:
        if assessment.state not in rule.state:
            return None
        bad = [f for f in assessment.findings if f.severity != "info"]
        evidence += [f"state {assessment.state} (score {assessment.score})"] + [f.reason for f in bad]
        counts["state"] = SEVERITY_RANK.get(assessment.state, 0)
        for f in bad:
            counts[f"cause:{f.cause}"] = SEVERITY_RANK[f.severity]
    if rule.metric is not None:
        providers = list(rule.providers) if rule.providers else None
        minimum = rule.min_volume
        if minimum is None and rule.metric in RATES:
            minimum = _health_min_volume(thresholds.config, rule.metric)
        found = assessment.metric(rule.metric, rule.window, providers, minimum or 0)
        if found is None:
            return None
        if rule.metric in RATES and found.volume < (minimum or 0):
            return None
        value = found.value
        if rule.above is not None and not value >= rule.above:
            return None
        if rule.below is not None and not value < rule.below:
            return None
        evidence.append(_describe(rule, found.value, found.count, found.volume))
        # a lower score is the worse one: stored negated so "grew" means "got worse"
        counts[rule.metric] = float(found.count if rule.metric in RATES
                                    else (-value if rule.metric == "score" else value))
        if rule.metric in RATES:
            counts["volume"] = float(found.volume)
    if rule.listed_on is not None:
        listings = [li for li in assessment.listings if _listing_wanted(rule.listed_on, li)]
        if not listings:
            return None
        for li in listings:
            codes = ", ".join(li.codes)
            meaning = f": {li.meaning}" if li.meaning else ""
            evidence.append(f"listed on {li.zone}" + (f" ({codes}{meaning})" if codes else "")
                            + (" - major list" if li.weight.major else ""))
            counts[f"listing:{li.zone}"] = li.since.timestamp() if li.since else 1.0
    return Match(rule, assessment, evidence, counts, listings)


def _listing_wanted(wanted: tuple[str, ...], listing: Listing) -> bool:
    if "any" in wanted:
        return True
    if "major" in wanted and listing.weight.major:
        return True
    zone = listing.zone.lower()
    return any(zone == w or zone.endswith("." + w) for w in wanted)


def _health_min_volume(config: HealthConfig, metric: str) -> int:
    threshold = getattr(config, metric, None)
    return getattr(threshold, "min_volume", 1) if threshold is not None else 1


def _describe(rule: PolicyRule, value: float, count: int, volume: int) -> str:
    if rule.metric in RATES:
        line = f">= {pct(rule.above)}" if rule.above is not None else f"< {pct(rule.below)}"
        return (f"{LABELS.get(rule.metric, rule.metric)} {pct(value)} ({count:,} of {volume:,}) over {rule.window} "
                f"{line}")
    label = _COUNT_LABELS.get(rule.metric or "", rule.metric or "")
    line = f">= {rule.above:g}" if rule.above is not None else f"< {rule.below:g}"
    if rule.metric == "score":
        return f"health score {value:g} {line}"
    return f"{value:g} {label} over {rule.window} {line}"


def evidence_grew(old: dict[str, float], new: dict[str, float]) -> bool:
    """Whether a rule that fired before has new grounds: more complaints (or
    deferrals, ...) than when its last action ended, a new listing, a worse state."""
    for key, value in new.items():
        if key == "volume":
            continue
        before = old.get(key)
        if before is None or value > before:
            return True
    return False
