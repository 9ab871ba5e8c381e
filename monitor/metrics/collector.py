"""The Prometheus collector: reads the database when Prometheus scrapes.

Each family (events, dmarc, dnsbl, sender lanes, ...) is a few aggregate
queries. Counters over tables that only grow are kept as running totals
(monitor/metrics/totals.py) so a scrape reads only the new rows; gauges are
current states (suppressions, listings, queue depth) read through indexed
queries. The results are kept for `refresh_s` seconds, so several Prometheus
servers or a short scrape interval do not multiply the database load.

Labels that come from reports (DMARC and TLS policy domains) are capped per
family: the first `series_limit` values, by volume, keep series of their own
and the rest share "other" (`LabelCap`), so one hostile TLS report with
10,000 policy domains adds one series, not 30,000. A value once given a
series keeps it (a counter must not move between series).

A family whose table is missing (a database not upgraded yet, a part not
installed) or whose query fails is left out of that scrape, never the whole
scrape; `repmon_metrics_family_up` and `repmon_metrics_collect_errors_total`
say which and why.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.alerts import stats as alert_stats
from monitor.health import stats as health_stats
from monitor.metrics import version
from monitor.metrics.catalog import COUNTER, METRICS
from monitor.metrics.totals import Counted, Key, RunningTotals, Scan, mapped
from monitor.policy import stats as policy_stats
from monitor.signals import reading as signals
from monitor.storage import reading as storage
from sender import stats as sender_stats
from sender.lanes import LaneKey

log = logging.getLogger("repmon.metrics")

Values = dict[tuple[str, ...], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

OTHER = "other"
UNROUTED = "unrouted"
MX_OTHER = "mx:other"  # every per-MX-host lane ("mx:<host>") shares this label value
# PostgreSQL: rows are settled into the running totals once their id was seen
# this long ago (no transaction of ours stays open that long).
PG_SETTLE_S = 300.0
PG_START_MARGIN = 10_000

FEEDBACK_TYPES = frozenset({"abuse", "auth-failure", "fraud", "not-spam", "opt-out", "other", "virus"})
AUTH_FAILURES = frozenset({"adsp", "bodyhash", "dkim", "dmarc", "revoked", "signature", "spf"})
TLS_RESULT_TYPES = frozenset({
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
    "sts-policy-invalid", "sts-webpki-invalid",
})
ZONE_STATUSES = ("ok", "broken", "dead", "error")
DNS_AUTH_RECORDS = ("spf", "dmarc", "dkim", "mta_sts", "tls_rpt")
DNS_AUTH_STATUSES = ("ok", "invalid", "missing", "error")
REPUTATIONS = ("high", "medium", "low", "bad")
SNDS_RESULTS = ("green", "yellow", "red")
LANE_STATES = ("paused", "halted", "suspended", "slowed", "sending")
HEALTH_STATES = ("healthy", "warning", "critical", "blocked")
POLICY_ACTIONS = ("pause", "slow", "ramp", "suppress", "alert")
ALERT_SEVERITIES = ("warning", "critical", "blocked")

TLS_POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})
SERIES_LIMIT = 200  # values of a report-derived label (a policy domain) with series of their own, per family

# DMARC sources: the largest sending sources (and service types) by volume keep series
# of their own, the rest is "other"; countries are ISO 3166 codes (at most ~250).
DMARC_SOURCE_SERIES = 20
DMARC_SOURCE_TYPE_SERIES = 30
_COUNTRY = re.compile(r"[A-Z]{2}")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.:+-]{0,63}$")


class LabelCap:
    """At most `limit` distinct values of one label keep series of their own;
    the others become "other". Admission is sticky and by volume: each scan
    offers its new values largest first (`admit`), so the full pass at start
    keeps the top `limit`, and later values get the room that is left."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: set[str] = set()

    def admit(self, volumes: dict[str, float]) -> None:
        room = self.limit - len(self.kept)
        if room <= 0:
            return
        new = [(amount, value) for value, amount in volumes.items()
               if value and value != OTHER and value not in self.kept]
        for _, value in sorted(new, key=lambda item: (-item[0], item[1]))[:room]:
            self.kept.add(value)

    def __call__(self, value: str) -> str:
        return value if not value or value == OTHER or value in self.kept else OTHER


