"""`repmon policy replay`: what the policy would have done on the stored
history, without doing it.

Time steps from `since` to now. At each step every subject is assessed as
it stood then - windows summed from the roll-up buckets up to that moment,
blocklist states rebuilt from the listing / delisting events, postmaster and
SNDS days up to that day - and the rules are applied with the same firing,
expiry, clearing and re-firing logic as the live policy (monitor/policy/
evaluate.py), to a simulated set of actions. Nothing is written.

Windows in the past come from the hour and day buckets (5-minute buckets are
kept 3 hours only), and only from buckets complete at that moment, so the
replay never sees the future: at a moment t the 1 h window is the last full
hour before t, 24 h the 24 full hours before it, 7 d the 7 full days. Older
than the hour buckets' keep (8 days), 1 h and 24 h become the last full day.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from monitor.health.assess import Assessment, Listing, PostmasterDay, SndsDay, SubjectInputs, assess
from monitor.health.clock import iso
from monitor.health.counts import COUNTERS, GRAIN_RETENTION_S, Counts, stored_buckets
from monitor.health.service import HealthService
from monitor.health.subjects import Subject, is_ip
from monitor.health.values import as_date, as_datetime, json_value
from monitor.policy.rules import Match, PolicyRule, compile_rules, evidence_grew, match
from monitor.policy.settings import PolicyConfig

# window -> (grain, seconds per bucket, buckets) for moments in the past
PAST_WINDOWS = {"1h": ("1h", 3600, 1), "24h": ("1h", 3600, 24), "7d": ("1d", 86400, 7)}
# before the hour buckets' keep (8 days), the short windows fall back on the last full day
COARSE_WINDOWS = {"1h": ("1d", 86400, 1), "24h": ("1d", 86400, 1), "7d": ("1d", 86400, 7)}


@dataclass
class _Series:
    """Prefix sums of one (scope, key, destination) in one grain."""

    buckets: list[int] = field(default_factory=list)
    prefix: list[list[int]] = field(default_factory=list)

    def add(self, bucket: int, values: list[int]) -> None:
        last = self.prefix[-1] if self.prefix else [0] * len(values)
        self.buckets.append(bucket)
        self.prefix.append([a + b for a, b in zip(last, values, strict=False)])

    def between(self, start: int, end: int) -> list[int] | None:
        lo = bisect.bisect_left(self.buckets, start)
        hi = bisect.bisect_right(self.buckets, end) - 1
        if hi < lo:
            return None
        before = self.prefix[lo - 1] if lo > 0 else [0] * len(COUNTERS)
        return [a - b for a, b in zip(self.prefix[hi], before, strict=False)]


@dataclass
class ReplayedAction:
    subject: str
    action: str
    rule: str
    evidence: list[str]
    started: float
    expires: float | None
    ended: float | None = None
    end_reason: str | None = None
    counts: dict[str, float] = field(default_factory=dict)
    destinations: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "action": self.action, "rule": self.rule, "evidence": self.evidence,
                "destinations": self.destinations, "started": iso(self.started), "expires": iso(self.expires),
                "ended": iso(self.ended), "end_reason": self.end_reason}


class Replay:
    """The [policy] rules replayed on `conn`'s history; `service` (health's
    API) gives the thresholds, the domain mapping and the zone table."""

    def __init__(self, conn: Connection, config: PolicyConfig, service: HealthService) -> None:
        self.config = config
        self.conn = conn
        self.service = service
        self.rules: list[PolicyRule] = compile_rules(config)
        self.series: dict[str, dict[tuple[str, str, str], _Series]] = {"1h": {}, "1d": {}}
        self.tables = set(inspect(conn).get_table_names())
        self.hour_floor = float("-inf")

    def run(self, since: float, now: float, step: float) -> list[ReplayedAction]:
        self.hour_floor = now - GRAIN_RETENTION_S["1h"] + 3600
        self._load_counts(since - 8 * 86400, now)
        listing_history = self._load_listings()
        postmaster = self._load_postmaster(since)
        snds = self._load_snds(since)
        active: dict[tuple[str, str], ReplayedAction] = {}
        done: list[ReplayedAction] = []
        last_end: dict[tuple[str, str], ReplayedAction] = {}
        cleared: set[tuple[str, str]] = set()
        t = since
        while t <= now:
            for key, action in list(active.items()):
                if action.expires is not None and action.expires <= t:
                    action.ended, action.end_reason = action.expires, "expired"
                    done.append(active.pop(key))
                    last_end[key] = action
            for a in self._assess_at(t, listing_history, postmaster, snds):
                for rule in self.rules:
                    if a.subject.kind not in rule.subjects:
                        continue
                    key = (rule.name, a.name)
                    found = match(rule, a, self.service.thresholds)
                    running = active.get(key)
                    if found is None:
                        if running is not None and rule.until == "clear":
                            running.ended, running.end_reason = t, "cleared"
                            done.append(active.pop(key))
                            last_end[key] = running
                        elif running is None:
                            cleared.add(key)
                        continue
                    if running is not None:
                        continue
                    previous = last_end.get(key)
                    if previous is not None and previous.end_reason != "cleared" and key not in cleared \
                            and not evidence_grew(previous.counts, found.counts):
                        continue
                    active[key] = self._start(rule, found, t)
                    cleared.discard(key)
            t += step
        return sorted(done + list(active.values()), key=lambda r: (r.started, r.subject, r.rule))

    def _start(self, rule: PolicyRule, found: Match, t: float) -> ReplayedAction:
        subject = found.assessment.subject
        if rule.action in ("pause", "slow"):
            if subject.kind == "lane":
                destinations = ["*"] if rule.scope == "ip" else [subject.destination]
            elif rule.scope == "zone_users" and found.listings and not any(
                    "*" in li.weight.used_by and not li.weight.not_used_by for li in found.listings):
                lanes = {d for (scope, key, d) in self.series["1h"] if scope == "ip" and key == subject.key and d}
                destinations = sorted(d for d in lanes if any(li.weight.affects(d) for li in found.listings))
            else:
                destinations = ["*"]
        else:
            destinations = []
        return ReplayedAction(str(subject), rule.action, rule.name, list(found.evidence), t,
                              t + rule.duration if rule.duration is not None else None, counts=found.counts,
                              destinations=destinations)

    # -- history --------------------------------------------------------------------------

    def _load_counts(self, start: float, end: float) -> None:
        for grain in ("1h", "1d"):
            series = self.series[grain]
            for bucket, scope, key, dest, values in stored_buckets(self.conn, grain, start, end):
                series.setdefault((scope, key, dest), _Series()).add(bucket, values)

    def _windows_at(self, t: float) -> dict[tuple[str, str], dict[str, dict[str, Counts]]]:
        out: dict[tuple[str, str], dict[str, dict[str, Counts]]] = {}
        table = PAST_WINDOWS if t - 86400 >= self.hour_floor else COARSE_WINDOWS
        for window, (grain, seconds, buckets) in table.items():
            # only buckets complete at t: a bucket also holds what happened after t
            end = int(t // seconds) * seconds
            start = end - buckets * seconds
            for (scope, key, dest), series in self.series[grain].items():
                values = series.between(start, end - 1)
                if values is None or not any(values):
                    continue
                out.setdefault((scope, key), {}).setdefault(window, {})[dest] = Counts.of(values)
        return out

    def _load_listings(self) -> list[tuple[float, str, str, str, tuple[str, ...], str]]:
        """(when, target, zone, state, codes, reason) of every listing change, oldest first."""
        if "signal_events" not in self.tables:
            return []
        rows = self.conn.execute(text(
            "SELECT occurred_at, subject, zone, kind, codes, reason, details FROM signal_events "
            "WHERE source = 'dnsbl' ORDER BY occurred_at, id")).all()
        out = []
        for occurred, target, zone, kind, codes, reason, details in rows:
            details = json_value(details) or {}
            state = details.get("current") or {"listed": "listed", "delisted": "clean", "codes_changed": "listed",
                                               "unknown": "unknown"}.get(kind)
            when = as_datetime(occurred)
            if state is None or zone is None or when is None:
                continue
            out.append((when.timestamp(), target, zone, state, tuple(json_value(codes) or ()), reason or ""))
        return out

    def _listings_at(self, history, t: float) -> dict[str, list[Listing]]:
        states: dict[tuple[str, str], tuple[str, tuple[str, ...], str, float, str]] = {}
        for when, target, zone, state, codes, reason in history:
            if when > t:
                break
            before = states.get((target, zone))
            if state == "unknown":
                if before is not None:
                    last_known = before[0] if before[0] != "unknown" else before[4]
                    states[(target, zone)] = ("unknown",) + before[1:4] + (last_known,)
                continue
            since = before[3] if before is not None and before[0] == state else when
            states[(target, zone)] = (state, codes, reason, since, state)
        out: dict[str, list[Listing]] = {}
        for (target, zone), (state, codes, reason, since, last_known) in states.items():
            if state == "listed" or (state == "unknown" and last_known == "listed"):
                key = target if is_ip(target) else (self.service.mapper(target) or target)
                out.setdefault(key, []).append(Listing(
                    target, zone, codes, reason, "listed" if state == "listed" else "unknown",
                    datetime.fromtimestamp(since, UTC), None, self.service.zones.lookup(zone, codes)))
        return out

    def _load_postmaster(self, since: float) -> list[PostmasterDay]:
        if "postmaster_domain_days" not in self.tables:
            return []
        first = datetime.fromtimestamp(since, UTC).date() - timedelta(days=8)
        out = []
        for domain, day, spam, upper, reputation, dmarc in self.conn.execute(text(
                "SELECT domain, day, spam_rate, spam_rate_upper, domain_reputation, dmarc_success_rate "
                "FROM postmaster_domain_days WHERE provider = 'google' AND day >= :first ORDER BY day"),
                {"first": first}):
            out.append(PostmasterDay(self.service.mapper(domain) or domain, as_date(day),
                                     upper if upper is not None else spam, reputation, dmarc))
        return out

    def _load_snds(self, since: float) -> list[SndsDay]:
        if "snds_ip_days" not in self.tables:
            return []
        first = datetime.fromtimestamp(since, UTC).date() - timedelta(days=8)
        return [SndsDay(ip, as_date(day), result or "", rate, rate_text or "", int(traps or 0), int(rcpt or 0),
                        bool(below))
                for ip, day, result, rate, rate_text, below, traps, rcpt in self.conn.execute(text(
                    "SELECT ip, day, filter_result, complaint_rate, complaint_rate_text, complaint_rate_below, "
                    "trap_hits, message_recipients FROM snds_ip_days WHERE day >= :first ORDER BY day"),
                    {"first": first})]

    def _assess_at(self, t: float, listing_history, postmaster: list[PostmasterDay],
                   snds: list[SndsDay]) -> list[Assessment]:
        day = datetime.fromtimestamp(t, UTC).date()
        windows = self._windows_at(t)
        listings = self._listings_at(listing_history, t)
        pm: dict[str, list[PostmasterDay]] = {}
        for d in postmaster:
            if day - timedelta(days=7) <= d.day <= day:
                pm.setdefault(d.domain, []).append(d)
        sn: dict[str, list[SndsDay]] = {}
        for s in snds:
            if day - timedelta(days=7) <= s.day <= day:
                sn.setdefault(s.ip, []).append(s)
        ips = {k for (s, k) in windows if s == "ip"} | {k for k in listings if is_ip(k)}
        domains = {k for (s, k) in windows if s == "domain"} | {k for k in listings if not is_ip(k)} | set(pm)
        now_dt = datetime.fromtimestamp(t, UTC)
        out = []
        for ip in sorted(ips):
            per = windows.get(("ip", ip), {})
            out.append(assess(SubjectInputs(Subject("ip", ip), per, listings.get(ip, []), [], sn.get(ip, [])),
                              self.service.thresholds, now=now_dt))
            for dest in sorted({d for by in per.values() for d in by if d}):
                lane = {w: {dest: by[dest]} for w, by in per.items() if dest in by}
                out.append(assess(SubjectInputs(Subject("lane", ip, dest), lane, listings.get(ip, []), [],
                                                sn.get(ip, []) if dest == "microsoft" else []),
                                  self.service.thresholds, now=now_dt))
        for domain in sorted(domains):
            out.append(assess(SubjectInputs(Subject("domain", domain), windows.get(("domain", domain), {}),
                                            listings.get(domain, []), postmaster=pm.get(domain, [])),
                              self.service.thresholds, now=now_dt))
        return out


