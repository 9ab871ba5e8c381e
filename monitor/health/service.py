"""Gathering what an assessment needs (roll-up windows, listings, SNDS,
postmaster data), assessing every subject or only the ones new rows touched,
and storing the result in health_states."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from monitor.core.sql import table_names
from monitor.health.assess import (
    Assessment,
    Listing,
    PostmasterDay,
    SndsDay,
    SubjectInputs,
    Thresholds,
    assess,
)
from monitor.health.counts import Counts, window_start
from monitor.health.models import COUNTERS, HealthState
from monitor.health.rollup import RollupResult
from monitor.health.settings import HealthConfig
from monitor.health.subjects import DomainMapper, Subject, is_ip
from monitor.health.values import as_date, as_datetime, json_value
from monitor.health.windows import read_windows
from monitor.health.zones import ZoneTable
from monitor.signals import reading as signals
from sender import stats as sender_stats

log = logging.getLogger("repmon.health")


@dataclass
class Wanted:
    """Which subjects to assess: all, or the ones touched since the last pass."""

    full: bool = True
    ips: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)

    @classmethod
    def from_rollup(cls, result: RollupResult) -> Wanted:
        if result.full:
            return cls(full=True)
        ips = set(result.dirty_ips) | {ip for ip, _ in result.dirty_lanes}
        return cls(full=False, ips=ips, domains=set(result.dirty_domains))

    @property
    def empty(self) -> bool:
        return not self.full and not self.ips and not self.domains


class HealthService:
    """Health's own work on the [health] section: what the assessments need,
    the assessments, the lanes an IP has. `domains` (the sending domains) and
    `own_ips` (the sending addresses) come from other sections: the caller
    (monitor/loop.py) names them."""

    def __init__(self, engine: Engine, config: HealthConfig, *, domains: list[str], own_ips: set[str]) -> None:
        self.engine = engine
        self.config = config
        self.thresholds = Thresholds(config)
        self.zones = ZoneTable.from_config(config.zones)
        self.domains = list(domains)
        self.mapper = DomainMapper(self.domains)
        self.own_ips = set(own_ips)
        self._tables: set[str] | None = None

    def tables(self, conn: Connection) -> set[str]:
        if self._tables is None:
            self._tables = table_names(conn)
        return self._tables

    # -- assessing ---------------------------------------------------------------------

    def assess(self, conn: Connection, now: float, wanted: Wanted | None = None) -> list[Assessment]:
        return self.assess_inputs(self.gather(conn, now, wanted), now)

    def assess_inputs(self, inputs: list[SubjectInputs], now: float) -> list[Assessment]:
        """Pure computation: no database (so no lock is held while it runs)."""
        now_dt = datetime.fromtimestamp(now, UTC)
        return [assess(i, self.thresholds, now=now_dt) for i in inputs]

    def gather(self, conn: Connection, now: float, wanted: Wanted | None = None) -> list[SubjectInputs]:
        """What the assessment of the wanted subjects needs, read in one go."""
        wanted = wanted or Wanted()
        if wanted.empty:
            return []
        keys = None if wanted.full else {"ip": wanted.ips, "domain": wanted.domains}
        windows = read_windows(conn, now, keys=keys)
        listings, broken = self._listings(conn, None if wanted.full else wanted.ips | wanted.domains)
        today = datetime.fromtimestamp(now, UTC).date()
        snds, snds_blocked = self._snds(conn, today)
        postmaster = self._postmaster(conn, today)

        ips: set[str] = set()
        lanes: set[tuple[str, str]] = set()
        domains: set[str] = set()
        for by_key in windows.values():
            for (scope, key), by_dest in by_key.items():
                if scope == "ip":
                    ips.add(key)
                    lanes.update((key, d) for d in by_dest if d)
                elif scope == "domain":
                    domains.add(key)
        known_lanes = self._sender_lanes(conn)
        if wanted.full:
            ips |= self.own_ips | {ip for ip, _ in known_lanes} | set(snds) | set(snds_blocked)
            ips |= {t for t, items in listings.items() if is_ip(t)}
            domains |= set(self.domains) | set(postmaster) | {t for t in listings if not is_ip(t)}
            lanes |= known_lanes
        else:
            ips |= wanted.ips
            domains |= wanted.domains
            lanes |= {(ip, d) for ip, d in known_lanes if ip in wanted.ips}
        out: list[SubjectInputs] = []
        for ip in sorted(ips):
            out.append(SubjectInputs(Subject("ip", ip), _windows_for(windows, "ip", ip), listings.get(ip, []),
                                     broken.get(ip, []), snds.get(ip, []), snds_blocked.get(ip)))
        for ip, destination in sorted(lanes):
            per_window = {w: {destination: by.get(destination, Counts())}
                          for w, by in _windows_for(windows, "ip", ip).items()}
            out.append(SubjectInputs(Subject("lane", ip, destination), per_window, listings.get(ip, []),
                                     broken.get(ip, []), snds.get(ip, []) if destination == "microsoft" else [],
                                     snds_blocked.get(ip) if destination == "microsoft" else None))
        for domain in sorted(domains):
            out.append(SubjectInputs(Subject("domain", domain), _windows_for(windows, "domain", domain),
                                     listings.get(domain, []), broken.get(domain, []),
                                     postmaster=postmaster.get(domain, [])))
        return out

    def subject_keys(self, conn: Connection, now: float) -> tuple[set[str], set[str]]:
        """Every IP and domain a full assessment covers: data in the last 7
        days, configured ones, listed ones, postmaster / SNDS ones, and the
        ones assessed before (so a subject whose trouble aged out is seen again)."""
        ips: set[str] = set(self.own_ips)
        domains: set[str] = set(self.domains)
        for scope, key in conn.execute(text(
                "SELECT DISTINCT scope, key FROM health_counts WHERE grain = '1d' AND bucket >= :start "
                "AND scope IN ('ip', 'domain')"), {"start": window_start("7d", now)}):
            (ips if scope == "ip" else domains).add(key)
        listings, _broken = self._listings(conn, None)
        for target in listings:
            (ips if is_ip(target) else domains).add(target)
        ips |= {ip for ip, _ in self._sender_lanes(conn)}
        today = datetime.fromtimestamp(now, UTC).date()
        snds, blocked = self._snds(conn, today)
        ips |= set(snds) | set(blocked)
        domains |= set(self._postmaster(conn, today))
        if "health_states" in self.tables(conn):
            for subject, kind in conn.execute(text(
                    "SELECT subject, kind FROM health_states WHERE kind IN ('ip', 'domain')")):
                (ips if kind == "ip" else domains).add(subject.split(":", 1)[1])
        return ips, domains

    def assess_rdomains(self, conn: Connection, now: float, keys: set[str] | None = None) -> list[Assessment]:
        """Recipient domains with bounces or complaints in the last 7 days (day
        buckets only), for rules that suppress a recipient domain."""
        sums = ", ".join(f"SUM({c})" for c in COUNTERS)
        sql = (f"SELECT key, {sums} FROM health_counts WHERE grain = '1d' AND scope = 'rdomain' "
               f"AND bucket >= :start AND bucket <= :end")
        params: dict[str, Any] = {"start": window_start("7d", now), "end": int(now)}
        if keys is not None:
            if not keys:
                return []
            wanted = sorted(keys)[:5000]
            names = {f"k{i}": k for i, k in enumerate(wanted)}
            sql += f" AND key IN ({', '.join(':' + n for n in names)})"
            params.update(names)
        sql += " GROUP BY key HAVING SUM(hard_bounces) + SUM(soft_bounces) + SUM(complaints) > 0"
        now_dt = datetime.fromtimestamp(now, UTC)
        out = []
        for key, *values in conn.execute(text(sql), params):
            inputs = SubjectInputs(Subject("rdomain", key), {"7d": {"": Counts.of(values)}})
            out.append(assess(inputs, self.thresholds, now=now_dt))
        return out

    # -- inputs ----------------------------------------------------------------------------

    def _listings(self, conn: Connection,
                  targets: set[str] | None) -> tuple[dict[str, list[Listing]], dict[str, list[Listing]]]:
        tables = self.tables(conn)
        if not signals.has_listings(tables):
            return {}, {}
        broken = signals.broken_zones(conn) if signals.has_zone_health(tables) else set()
        rows = signals.listings(conn)
        listed: dict[str, list[Listing]] = {}
        ignored: dict[str, list[Listing]] = {}
        for target, zone, codes, reason, state, changed_at, delist_url in rows:
            if targets is not None and target not in targets and target.lower() not in targets:
                continue
            codes = json_value(codes) or []
            since = as_datetime(changed_at) if state == "listed" else None
            key = target if is_ip(target) else (self.mapper(target) or target.lower())
            listing = Listing(target, zone, tuple(codes), reason or "", state, since, delist_url,
                              self.zones.lookup(zone, codes))
            (ignored if zone in broken else listed).setdefault(key, []).append(listing)
        return listed, ignored

    def _snds(self, conn: Connection, today: date) -> tuple[dict[str, list[SndsDay]], dict[str, str]]:
        days: dict[str, list[SndsDay]] = {}
        blocked: dict[str, str] = {}
        tables = self.tables(conn)
        if signals.has_snds_days(tables):
            for ip, day, result, rate_value, rate_text, below, traps, recipients in signals.snds_ip_days(
                    conn, today - timedelta(days=7)):
                days.setdefault(ip, []).append(SndsDay(ip, as_date(day), result or "", rate_value, rate_text or "",
                                                       int(traps or 0), int(recipients or 0), bool(below)))
        if signals.has_snds_status(tables):
            ranges = signals.snds_blocked(conn)
            if ranges:
                candidates = self.own_ips | set(days)
                for first, last, reason in ranges:
                    try:
                        lo, hi = ipaddress.ip_address(first), ipaddress.ip_address(last)
                    except ValueError:
                        continue
                    for ip in candidates:
                        address = ipaddress.ip_address(ip) if is_ip(ip) else None
                        if address is not None and address.version == lo.version and lo <= address <= hi:  # type: ignore[operator]
                            blocked[ip] = reason or "blocked"
                    if lo == hi:
                        blocked.setdefault(str(lo), reason or "blocked")
        return days, blocked

    def _postmaster(self, conn: Connection, today: date) -> dict[str, list[PostmasterDay]]:
        if not signals.has_postmaster_days(self.tables(conn)):
            return {}
        merged: dict[tuple[str, date], dict[str, Any]] = {}
        for domain, day, _api, spam, upper, reputation, dmarc in signals.google_postmaster_days(
                conn, today - timedelta(days=7)):
            key = (self.mapper(domain) or domain, as_date(day))
            entry = merged.setdefault(key, {})
            # v2 first (ORDER BY api DESC), v1 fills what v2 lacks (reputation, the upper bound)
            value = upper if upper is not None else spam
            if entry.get("spam") is None:
                entry["spam"] = value
            entry.setdefault("reputation", reputation) if reputation else None
            if entry.get("dmarc") is None:
                entry["dmarc"] = dmarc
        out: dict[str, list[PostmasterDay]] = {}
        for (domain, day), entry in sorted(merged.items(), key=lambda kv: kv[0][1]):
            out.setdefault(domain, []).append(PostmasterDay(domain, day, entry.get("spam"), entry.get("reputation"),
                                                            entry.get("dmarc")))
        return out

    def _sender_lanes(self, conn: Connection) -> set[tuple[str, str]]:
        if not sender_stats.has_lanes(self.tables(conn)):
            return set()
        return sender_stats.lanes(conn)

    def lanes_of(self, conn: Connection, ip: str, now: float) -> set[str]:
        """Destinations the IP has sent to (sender lanes and the last 7 days of roll-ups)."""
        found = {d for i, d in self._sender_lanes(conn) if i == ip}
        for by_key in read_windows(conn, now, keys={"ip": {ip}}, windows=("7d", "24h")).values():
            found |= {d for d in by_key.get(("ip", ip), {}) if d}
        return found


def _windows_for(windows: dict[str, dict], scope: str, key: str) -> dict[str, dict[str, Counts]]:
    return {w: by_key.get((scope, key), {}) for w, by_key in windows.items()}




# --- storing ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StateChange:
    """What changed for one subject since the last stored assessment."""

    subject: str
    kind: str
    old_state: str | None
    new_state: str
    old_findings: dict[str, dict]  # cause -> finding
    new_findings: dict[str, dict]


class HealthStore:
    """health_states, with an in-memory copy so unchanged subjects cost no write."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, int, tuple[str, ...], dict[str, dict]]] | None = None

    def _load(self, conn: Connection) -> None:
        self._cache = {}
        for subject, state, score, reasons, findings in conn.execute(text(
                "SELECT subject, state, score, reasons, findings FROM health_states")):
            found = {f["cause"]: f for f in (json_value(findings) or [])}
            self._cache[subject] = (state, int(score), tuple(json_value(reasons) or []), found)

    def previous(self, conn: Connection) -> dict[str, tuple[str, int, tuple[str, ...], dict[str, dict]]]:
        if self._cache is None:
            self._load(conn)
        assert self._cache is not None
        return self._cache

    def save(self, conn: Connection, assessments: list[Assessment], now: float) -> list[StateChange]:
        cache = self.previous(conn)
        now_dt = datetime.fromtimestamp(now, UTC)
        changes: list[StateChange] = []
        rows: list[dict[str, Any]] = []
        for a in assessments:
            findings = {f.cause: f.as_dict() for f in a.findings}
            before = cache.get(a.name)
            key = (a.state, a.score, tuple(a.reasons))
            if before is not None and before[:3] == key:
                continue
            old_state = before[0] if before else None
            changes.append(StateChange(a.name, a.subject.kind, old_state, a.state, before[3] if before else {},
                                       findings))
            rows.append({"subject": a.name[:320], "kind": a.subject.kind, "state": a.state, "score": a.score,
                         "reasons": list(a.reasons), "findings": list(findings.values()), "figures": a.figures,
                         "evaluated_at": now_dt,
                         "changed_at": now_dt if old_state != a.state else None})
            cache[a.name] = (a.state, a.score, tuple(a.reasons), findings)
        if rows:
            table = HealthState.__table__  # type: ignore[attr-defined]
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            base = insert(table)
            kept = {k: base.excluded[k] for k in ("kind", "state", "score", "reasons", "findings", "figures",
                                                   "evaluated_at")}
            moved = [r for r in rows if r["changed_at"] is not None]
            same = [r for r in rows if r["changed_at"] is None]
            for r in same:
                r["changed_at"] = now_dt  # used only when the row is new
            if moved:
                conn.execute(base.on_conflict_do_update(index_elements=["subject"],
                                                        set_={**kept, "changed_at": base.excluded.changed_at}), moved)
            if same:
                conn.execute(base.on_conflict_do_update(index_elements=["subject"], set_=kept), same)
        return changes