def capped(scan: Scan, caps: dict[int, LabelCap]) -> Scan:
    """A (relabelled) scan whose label at each capped position goes through
    its LabelCap, new values offered by volume first."""
    def run(conn: Connection, above: int, up_to: int | None) -> dict[Key, float]:
        raw = scan(conn, above, up_to)
        for index, cap in caps.items():
            volumes: dict[str, float] = {}
            for key, amount in raw.items():
                if len(key) > index:
                    volumes[key[index]] = volumes.get(key[index], 0.0) + amount
            cap.admit(volumes)
        out: dict[Key, float] = {}
        for key, amount in raw.items():
            new = tuple(caps[i](v) if i in caps else v for i, v in enumerate(key))
            out[new] = out.get(new, 0.0) + amount
        return out
    return run


def token(value: Any, *, allowed: frozenset[str] | None = None) -> str:
    """A label value from a short vocabulary word; anything odd becomes "other"
    (a hostile report must not be able to mint new series)."""
    if value is None or value == "":
        return ""
    text = str(value).strip().lower()
    if allowed is not None:
        return text if text in allowed else OTHER
    return text if _TOKEN.match(text) else OTHER


def domain_label(value: Any) -> str:
    text = str(value or "").strip().lower().rstrip(".")
    return text if text and len(text) <= 253 and re.fullmatch(r"[a-z0-9._-]+", text) else OTHER if text else ""


def epoch(value: datetime | date | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()


def split_lane(lane: str | None) -> tuple[str, str]:
    """(source_ip, destination) labels of a lane key "ip|destination"."""
    if not lane:
        return "", UNROUTED
    source_ip, destination = LaneKey.parse(lane)
    if destination.startswith("mx:"):
        destination = MX_OTHER
    return source_ip, destination or UNROUTED


def family(name: str, values: Values) -> Metric:
    definition = METRICS[name]
    cls = CounterMetricFamily if definition.type == COUNTER else GaugeMetricFamily
    metric = cls(name, definition.help, labels=list(definition.labels))
    for labels, value in sorted(values.items()):
        metric.add_metric(list(labels), value)
    return metric


def _acc(values: Values, labels: tuple[str, ...], amount: float) -> None:
    values[labels] = values.get(labels, 0.0) + amount


def stateset(values: Values, prefix: tuple[str, ...], states: Iterable[str], current: str) -> None:
    states = list(states)
    if current and current not in states:
        states.append(current)
    for state in states:
        values[prefix + (state,)] = 1.0 if state == current else 0.0


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return "unavailable"
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig or exc).lower()
    if sqlstate == "42P01" or "no such table" in text:
        return "missing_table"
    return "query_error"


