"""From figures to a state, a 0-100 score and the reasons (pure functions).

Every finding names the figure, the window and the threshold it crossed, so
a person reading `repmon health` or an alert knows why without looking
anything up. The score starts at 100 and loses each finding's penalty; a
finding may cap it (a complaint rate over the hard line caps it at 30), and
the state caps it too (warning <= 79, critical <= 49, blocked <= 19), so
score and state never contradict each other. Weights follow the synthesis in
the research notes (monitoring-anchors.md, "proposed per-entity health score").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from monitor.health.counts import RATES, WINDOWS, Counts, Rate, rate
from monitor.health.settings import HealthConfig, PassRateThreshold, RateThreshold
from monitor.health.subjects import Subject
from monitor.health.zones import ZoneWeight

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2, "blocked": 3}
STATES = ("healthy", "warning", "critical", "blocked")
STATE_CAP = {"healthy": 100, "warning": 79, "critical": 49, "blocked": 19}
NO_FEEDBACK_LOOP = frozenset({"google"})  # providers whose complaints we can never see per message
SNDS_DESTINATIONS = frozenset({"microsoft"})  # SNDS covers Outlook.com / Hotmail

LABELS = {
    "complaint_rate": "complaint rate",
    "spam_rate": "Gmail spam rate",
    "hard_bounce_rate": "hard bounce rate",
    "bounce_rate": "bounce rate",
    "deferral_rate": "deferral rate",
    "block_rate": "reputation block rate",
    "dmarc_pass_rate": "DMARC pass rate",
    "dkim_pass_rate": "DKIM pass rate",
    "spf_pass_rate": "SPF pass rate",
    "hostunknown_rate": "host-unknown rate",
}
# metric -> (penalty at warning, penalty at the critical line, penalty when critical, score cap when critical)
PENALTIES = {
    "complaint_rate": (10, 40, 40, 30),
    "spam_rate": (10, 40, 40, 30),
    "hard_bounce_rate": (5, 20, 20, 40),
    "bounce_rate": (5, 15, 20, 50),
    "deferral_rate": (5, 15, 25, 60),
    "block_rate": (10, 30, 40, 19),
}
# a rate that crosses its critical line with this metric makes the subject blocked
BLOCKING_METRICS = frozenset({"block_rate"})


def pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    text = f"{value * 100:.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


# --- inputs -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Listing:
    target: str
    zone: str
    codes: tuple[str, ...]
    meaning: str
    state: str  # listed | unknown (then it was listed when last known)
    since: datetime | None
    delist_url: str | None
    weight: ZoneWeight


@dataclass(frozen=True, slots=True)
class SndsDay:
    ip: str
    day: date
    filter_result: str
    complaint_rate: float | None
    complaint_rate_text: str
    trap_hits: int
    recipients: int
    complaint_rate_below: bool = False  # the feed only said "< x%"


@dataclass(frozen=True, slots=True)
class PostmasterDay:
    domain: str
    day: date
    spam_rate: float | None  # the upper bound when Google gives one
    reputation: str | None
    dmarc_success_rate: float | None


@dataclass
class SubjectInputs:
    subject: Subject
    # window -> destination -> counters ("" = not tied to a destination, e.g. DMARC)
    windows: dict[str, dict[str, Counts]] = field(default_factory=dict)
    listings: list[Listing] = field(default_factory=list)
    broken_listings: list[Listing] = field(default_factory=list)  # on zones that list everyone
    snds: list[SndsDay] = field(default_factory=list)
    snds_blocked: str | None = None
    postmaster: list[PostmasterDay] = field(default_factory=list)


# --- outputs ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    cause: str  # what it is about, stable across passes: "complaint_rate:yahoo", "listing:zen.spamhaus.org"
    severity: str  # info | warning | critical | blocked
    title: str  # short, for alert headlines
    reason: str  # the whole sentence: figure, window, threshold
    penalty: float = 0.0
    cap: int | None = None
    metric: str | None = None
    window: str | None = None
    value: float | None = None
    count: int | None = None
    volume: int | None = None
    threshold: float | None = None
    provider: str | None = None
    zone: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Assessment:
    subject: Subject
    state: str
    score: int
    findings: list[Finding]
    reasons: list[str]
    counts: dict[str, dict[str, Counts]]  # window -> destination -> counters
    figures: dict[str, Any]
    listings: list[Listing] = field(default_factory=list)
    postmaster: list[PostmasterDay] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.subject)

    def total(self, window: str, providers: list[str] | None = None) -> Counts:
        total = Counts()
        for destination, counts in self.counts.get(window, {}).items():
            if providers is None or destination in providers:
                total.add(counts)
        return total

    def metric(self, metric: str, window: str, providers: list[str] | None = None,
               min_volume: int = 0) -> Rate | None:
        """A figure for policy rules. Complaint rates of an IP or domain are
        per provider (complaints over delivered at that provider): the worst
        provider with volume counts. Gmail's spam rate is the latest
        Postmaster Tools day."""
        if metric == "score":
            return Rate(float(self.score), 0, 0)
        if metric == "spam_rate":
            days = [d for d in self.postmaster if d.spam_rate is not None]
            return Rate(days[-1].spam_rate, 0, 0) if days else None  # type: ignore[arg-type]
        if metric == "complaint_rate" and self.subject.kind in ("ip", "domain"):
            best: Rate | None = None
            for destination, counts in self.counts.get(window, {}).items():
                if destination in NO_FEEDBACK_LOOP or not destination:
                    continue
                if providers is not None and destination not in providers:
                    continue
                found = rate(counts, metric)
                if found is None or found.volume < min_volume:
                    continue  # a provider with too little mail cannot hide one that has enough
                if best is None or found.value > best.value:
                    best = found
            return best
        total = self.total(window, providers)
        if metric in RATES:
            if metric == "complaint_rate" and self.subject.destination in NO_FEEDBACK_LOOP:
                return None
            return rate(total, metric)
        value = total.bounces if metric == "bounces" else getattr(total, metric)
        return Rate(float(value), int(value), 0)

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.name, "state": self.state, "score": self.score, "reasons": list(self.reasons)}


# --- thresholds ---------------------------------------------------------------------------

class Thresholds:
    def __init__(self, config: HealthConfig) -> None:
        self.config = config

    def rate(self, metric: str, provider: str | None = None) -> RateThreshold:
        if provider:
            own = self.config.providers.get(provider)
            if own is not None and getattr(own, metric, None) is not None:
                return getattr(own, metric)
        return getattr(self.config, metric)

    def pass_rate(self, metric: str) -> PassRateThreshold:
        return getattr(self.config, metric)


# --- the assessment ---------------------------------------------------------------------------

def assess(inputs: SubjectInputs, thresholds: Thresholds, *, now: datetime | None = None) -> Assessment:
    subject = inputs.subject
    findings: list[Finding] = []
    notes: list[str] = []  # healthy figures, for the reasons of a healthy subject
    windows = inputs.windows

    def totals(providers: set[str] | None = None) -> dict[str, Counts]:
        out = {}
        for window, by_dest in windows.items():
            total = Counts()
            for destination, counts in by_dest.items():
                if providers is None or destination in providers:
                    total.add(counts)
            out[window] = total
        return out

    destinations = sorted({d for by_dest in windows.values() for d in by_dest if d})
    # complaints: per provider (a lane is one provider)
    for destination in destinations:
        if subject.kind == "lane" and destination != subject.destination:
            continue
        if destination in NO_FEEDBACK_LOOP:
            if subject.kind == "lane":
                notes.append(f"{destination} sends no feedback loop: its spam rate comes from Postmaster Tools "
                             "per sending domain")
            continue
        per_dest = {w: by_dest.get(destination, Counts()) for w, by_dest in windows.items()}
        where = None if subject.kind == "lane" else destination
        _judge_rate(findings, notes, "complaint_rate", per_dest, thresholds.rate("complaint_rate", destination),
                    provider=where, cause_suffix=where)

    all_totals = totals()
    for metric in ("hard_bounce_rate", "bounce_rate", "block_rate"):
        _judge_rate(findings, notes, metric, all_totals, thresholds.rate(metric))
    deferral_provider = subject.destination if subject.kind == "lane" else None
    _judge_rate(findings, notes, "deferral_rate", all_totals, thresholds.rate("deferral_rate", deferral_provider))
    for metric in ("dmarc_pass_rate", "dkim_pass_rate"):
        _judge_pass_rate(findings, notes, metric, all_totals, thresholds.pass_rate(metric))

    _judge_listings(findings, notes, inputs, subject)
    if subject.kind == "ip" or (subject.kind == "lane" and subject.destination in SNDS_DESTINATIONS):
        _judge_snds(findings, inputs, thresholds)
    if subject.kind == "domain":
        _judge_postmaster(findings, notes, inputs, thresholds)

    state = "healthy"
    for finding in findings:
        if SEVERITY_RANK[finding.severity] > SEVERITY_RANK.get(state, 0) and finding.severity != "info":
            state = finding.severity
    score = 100.0 - sum(f.penalty for f in findings)
    for finding in findings:
        if finding.cap is not None:
            score = min(score, finding.cap)
    score = int(max(0, min(round(score), STATE_CAP[state])))

    findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], -f.penalty, f.cause))
    reasons = [f.reason for f in findings if f.severity != "info"]
    if not reasons:
        reasons = [f.reason for f in findings] + notes
        reasons = reasons[:6]
        if not reasons:
            reasons = ["no sending, bounces, complaints or listings in the last 7 days"]
    figures = _figures(inputs, windows)
    return Assessment(subject, state, score, findings, reasons, windows, figures, inputs.listings, inputs.postmaster)


def _judge_rate(findings: list[Finding], notes: list[str], metric: str, by_window: dict[str, Counts],
                threshold: RateThreshold, *, provider: str | None = None, cause_suffix: str | None = None) -> None:
    label = LABELS[metric]
    at = f" at {provider}" if provider else ""
    den_name = RATES[metric][2]
    worst: tuple[int, Finding] | None = None
    quiet: str | None = None
    for window in threshold.windows:
        counts = by_window.get(window)
        found = rate(counts, metric) if counts is not None else None
        if found is None or found.volume < threshold.min_volume:
            continue
        severity, line = None, None
        if threshold.critical is not None and found.value >= threshold.critical:
            severity, line = "critical", threshold.critical
        elif threshold.warning is not None and found.value >= threshold.warning:
            severity, line = "warning", threshold.warning
        figure = f"{label}{at} {pct(found.value)} ({found.count:,} of {found.volume:,} {den_name}) over {window}"
        if severity is None:
            if quiet is None and threshold.warning is not None:
                quiet = f"{figure}, below the warning line {pct(threshold.warning)}"
            continue
        if metric in BLOCKING_METRICS and severity == "critical":
            severity = "blocked"
        low, high, crit, cap = PENALTIES[metric]
        if severity == "warning":
            span = ((threshold.critical - threshold.warning)
                    if threshold.critical and threshold.warning is not None else 0)
            share = min(1.0, (found.value - threshold.warning) / span) if span > 0 else 0.0  # type: ignore[operator]
            penalty, cap_value = low + (high - low) * share, None
        else:
            penalty, cap_value = crit, cap
        word = {"warning": "warning", "critical": "critical", "blocked": "critical"}[severity]
        finding = Finding(
            cause=f"{metric}:{cause_suffix}" if cause_suffix else metric, severity=severity,
            title=f"{label}{at} {pct(found.value)} over {window}",
            reason=f"{figure} >= {word} threshold {pct(line)}", penalty=penalty, cap=cap_value, metric=metric,
            window=window, value=found.value, count=found.count, volume=found.volume, threshold=line,
            provider=provider)
        rank = SEVERITY_RANK[severity]
        if worst is None or rank > worst[0]:
            worst = (rank, finding)
    if worst is not None:
        findings.append(worst[1])
    elif quiet is not None:
        notes.append(quiet)


def _judge_pass_rate(findings: list[Finding], notes: list[str], metric: str, by_window: dict[str, Counts],
                     threshold: PassRateThreshold) -> None:
    label = LABELS[metric]
    for window in threshold.windows:
        counts = by_window.get(window)
        found = rate(counts, metric) if counts is not None else None
        if found is None or found.volume < threshold.min_volume:
            continue
        figure = (f"{label} {pct(found.value)} ({found.count:,} of {found.volume:,} messages in DMARC reports) "
                  f"over {window}")
        if threshold.critical is not None and found.value < threshold.critical:
            severity, line, penalty, cap = "critical", threshold.critical, 25, 60
        elif threshold.warning is not None and found.value < threshold.warning:
            severity, line, penalty, cap = "warning", threshold.warning, 10, None
        else:
            notes.append(f"{figure}, at or above {pct(threshold.warning)}")
            continue
        findings.append(Finding(
            cause=metric, severity=severity, title=f"{label} {pct(found.value)} over {window}",
            reason=f"{figure} < {severity} threshold {pct(line)}", penalty=penalty, cap=cap, metric=metric,
            window=window, value=found.value, count=found.count, volume=found.volume, threshold=line))
        return


def _judge_listings(findings: list[Finding], notes: list[str], inputs: SubjectInputs, subject: Subject) -> None:
    for listing in inputs.broken_listings:
        notes.append(f"{listing.zone} answers as if it listed everyone (broken zone): its listing of "
                     f"{listing.target} is ignored")
    if not inputs.listings and subject.kind in ("ip", "domain"):
        notes.append("not listed on any monitored blocklist")
    for listing in inputs.listings:
        weight = listing.weight
        codes = ", ".join(listing.codes)
        meaning = f" ({codes}: {listing.meaning})" if listing.meaning else (f" ({codes})" if codes else "")
        since = f" since {listing.since.strftime('%Y-%m-%d %H:%M')}Z" if listing.since else ""
        held = " (state unknown now: the zone did not answer; last known listed)" if listing.state == "unknown" else ""
        delist = f"; delist: {listing.delist_url}" if listing.delist_url else ""
        affected = subject.kind != "lane" or weight.affects(subject.destination)
        if weight.major and affected:
            severity, cap = "blocked", 19
            who = ("receivers block on it" if subject.kind != "lane"
                   else f"{subject.destination} is among the receivers that use it")
            detail = f"major list, {who}"
        elif not affected:
            notes.append(f"listed on {listing.zone}{meaning}, which {subject.destination} does not use")
            continue
        else:
            severity = "critical" if weight.weight >= 20 else "warning" if weight.weight >= 10 else "info"
            cap, detail = None, f"weight {weight.weight:g}"
        findings.append(Finding(
            cause=f"listing:{listing.zone}", severity=severity, title=f"listed on {listing.zone}",
            reason=f"listed on {listing.zone}{meaning}{since}{held}: {detail}{delist}", penalty=weight.weight,
            cap=cap, zone=listing.zone))


def _judge_snds(findings: list[Finding], inputs: SubjectInputs, thresholds: Thresholds) -> None:
    if inputs.snds_blocked:
        findings.append(Finding(cause="snds:blocked", severity="blocked", title="blocked by Microsoft (SNDS)",
                                reason=f"Microsoft SNDS lists the IP as blocked: {inputs.snds_blocked}",
                                penalty=50, cap=19, provider="microsoft"))
    if not inputs.snds:
        return
    day = max(inputs.snds, key=lambda d: d.day)
    when = day.day.isoformat()
    if day.filter_result.upper() == "RED":
        findings.append(Finding(cause="snds:filter", severity="critical", title="SNDS filter result RED",
                                reason=f"Microsoft SNDS filter result RED on {when} (most of the mail judged spam)",
                                penalty=35, provider="microsoft"))
    elif day.filter_result.upper() == "YELLOW":
        findings.append(Finding(cause="snds:filter", severity="warning", title="SNDS filter result YELLOW",
                                reason=f"Microsoft SNDS filter result YELLOW on {when} (part of the mail judged spam)",
                                penalty=15, provider="microsoft"))
    if day.trap_hits > 0:
        findings.append(Finding(cause="snds:traps", severity="warning", title=f"{day.trap_hits} spam trap hits (SNDS)",
                                reason=f"Microsoft SNDS counted {day.trap_hits} spam trap hits on {when}",
                                penalty=10, provider="microsoft", count=day.trap_hits))
    threshold = thresholds.rate("complaint_rate", "microsoft")
    if day.complaint_rate is not None and not day.complaint_rate_below and day.recipients >= threshold.min_volume:
        line = None
        if threshold.critical is not None and day.complaint_rate >= threshold.critical:
            severity, line, penalty, cap = "critical", threshold.critical, 40, 30
        elif threshold.warning is not None and day.complaint_rate >= threshold.warning:
            severity, line, penalty, cap = "warning", threshold.warning, 15, None
        if line is not None:
            findings.append(Finding(
                cause="snds:complaint_rate", severity=severity, title=f"SNDS complaint rate {day.complaint_rate_text}",
                reason=f"Microsoft SNDS complaint rate {day.complaint_rate_text} on {when} ({day.recipients:,} "
                       f"recipients) >= {severity} threshold {pct(line)}", penalty=penalty, cap=cap,
                metric="complaint_rate", value=day.complaint_rate, threshold=line, provider="microsoft"))


def _judge_postmaster(findings: list[Finding], notes: list[str], inputs: SubjectInputs, thresholds: Thresholds) -> None:
    days = sorted(inputs.postmaster, key=lambda d: d.day)
    spam_days = [d for d in days if d.spam_rate is not None]
    threshold = thresholds.rate("spam_rate")
    if spam_days:
        last = spam_days[-1]
        value = last.spam_rate or 0.0
        figure = f"Gmail spam rate {pct(value)} on {last.day.isoformat()} (Postmaster Tools)"
        severity = None
        if threshold.critical is not None and value >= threshold.critical:
            severity, line = "critical", threshold.critical
        elif threshold.warning is not None and value >= threshold.warning:
            severity, line = "warning", threshold.warning
        if severity:
            low, high, crit, cap = PENALTIES["spam_rate"]
            findings.append(Finding(
                cause="spam_rate", severity=severity, title=f"Gmail spam rate {pct(value)}",
                reason=f"{figure} >= {severity} threshold {pct(line)}", penalty=crit if severity == "critical" else low,
                cap=cap if severity == "critical" else None, metric="spam_rate", window="24h", value=value,
                threshold=line, provider="google"))
        else:
            notes.append(f"{figure}, below the warning line {pct(threshold.warning)}")
            over = [d for d in spam_days if threshold.critical is not None and (d.spam_rate or 0) >= threshold.critical]
            if over:
                worst = over[-1]
                findings.append(Finding(
                    cause="spam_rate_history", severity="warning", title="Gmail spam rate was over the hard line",
                    reason=f"Gmail spam rate was {pct(worst.spam_rate)} on {worst.day.isoformat()}, at or above "
                           f"{pct(threshold.critical)}: Gmail grants no mitigation until it stays below for 7 "
                           "consecutive days", penalty=10, provider="google"))
    reputations = [d for d in days if d.reputation]
    if reputations:
        last = reputations[-1]
        level = last.reputation.upper()  # type: ignore[union-attr]
        mapping = {"BAD": ("critical", 40, 30), "LOW": ("warning", 20, None), "MEDIUM": ("info", 5, None)}
        if level in mapping:
            severity, penalty, reputation_cap = mapping[level]
            findings.append(Finding(cause="reputation", severity=severity, title=f"Gmail domain reputation {level}",
                                    reason=f"Gmail domain reputation {level} on {last.day.isoformat()} "
                                           "(Postmaster Tools)",
                                    penalty=penalty, cap=reputation_cap, provider="google"))
    dmarc_days = [d for d in days if d.dmarc_success_rate is not None]
    if dmarc_days:
        last = dmarc_days[-1]
        dmarc_line = thresholds.pass_rate("dmarc_pass_rate")
        line_w, line_c = dmarc_line.warning, dmarc_line.critical
        value = last.dmarc_success_rate or 0.0
        severity = ("critical" if line_c is not None and value < line_c else
                    "warning" if line_w is not None and value < line_w else None)
        if severity:
            dmarc_threshold = line_c if severity == "critical" else line_w
            findings.append(Finding(
                cause="postmaster_dmarc", severity=severity, title=f"Gmail DMARC success {pct(value)}",
                reason=f"Gmail DMARC success rate {pct(value)} on {last.day.isoformat()} (Postmaster Tools) < "
                       f"{severity} threshold {pct(dmarc_threshold)}", penalty=10 if severity == "warning" else 25,
                metric="dmarc_pass_rate", value=value, threshold=dmarc_threshold, provider="google"))


def _figures(inputs: SubjectInputs, windows: dict[str, dict[str, Counts]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for window in WINDOWS:
        by_dest = windows.get(window, {})
        total = Counts()
        for counts in by_dest.values():
            total.add(counts)
        entry: dict[str, Any] = {k: v for k, v in total.as_dict().items() if v}
        for metric in RATES:
            found = rate(total, metric)
            if found is not None:
                entry[metric] = round(found.value, 6)
        destinations = {d: {k: v for k, v in c.as_dict().items() if v}
                        for d, c in by_dest.items() if d and not c.is_empty()}
        if len(destinations) > 1 or (destinations and inputs.subject.kind != "lane"):
            entry["by_destination"] = destinations
        out[window] = entry
    if inputs.listings:
        out["listings"] = [{"zone": li.zone, "codes": list(li.codes), "state": li.state,
                            "since": li.since.isoformat() if li.since else None} for li in inputs.listings]
    if inputs.postmaster:
        last_pm = max(inputs.postmaster, key=lambda d: d.day)
        out["postmaster"] = {"day": last_pm.day.isoformat(), "spam_rate": last_pm.spam_rate,
                             "reputation": last_pm.reputation}
    if inputs.snds:
        last_snds = max(inputs.snds, key=lambda d: d.day)
        out["snds"] = {"day": last_snds.day.isoformat(), "filter_result": last_snds.filter_result,
                       "complaint_rate": last_snds.complaint_rate, "trap_hits": last_snds.trap_hits}
    return out
