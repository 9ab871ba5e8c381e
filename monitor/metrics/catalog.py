"""Every metric repmon exports: name, type, help text and labels.

One table for the collector (which builds its families from it), the
dashboards (whose queries may only name metrics listed here) and the tests.

Conventions: the `repmon_` prefix, `_total` on counters, the unit in the
name (`_seconds`, `_ratio`, `_messages`), and only labels with a bounded set
of values: our own sending IPs and domains, zones, reasons, lane names. No
recipient address or free-text reply is ever a label value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MetricType = Literal["counter", "gauge"]
COUNTER: Final = "counter"
GAUGE: Final = "gauge"


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str  # the sample name as exposed (counters end in _total)
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    family: str = ""  # the collector family that produces it (see collector.FAMILIES)


_DEFS = (
    # --- feedback events (table events) ---------------------------------------------------
    MetricDef("repmon_events_stored_total", COUNTER,
              "Per-recipient events stored, by kind (bounce, feedback, auto_reply, delivery_success, not_bounce), "
              "bounce reason and hard/soft.", ("kind", "reason", "hard_or_soft"), "events"),
    MetricDef("repmon_feedback_events_total", COUNTER,
              "Feedback reports (ARF and provider feedback loops) by feedback type; complaint=\"true\" for "
              "abuse, fraud and virus reports.", ("feedback_type", "complaint"), "events"),
    MetricDef("repmon_processed_messages_total", COUNTER,
              "Feedback mail messages ingested, by source and outcome (stored or quarantined).",
              ("source", "outcome"), "messages"),
    MetricDef("repmon_quarantined_messages_total", COUNTER,
              "Messages ever quarantined (not understood, too large or failing to store).", (), "quarantine"),
    MetricDef("repmon_quarantine_held_messages", GAUGE,
              "Quarantined messages not released yet.", (), "quarantine"),
    # --- suppression list ------------------------------------------------------------------
    MetricDef("repmon_suppressed_addresses", GAUGE,
              "Addresses on the suppression list (expired soft-bounce entries excluded), by reason.",
              ("reason",), "suppressions"),
    # --- DMARC and TLS reports -----------------------------------------------------------------
    MetricDef("repmon_dmarc_messages_total", COUNTER,
              "Messages counted in DMARC aggregate reports, by domain, source IP (ours, else \"other\"), DMARC "
              "result, aligned DKIM and SPF results and the receiver's disposition.",
              ("domain", "source_ip", "result", "dkim", "spf", "disposition"), "dmarc"),
    MetricDef("repmon_dmarc_source_messages_total", COUNTER,
              "Messages counted in DMARC aggregate reports by sending source (the service parsedmarc's map names, "
              "else the AS name, else the IP: the top sources by volume, the rest \"other\"), the service's type, "
              "whether the IP is one of ours and the DMARC result.",
              ("source", "source_type", "ours", "result"), "dmarc_sources"),
    MetricDef("repmon_dmarc_country_messages_total", COUNTER,
              "Messages counted in DMARC aggregate reports by the country of the source IP (ISO 3166 code; "
              "\"\" when unknown) and DMARC result.", ("country", "result"), "dmarc_sources"),
    MetricDef("repmon_dmarc_failure_reports_total", COUNTER,
              "DMARC failure (forensic) reports, by reported domain and failed mechanism.",
              ("domain", "auth_failure"), "dmarc_failures"),
    MetricDef("repmon_tls_report_sessions_total", COUNTER,
              "SMTP TLS report (RFC 8460) sessions by policy domain, policy type and result "
              "(successful or failed).", ("policy_domain", "policy_type", "result"), "tls"),
    MetricDef("repmon_tls_failed_sessions_total", COUNTER,
              "Failed sessions in SMTP TLS reports by policy domain and RFC 8460 result type.",
              ("policy_domain", "result_type"), "tls"),
    # --- blocklists -----------------------------------------------------------------------------
    MetricDef("repmon_dnsbl_listed", GAUGE,
              "1 when the target (sending IP or domain) is listed on the zone, else 0.",
              ("target", "target_kind", "zone"), "dnsbl"),
    MetricDef("repmon_dnsbl_unknown", GAUGE,
              "1 when the state of target on zone is unknown (lookups kept failing), else 0.",
              ("target", "target_kind", "zone"), "dnsbl"),
    MetricDef("repmon_dnsbl_error_streak", GAUGE,
              "Consecutive failed lookups of target on zone.", ("target", "target_kind", "zone"), "dnsbl"),
    MetricDef("repmon_dnsbl_targets", GAUGE,
              "Targets per zone and state (clean, listed, unknown).", ("zone", "state"), "dnsbl"),
    MetricDef("repmon_dnsbl_last_check_timestamp_seconds", GAUGE,
              "When the blocklists were last checked (Unix time).", (), "dnsbl"),
    MetricDef("repmon_dnsbl_zone_status", GAUGE,
              "Zone health from its RFC 5782 test points: 1 for the zone's current status (ok, broken, dead, "
              "error), 0 for the others.", ("zone", "status"), "dnsbl_zones"),
    MetricDef("repmon_signal_events_total", COUNTER,
              "Changes in outside signals (listed, delisted, unknown, zone_broken, DNS auth regressions, ...), "
              "by source and kind.", ("source", "kind"), "signal_events"),
    # --- DNS authentication --------------------------------------------------------------------
    MetricDef("repmon_dns_auth_status", GAUGE,
              "Latest SPF / DMARC / DKIM / MTA-STS / TLS-RPT check of a sending domain: 1 for the record's "
              "current status (ok, invalid, missing, error), 0 for the others.",
              ("domain", "record", "status"), "dns_auth"),
    # --- postmaster data -----------------------------------------------------------------------
    MetricDef("repmon_postmaster_spam_ratio", GAUGE,
              "Google Postmaster Tools user-reported spam rate of the latest day published.",
              ("provider", "domain"), "postmaster"),
    MetricDef("repmon_postmaster_auth_success_ratio", GAUGE,
              "Google Postmaster Tools authentication success rate (spf, dkim, dmarc) of the latest day.",
              ("provider", "domain", "mechanism"), "postmaster"),
    MetricDef("repmon_postmaster_delivery_error_ratio", GAUGE,
              "Google Postmaster Tools delivery error rate of the latest day.", ("provider", "domain"), "postmaster"),
    MetricDef("repmon_postmaster_domain_reputation", GAUGE,
              "Google Postmaster Tools domain reputation of the latest day: 1 for the current one "
              "(high, medium, low, bad).", ("provider", "domain", "reputation"), "postmaster"),
    MetricDef("repmon_postmaster_day_timestamp_seconds", GAUGE,
              "Start (Unix time, UTC midnight) of the day the latest postmaster figures are for.",
              ("provider", "domain"), "postmaster"),
    MetricDef("repmon_snds_filter_result", GAUGE,
              "Microsoft SNDS filter result of the IP's latest activity period: 1 for the current colour "
              "(green, yellow, red).", ("ip", "result"), "snds"),
    MetricDef("repmon_snds_complaint_ratio", GAUGE,
              "Microsoft SNDS complaint rate of the IP's latest activity period.", ("ip",), "snds"),
    MetricDef("repmon_snds_trap_hits", GAUGE,
              "Microsoft SNDS spam trap hits of the IP's latest activity period.", ("ip",), "snds"),
    MetricDef("repmon_snds_recipients", GAUGE,
              "Microsoft SNDS message recipients of the IP's latest activity period.", ("ip",), "snds"),
    MetricDef("repmon_snds_blocked_ranges", GAUGE,
              "IP ranges the SNDS IP-status feed reports as blocked.", (), "snds"),
    MetricDef("repmon_signal_fetch_up", GAUGE,
              "1 when the last fetch of a signal feed (postmaster API, SNDS key, DNS check) worked.",
              ("source",), "fetch_states"),
    MetricDef("repmon_signal_fetch_consecutive_failures", GAUGE,
              "Failed fetches of a signal feed in a row.", ("source",), "fetch_states"),
    # --- sender ------------------------------------------------------------------------------
    MetricDef("repmon_sender_queue_messages", GAUGE,
              "Messages waiting in the sender's queue by lane (source IP x destination; destination "
              "\"unrouted\" before routing) and state (queued, inflight).",
              ("source_ip", "destination", "state"), "sender_queue"),
    MetricDef("repmon_sender_deliveries_total", COUNTER,
              "Delivery attempt outcomes by lane and result (delivered, deferred, bounced, expired, suppressed).",
              ("source_ip", "destination", "result"), "sender_deliveries"),
    MetricDef("repmon_sender_lane_state", GAUGE,
              "Lane flags: paused (operator), halted / suspended (response rules), slowed (rate override), "
              "sending (none of paused, halted, suspended); 1 when set. Per-MX-host lanes are counted in "
              "repmon_sender_lanes only.", ("source_ip", "destination", "state"), "sender_lanes"),
    MetricDef("repmon_sender_lane_rate_limit_messages_per_second", GAUGE,
              "Rate a lane may send at now: the slowest override, else the configured limit (lanes without a "
              "limit are left out).", ("source_ip", "destination"), "sender_lanes"),
    MetricDef("repmon_sender_lanes", GAUGE,
              "Lanes by state (paused, halted, suspended, slowed, sending); a lane can be in several.",
              ("state",), "sender_lanes"),
    MetricDef("repmon_sender_lane_directives_active", GAUGE,
              "Operator / policy directives in force, by kind (pause, slow).", ("kind",), "sender_lanes"),
    MetricDef("repmon_sender_lane_actions_active", GAUGE,
              "Response-rule actions in force, by action (suspend, slow, halt).", ("action",), "sender_lanes"),
    # --- health (monitor/health/) -----------------------------------------------------------
    MetricDef("repmon_health_score", GAUGE,
              "Health score 0-100 of a sending IP, sending domain or lane (\"<ip>/<destination>\") from its latest "
              "assessment; higher is better.", ("subject_kind", "subject"), "health"),
    MetricDef("repmon_health_state", GAUGE,
              "Health state of a sending IP, domain or lane: 1 for the current state (healthy, warning, critical, "
              "blocked).", ("subject_kind", "subject", "state"), "health"),
    MetricDef("repmon_policy_actions_active", GAUGE,
              "Policy engine actions in force, by action (pause, slow, ramp, suppress, alert).", ("action",),
              "policy"),
    MetricDef("repmon_alerts_firing", GAUGE, "Alerts firing now, by severity.", ("severity",), "alerts"),
    # --- repmon itself ------------------------------------------------------------------------
    MetricDef("repmon_build_info", GAUGE, "Always 1; the running repmon version.", ("version",), "self"),
    MetricDef("repmon_metrics_family_up", GAUGE,
              "1 when the family's database queries worked at the last collection, 0 when it was skipped.",
              ("family",), "self"),
    MetricDef("repmon_metrics_collect_errors_total", COUNTER,
              "Collections where a family was skipped, by reason (missing_table, unavailable, query_error).",
              ("family", "reason"), "self"),
    MetricDef("repmon_metrics_collect_duration_seconds", GAUGE,
              "Time the family's database queries took at the last collection.", ("family",), "self"),
    MetricDef("repmon_metrics_last_collect_timestamp_seconds", GAUGE,
              "When the metrics were last read from the database (Unix time).", (), "self"),
)

METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}


def exported_names() -> set[str]:
    """Every sample name a scrape can contain (for checking dashboard queries)."""
    return set(METRICS)