class RepmonCollector(Collector):
    def __init__(self, engine: Engine, *, own_networks: Iterable[str] = (),
                 lane_rate: Callable[[str], float | None] | None = None, refresh_s: float = 15.0,
                 dnsbl_series_limit: int = 20000, settle_s: float | None = None,
                 clock: Callable[[], float] = time.time, series_limit: int = SERIES_LIMIT) -> None:
        self.engine = engine
        self.own_networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in own_networks]
        self.lane_rate = lane_rate or (lambda destination: None)
        self.refresh_s = refresh_s
        self.dnsbl_series_limit = dnsbl_series_limit
        self.series_limit = series_limit
        self._caps: dict[str, LabelCap] = {}
        sqlite = engine.dialect.name == "sqlite"
        self.settle_s = (0.0 if sqlite else PG_SETTLE_S) if settle_s is None else settle_s
        self.margin = 0 if sqlite else PG_START_MARGIN
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: list[Metric] | None = None
        self._cache_at = 0.0
        self._totals: dict[str, RunningTotals] = {}
        self._errors: Values = {}
        self._last_reason: dict[str, str] = {}
        self._ip_labels: dict[str, str] = {}
        self.families: list[tuple[str, Callable[[Connection, float], list[Metric]]]] = [
            ("events", self._events),
            ("messages", self._messages),
            ("quarantine", self._quarantine),
            ("suppressions", self._suppressions),
            ("dmarc", self._dmarc),
            ("dmarc_failures", self._dmarc_failures),
            ("dmarc_sources", self._dmarc_sources),
            ("tls", self._tls),
            ("dnsbl", self._dnsbl),
            ("dnsbl_zones", self._dnsbl_zones),
            ("signal_events", self._signal_events),
            ("dns_auth", self._dns_auth),
            ("postmaster", self._postmaster),
            ("snds", self._snds),
            ("fetch_states", self._fetch_states),
            ("sender_queue", self._sender_queue),
            ("sender_deliveries", self._sender_deliveries),
            ("sender_lanes", self._sender_lanes),
            ("health", self._health),
            ("policy", self._policy),
            ("alerts", self._alerts),
        ]

    # -- prometheus_client interface --------------------------------------------------------

    def describe(self) -> list[Metric]:
        # Nothing: registering must not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._cache is None or now - self._cache_at >= self.refresh_s:
                self._cache = self._collect_all(now)
                self._cache_at = now
            metrics = self._cache
        return iter(metrics)

    # -- one collection --------------------------------------------------------------------

    def _collect_all(self, now: float) -> list[Metric]:
        out: list[Metric] = []
        up: Values = {}
        durations: Values = {}
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            self._all_failed(exc, up)
        else:
            with connection:
                conn = connection.execution_options(isolation_level="AUTOCOMMIT")
                for name, produce in self.families:
                    started = time.perf_counter()
                    try:
                        out.extend(produce(conn, now))
                    except (SQLAlchemyError, ImportError) as exc:
                        self._failed(name, failure_reason(exc), exc)
                        up[(name,)] = 0.0
                        try:
                            conn.rollback()
                        except SQLAlchemyError:
                            pass
                    else:
                        up[(name,)] = 1.0
                        if self._last_reason.pop(name, None):
                            log.info("metrics family %s is collected again", name)
                    durations[(name,)] = time.perf_counter() - started
        out.extend(self._self_metrics(up, durations, now))
        return out

    def _all_failed(self, exc: BaseException, up: Values) -> None:
        for name, _ in self.families:
            self._failed(name, "connection_error", exc)
            up[(name,)] = 0.0

    def _failed(self, name: str, reason: str, exc: BaseException) -> None:
        _acc(self._errors, (name, reason), 1.0)
        if self._last_reason.get(name) != reason:  # log a change, not every scrape
            self._last_reason[name] = reason
            text = str(getattr(exc, "orig", None) or exc)
            first_line = text.splitlines()[0][:300] if str(exc) else type(exc).__name__
            level = logging.INFO if reason in ("missing_table", "unavailable") else logging.WARNING
            log.log(level, "metrics family %s skipped (%s): %s", name, reason, first_line)

    def _self_metrics(self, up: Values, durations: Values, now: float) -> list[Metric]:
        return [
            family("repmon_build_info", {(version(),): 1.0}),
            family("repmon_metrics_family_up", up),
            family("repmon_metrics_collect_errors_total", dict(self._errors)),
            family("repmon_metrics_collect_duration_seconds", durations),
            family("repmon_metrics_last_collect_timestamp_seconds", {(): now}),
        ]

    def _running(self, name: str, source: Counted, scan: Scan | None = None) -> RunningTotals:
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = RunningTotals(source, scan, settle_s=self.settle_s, margin=self.margin)
        return totals

    def cap(self, family_name: str) -> LabelCap:
        """The LabelCap of one family's report-derived label."""
        found = self._caps.get(family_name)
        if found is None:
            found = self._caps[family_name] = LabelCap(self.series_limit)
        return found

    def ip_label(self, value: str | None) -> str:
        """A DMARC source IP as a label: itself when it is one of ours, else "other"."""
        if not value:
            return ""
        label = self._ip_labels.get(value)
        if label is None:
            try:
                address = ipaddress.ip_address(value.strip())
            except ValueError:
                label = OTHER
            else:
                ours = any(address.version == net.version and address in net for net in self.own_networks)
                label = str(address) if ours else OTHER
            if len(self._ip_labels) < 100_000:
                self._ip_labels[value] = label
        return label

    # -- feedback events and ingestion ----------------------------------------------------------

    def _events(self, conn: Connection, now: float) -> list[Metric]:
        def relabel(key: Key) -> Key:
            kind, reason, hard_or_soft, feedback_type, complaint = key
            return (token(kind), token(reason), token(hard_or_soft, allowed=frozenset({"hard", "soft"})),
                    token(feedback_type, allowed=FEEDBACK_TYPES) if kind == "feedback" else "",
                    "true" if complaint else "false")

        totals = self._running("events", storage.EVENTS, mapped(storage.EVENTS.scan, relabel)).refresh(conn, now)
        stored: Values = {}
        feedback: Values = {}
        for (kind, reason, hard_or_soft, feedback_type, complaint), n in totals.items():
            _acc(stored, (kind, reason, hard_or_soft), n)
            if kind == "feedback":
                _acc(feedback, (feedback_type, complaint), n)
        return [family("repmon_events_stored_total", stored), family("repmon_feedback_events_total", feedback)]

    def _messages(self, conn: Connection, now: float) -> list[Metric]:
        scan = mapped(storage.MESSAGES.scan, lambda key: (str(key[0] or "")[:255], token(key[1])))
        totals = self._running("messages", storage.MESSAGES, scan).refresh(conn, now)
        return [family("repmon_processed_messages_total", totals)]

    def _quarantine(self, conn: Connection, now: float) -> list[Metric]:
        ever = self._running("quarantine", storage.QUARANTINED).refresh(conn, now)
        held = storage.held_quarantine_count(conn)
        return [family("repmon_quarantined_messages_total", {(): ever.get((), 0.0)}),
                family("repmon_quarantine_held_messages", {(): float(held)})]

    def _suppressions(self, conn: Connection, now: float) -> list[Metric]:
        at = datetime.fromtimestamp(now, UTC)
        values: Values = {}
        for reason, n in storage.active_suppressions_by_reason(conn, at):
            _acc(values, (token(reason),), float(n))
        return [family("repmon_suppressed_addresses", values)]

    # -- DMARC and TLS reports ----------------------------------------------------------------

    def _dmarc(self, conn: Connection, now: float) -> list[Metric]:
        def relabel(key: Key) -> Key:
            domain, source_ip, dkim, spf, disposition = key
            dkim_l, spf_l = token(dkim), token(spf)
            result = "pass" if "pass" in (dkim_l, spf_l) else "fail"
            return (domain_label(domain), self.ip_label(source_ip), result, dkim_l, spf_l, token(disposition))

        scan = capped(mapped(storage.DMARC_MESSAGES.scan, relabel), {0: self.cap("dmarc")})
        totals = self._running("dmarc", storage.DMARC_MESSAGES, scan).refresh(conn, now)
        return [family("repmon_dmarc_messages_total", totals)]

    def _dmarc_failures(self, conn: Connection, now: float) -> list[Metric]:
        def relabel(key: Key) -> Key:
            domain, failure = key
            first = str(failure or "").replace(",", " ").split()
            return (domain_label(domain), token(first[0] if first else None, allowed=AUTH_FAILURES))

        scan = capped(mapped(storage.DMARC_FAILURES.scan, relabel), {0: self.cap("dmarc_failures")})
        totals = self._running("dmarc_failures", storage.DMARC_FAILURES, scan).refresh(conn, now)
        return [family("repmon_dmarc_failure_reports_total", totals)]

    def _dmarc_sources(self, conn: Connection, now: float) -> list[Metric]:
        """Messages per sending source (top DMARC_SOURCE_SERIES by volume, the rest
        "other"), and per country of the source IP."""
        def relabel(key: Key) -> Key:
            source, source_type, source_ip, country, dkim, spf = key
            result = "pass" if "pass" in (token(dkim), token(spf)) else "fail"
            ours = "true" if self.ip_label(source_ip) not in ("", OTHER) else "false"
            country_text = str(country or "").strip().upper()
            return (str(source or "")[:100], str(source_type or "")[:64], ours, result,
                    country_text if _COUNTRY.fullmatch(country_text) else (OTHER if country_text else ""))

        caps = {0: self._caps.setdefault("dmarc_source", LabelCap(DMARC_SOURCE_SERIES)),
                1: self._caps.setdefault("dmarc_source_type", LabelCap(DMARC_SOURCE_TYPE_SERIES))}
        scan = capped(mapped(storage.DMARC_SOURCES.scan, relabel), caps)
        totals = self._running("dmarc_sources", storage.DMARC_SOURCES, scan).refresh(conn, now)
        sources: Values = {}
        countries: Values = {}
        for (source, source_type, ours, result, country), n in totals.items():
            _acc(sources, (source, source_type, ours, result), n)
            _acc(countries, (country, result), n)
        return [family("repmon_dmarc_source_messages_total", sources),
                family("repmon_dmarc_country_messages_total", countries)]

    def _tls(self, conn: Connection, now: float) -> list[Metric]:
        def relabel(key: Key) -> Key:
            if key[0] == "sessions":
                _, domain, policy_type, outcome = key
                return ("sessions", domain_label(domain), token(policy_type, allowed=TLS_POLICY_TYPES), outcome)
            _, domain, kind = key
            return ("failed", domain_label(domain), token(kind, allowed=TLS_RESULT_TYPES))

        # One cap for both TLS families: they share the policy domain label.
        scan = capped(mapped(storage.TLS_SESSIONS.scan, relabel), {1: self.cap("tls")})
        totals = self._running("tls", storage.TLS_SESSIONS, scan).refresh(conn, now)
        sessions = {k[1:]: v for k, v in totals.items() if k[0] == "sessions"}
        failed = {k[1:]: v for k, v in totals.items() if k[0] == "failed"}
        return [family("repmon_tls_report_sessions_total", sessions),
                family("repmon_tls_failed_sessions_total", failed)]

    # -- blocklists and other signals ---------------------------------------------------------

    def _dnsbl(self, conn: Connection, now: float) -> list[Metric]:
        rows = signals.dnsbl_states(conn)
        last = signals.dnsbl_last_check(conn)
        individual = len(rows) <= self.dnsbl_series_limit
        listed: Values = {}
        unknown: Values = {}
        streak: Values = {}
        per_zone: Values = {}
        for target, kind, zone, raw_state, errors in rows:
            state = token(raw_state)
            _acc(per_zone, (zone, state), 1.0)
            if not individual and state == "clean" and not errors:
                continue  # too many pairs: the clean ones are only counted
            labels = (target, token(kind), zone)
            listed[labels] = 1.0 if state == "listed" else 0.0
            unknown[labels] = 1.0 if state == "unknown" else 0.0
            streak[labels] = float(errors or 0)
        for zone in {z for z, _ in list(per_zone)}:
            for state in ("clean", "listed", "unknown"):
                per_zone.setdefault((zone, state), 0.0)
        out = [family("repmon_dnsbl_listed", listed), family("repmon_dnsbl_unknown", unknown),
               family("repmon_dnsbl_error_streak", streak), family("repmon_dnsbl_targets", per_zone)]
        last_epoch = epoch(last)
        if last_epoch is not None:
            out.append(family("repmon_dnsbl_last_check_timestamp_seconds", {(): last_epoch}))
        return out

    def _dnsbl_zones(self, conn: Connection, now: float) -> list[Metric]:
        values: Values = {}
        for zone, status in signals.zone_statuses(conn):
            stateset(values, (zone,), ZONE_STATUSES, token(status))
        return [family("repmon_dnsbl_zone_status", values)]

    def _signal_events(self, conn: Connection, now: float) -> list[Metric]:
        scan = mapped(signals.SIGNAL_EVENTS.scan, lambda key: (token(key[0]), token(key[1])))
        return [family("repmon_signal_events_total",
                       self._running("signal_events", signals.SIGNAL_EVENTS, scan).refresh(conn, now))]

    def _dns_auth(self, conn: Connection, now: float) -> list[Metric]:
        values: Values = {}
        for raw_domain, snapshots in signals.latest_dns_auth(conn):  # the last check of a domain wins
            domain = domain_label(raw_domain)
            for record, snapshot in zip(DNS_AUTH_RECORDS, snapshots, strict=False):
                status = snapshot.get("status") if isinstance(snapshot, dict) else None
                if status:
                    stateset(values, (domain, record), DNS_AUTH_STATUSES, token(status))
        return [family("repmon_dns_auth_status", values)]

    def _postmaster(self, conn: Connection, now: float) -> list[Metric]:
        since = datetime.fromtimestamp(now, UTC).date() - timedelta(days=30)
        # Per figure the latest day that has it (v1 alone has the reputation,
        # Google leaves days out); on one day the v2 API's figure wins over v1's.
        rows = sorted(signals.postmaster_days(conn, since), key=lambda r: (r.day, r.api == "v2"))
        spam: Values = {}
        auth: Values = {}
        errors: Values = {}
        reputation: dict[tuple[str, ...], str] = {}
        day: Values = {}
        for row in rows:
            key = (token(row.provider), domain_label(row.domain))
            day[key] = epoch(row.day) or 0.0
            if row.spam_rate is not None:
                spam[key] = float(row.spam_rate)
            for mechanism, rate in (("spf", row.spf_success_rate), ("dkim", row.dkim_success_rate),
                                    ("dmarc", row.dmarc_success_rate)):
                if rate is not None:
                    auth[key + (mechanism,)] = float(rate)
            if row.delivery_error_rate is not None:
                errors[key] = float(row.delivery_error_rate)
            if row.domain_reputation:
                reputation[key] = token(row.domain_reputation)
        reputations: Values = {}
        for labels, current in reputation.items():
            stateset(reputations, labels, REPUTATIONS, current)
        return [family("repmon_postmaster_spam_ratio", spam), family("repmon_postmaster_auth_success_ratio", auth),
                family("repmon_postmaster_delivery_error_ratio", errors),
                family("repmon_postmaster_domain_reputation", reputations),
                family("repmon_postmaster_day_timestamp_seconds", day)]

    def _snds(self, conn: Connection, now: float) -> list[Metric]:
        since = datetime.fromtimestamp(now, UTC).date() - timedelta(days=30)
        latest: dict[str, Any] = {}
        for row in signals.snds_days(conn, since):
            best = latest.get(row.ip)
            if best is None or row.activity_end > best.activity_end:
                latest[row.ip] = row
        result: Values = {}
        complaints: Values = {}
        traps: Values = {}
        recipients: Values = {}
        for ip, row in latest.items():
            stateset(result, (ip,), SNDS_RESULTS, token(row.filter_result))
            if row.complaint_rate is not None:
                complaints[(ip,)] = float(row.complaint_rate)
            traps[(ip,)] = float(row.trap_hits or 0)
            recipients[(ip,)] = float(row.message_recipients or 0)
        blocked = signals.snds_blocked_ranges(conn)
        return [family("repmon_snds_filter_result", result), family("repmon_snds_complaint_ratio", complaints),
                family("repmon_snds_trap_hits", traps), family("repmon_snds_recipients", recipients),
                family("repmon_snds_blocked_ranges", {(): float(blocked)})]

    def _fetch_states(self, conn: Connection, now: float) -> list[Metric]:
        up: Values = {}
        failures: Values = {}
        for source, status, consecutive in signals.fetch_states(conn):
            up[(source,)] = 1.0 if status == "ok" else 0.0
            failures[(source,)] = float(consecutive or 0)
        return [family("repmon_signal_fetch_up", up), family("repmon_signal_fetch_consecutive_failures", failures)]

    # -- sender ------------------------------------------------------------------------------

    def _sender_queue(self, conn: Connection, now: float) -> list[Metric]:
        values: Values = {}
        for state, lane, n in sender_stats.queue_depths(conn):
            source_ip, destination = split_lane(lane)
            _acc(values, (source_ip, destination, state), float(n))
        return [family("repmon_sender_queue_messages", values)]

    def _sender_deliveries(self, conn: Connection, now: float) -> list[Metric]:
        scan = mapped(sender_stats.DELIVERIES.scan, lambda key: split_lane(key[0]) + (token(key[1]),))
        totals = self._running("sender_deliveries", sender_stats.DELIVERIES, scan).refresh(conn, now)
        return [family("repmon_sender_deliveries_total", totals)]

    def _sender_lanes(self, conn: Connection, now: float) -> list[Metric]:
        overview = sender_stats.lane_overview(conn, now)
        states: Values = {}
        rates: Values = {}
        counts: Values = {(state,): 0.0 for state in LANE_STATES}
        for lane in overview.lanes:
            flags = {"paused": lane.paused, "halted": lane.halted, "suspended": lane.suspended,
                     "slowed": lane.slowed}
            flags["sending"] = not (lane.paused or lane.halted or lane.suspended)
            for state, on in flags.items():
                counts[(state,)] += 1.0 if on else 0.0
            if lane.destination.startswith("mx:"):
                continue  # one lane per MX host: too many for series of their own
            for state, on in flags.items():
                states[(lane.source_ip, lane.destination, state)] = 1.0 if on else 0.0
            rate = lane.rate if lane.rate is not None else self.lane_rate(lane.destination)
            if rate is not None:
                rates[(lane.source_ip, lane.destination)] = float(rate)
        directive_counts: Values = {("pause",): 0.0, ("slow",): 0.0}
        for kind in overview.directives:
            if kind != "resume":
                _acc(directive_counts, (token(kind),), 1.0)
        action_counts: Values = {("suspend",): 0.0, ("slow",): 0.0, ("halt",): 0.0}
        for action in overview.actions:
            _acc(action_counts, (token(action),), 1.0)
        return [family("repmon_sender_lane_state", states),
                family("repmon_sender_lane_rate_limit_messages_per_second", rates),
                family("repmon_sender_lanes", counts),
                family("repmon_sender_lane_directives_active", directive_counts),
                family("repmon_sender_lane_actions_active", action_counts)]

    # -- health --------------------------------------------------------------------------------

    def _health(self, conn: Connection, now: float) -> list[Metric]:
        scores: Values = {}
        states: Values = {}
        for subject, raw_kind, state, score in health_stats.health_states(conn):
            kind = token(raw_kind)
            name = subject.partition(":")[2]
            # Recipient domains are not ours (unbounded); per-MX-host lanes are many.
            if kind not in ("ip", "domain", "lane") or (kind == "lane" and "/mx:" in name):
                continue
            scores[(kind, name)] = float(score)
            stateset(states, (kind, name), HEALTH_STATES, token(state))
        return [family("repmon_health_score", scores), family("repmon_health_state", states)]

    def _policy(self, conn: Connection, now: float) -> list[Metric]:
        values: Values = {(action,): 0.0 for action in POLICY_ACTIONS}
        at = datetime.fromtimestamp(now, UTC)
        for action, n in policy_stats.active_policy_actions(conn, at):
            _acc(values, (token(action),), float(n))
        return [family("repmon_policy_actions_active", values)]

    def _alerts(self, conn: Connection, now: float) -> list[Metric]:
        values: Values = {(severity,): 0.0 for severity in ALERT_SEVERITIES}
        for severity, n in alert_stats.firing_alerts(conn):
            _acc(values, (token(severity),), float(n))
        return [family("repmon_alerts_firing", values)]
