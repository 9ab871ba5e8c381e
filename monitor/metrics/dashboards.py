"""The Grafana dashboards, built from code.

dashboards/*.json in the repository are written from these definitions by
`repmon dashboards write` (a test checks they are current), and `repmon
dashboards push` uploads either these or JSON files of your own.

Every query names its metrics through `m()`, which refuses a metric that
the collector does not export (monitor/metrics/catalog.py). The data source
is the dashboard variable `${DS_PROMETHEUS}`, so the same JSON works when
imported in the UI and when pushed through the API. Every query is limited
to one repmon instance (`$instance`): several nodes sharing one PostgreSQL
database export the same database-wide numbers, which must not be added up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.metrics.catalog import METRICS

SCHEMA_VERSION = 41
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
TAG = "repmon"

# Grafana's variables and the values the Prometheus test puts in their place.
BUILTIN_VARIABLES = ("$__range", "$__rate_interval", "$__interval")


def m(metric: str, **labels: str) -> str:
    """A selector `metric{instance=~"$instance", label="value", ...}`.

    A value starting with "~" is a regex match, "!" a negative match and
    "!~" a negative regex match.
    """
    if metric not in METRICS:
        raise KeyError(f"dashboard query names {metric!r}, which repmon does not export")
    definition = METRICS[metric]
    matchers = ['instance=~"$instance"']
    for name, value in labels.items():
        if name not in definition.labels:
            raise KeyError(f"{metric} has no label {name!r}")
        op = "="
        for prefix, operator in (("!~", "!~"), ("~", "=~"), ("!", "!=")):
            if value.startswith(prefix):
                op, value = operator, value[len(prefix):]
                break
        matchers.append(f'{name}{op}"{value}"')
    return f"{metric}{{{','.join(matchers)}}}"


# --- panels ---------------------------------------------------------------------------------

@dataclass
class Query:
    expr: str
    legend: str = ""
    table: bool = False  # instant query shown as a table


@dataclass
class Panel:
    kind: str  # stat | timeseries | table | bargauge
    title: str
    queries: list[Query]
    description: str = ""
    unit: str = "short"
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    stack: bool = False
    bars: bool = False
    mappings: list[dict[str, Any]] = field(default_factory=list)
    hide_columns: tuple[str, ...] = ()
    decimals: int | None = None
    min: float | None = None


def stat(title: str, expr: str, *, description: str = "", unit: str = "short",
         thresholds: Sequence[tuple[float | None, str]] | None = None, decimals: int | None = None) -> Panel:
    return Panel("stat", title, [Query(expr)], description=description, unit=unit, width=4, height=4,
                 thresholds=list(thresholds or [(None, "green")]), decimals=decimals)


def series(title: str, *queries: Query, description: str = "", unit: str = "short", stack: bool = False,
           bars: bool = False, width: int = 12, min: float | None = 0) -> Panel:
    return Panel("timeseries", title, list(queries), description=description, unit=unit, stack=stack, bars=bars,
                 width=width, min=min)


def table(title: str, *queries: Query, description: str = "", hide: tuple[str, ...] = ("Value",),
          width: int = 12, mappings: list[dict[str, Any]] | None = None, unit: str = "short") -> Panel:
    return Panel("table", title, [Query(q.expr, q.legend, table=True) for q in queries], description=description,
                 hide_columns=hide, width=width, mappings=mappings or [], unit=unit)


def geomap(title: str, expr: str, *, description: str = "", width: int = 12) -> Panel:
    """A world map from an instant query with a `country` label (ISO 3166 alpha-2)."""
    return Panel("geomap", title, [Query(expr, table=True)], description=description, width=width, height=10)


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": ref, "datasource": DS, "expr": query.expr, "legendFormat": query.legend,
                              "editorMode": "code"}
    if query.table:
        target.update({"instant": True, "range": False, "format": "table"})
    else:
        target.update({"instant": False, "range": True, "format": "time_series"})
    return target


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel.thresholds),
                                "mappings": panel.mappings}
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    options: dict[str, Any]
    transformations: list[dict[str, Any]] = []
    if panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                   "orientation": "auto", "textMode": "auto", "wideLayout": True, "showPercentChange": False}
    elif panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        if panel.min is not None:
            defaults["min"] = panel.min
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line", "lineWidth": 1,
            "fillOpacity": 60 if panel.bars else (25 if panel.stack else 10),
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                              "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel.kind == "geomap":
        # One circle per country: the query's `country` label (ISO 3166 alpha-2) looked up in
        # Grafana's built-in country gazetteer, sized and coloured by the value.
        defaults["color"] = {"mode": "continuous-YlOrRd"}
        options = {
            "view": {"id": "zero", "lat": 20, "lon": 0, "zoom": 1, "allLayers": True},
            "controls": {"showZoom": True, "mouseWheelZoom": False, "showAttribution": True},
            "basemap": {"type": "default", "name": "Basemap", "config": {}},
            "layers": [{
                "type": "markers", "name": "Messages", "tooltip": True,
                "location": {"mode": "lookup", "lookup": "country", "gazetteer": "public/gazetteer/countries.json"},
                "config": {"showLegend": True,
                           "style": {"color": {"field": "Value", "fixed": "dark-green"},
                                     "size": {"field": "Value", "fixed": 5, "min": 4, "max": 30},
                                     "opacity": 0.6, "symbol": {"fixed": "img/icons/marker/circle.svg",
                                                                "mode": "fixed"}}},
            }],
            "tooltip": {"mode": "details"},
        }
    else:  # table
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
        excluded = {name: True for name in ("Time", "__name__", "job", "instance", *panel.hide_columns)}
        if len(panel.queries) > 1:
            transformations.append({"id": "merge", "options": {}})
        transformations.append({"id": "organize", "options": {"excludeByName": excluded, "indexByName": {},
                                                              "renameByName": {}}})
    refs = "ABCDEFGH"
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(query, refs[i]) for i, query in enumerate(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }
    if transformations:
        out["transformations"] = transformations
    return out


def _row_json(title: str, panel_id: int, y: int) -> dict[str, Any]:
    return {"id": panel_id, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}


# --- variables ------------------------------------------------------------------------------

def _datasource_variable() -> dict[str, Any]:
    return {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query, "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": [],
        "includeAll": multi, "multi": multi, "skipUrlSync": False,
        "current": {"text": ["All"], "value": ["$__all"]} if multi else {},
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


def _instance_variable() -> dict[str, Any]:
    return _query_variable("instance", "repmon instance", "label_values(repmon_build_info, instance)", multi=False)


def _label_variable(name: str, label: str, metric: str, label_name: str) -> dict[str, Any]:
    if metric not in METRICS or label_name not in METRICS[metric].labels:
        raise KeyError(f"variable {name}: {metric} has no label {label_name}")
    return _query_variable(name, label, f'label_values({metric}{{instance=~"$instance"}}, {label_name})', multi=True)


WINDOWS = ("1h", "6h", "1d", "7d")


def _window_variable(default: str = "1d") -> dict[str, Any]:
    return {"name": "window", "label": "Rate window", "type": "custom", "query": ",".join(WINDOWS),
            "current": {"text": default, "value": default}, "hide": 0, "includeAll": False, "multi": False,
            "skipUrlSync": False,
            "options": [{"text": w, "value": w, "selected": w == default} for w in WINDOWS],
            "description": "Sliding window of the rate panels: complaints and bounces against deliveries."}


# --- dashboards ------------------------------------------------------------------------------

@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[dict[str, Any]]
    rows: list[tuple[str, list[Panel]]]

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y = 0
        panel_id = 1
        for row_title, row_panels in self.rows:
            panels.append(_row_json(row_title, panel_id, y))
            panel_id += 1
            y += 1
            x = 0
            row_height = 0
            for panel in row_panels:
                if x + panel.width > 24:
                    x, y = 0, y + row_height
                    row_height = 0
                panels.append(_panel_json(panel, panel_id, x, y))
                panel_id += 1
                x += panel.width
                row_height = max(row_height, panel.height)
            y += row_height
        return {
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard"}]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"asDropdown": False, "icon": "external link", "includeVars": False, "keepTime": True,
                       "tags": [TAG], "targetBlank": False, "title": "repmon", "type": "dashboards"}],
            "panels": panels,
            "refresh": "1m",
            "schemaVersion": SCHEMA_VERSION,
            "tags": [TAG],
            "templating": {"list": self.variables},
            "time": {"from": "now-24h", "to": "now"},
            "timepicker": {},
            "timezone": "utc",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


PERCENT_LIMITS_LOW = [(None, "green"), (0.001, "orange"), (0.003, "red")]  # Gmail / Yahoo sender rules
BOUNCE_LIMITS = [(None, "green"), (0.02, "orange"), (0.05, "red")]
ANY_IS_BAD = [(None, "green"), (1, "red")]
STATE_MAPPING = [{"type": "value", "options": {"1": {"text": "OK", "color": "green", "index": 0},
                                               "0": {"text": "skipped", "color": "red", "index": 1}}}]

DELIVERED = m("repmon_sender_deliveries_total", result="delivered")
ENDED = m("repmon_sender_deliveries_total", result="~delivered|bounced")


def overview() -> Dashboard:
    complaints = m("repmon_feedback_events_total", complaint="true")
    bounces = m("repmon_events_stored_total", kind="bounce")
    complaint_rate = f"sum(increase({complaints}[$window])) / sum(increase({DELIVERED}[$window]))"
    bounce_rate = f"sum(increase({bounces}[$window])) / sum(increase({ENDED}[$window]))"
    return Dashboard(
        uid="repmon-overview",
        title="repmon / Overview",
        description="Complaints, bounces, blocklist listings, the suppression list and the sender queue.",
        variables=[_datasource_variable(), _instance_variable(), _window_variable()],
        rows=[
            ("Now", [
                stat("Complaint rate ($window)", complaint_rate, unit="percentunit", thresholds=PERCENT_LIMITS_LOW,
                     decimals=3, description="Complaints (abuse, fraud, virus feedback) per message delivered by "
                     "repmon's sender over the window. Gmail and Yahoo ask for < 0.1 %, never 0.3 %."),
                stat("Bounce rate ($window)", bounce_rate, unit="percentunit", thresholds=BOUNCE_LIMITS, decimals=2,
                     description="Bounce events (DSNs and SMTP-time rejections) per finished delivery attempt."),
                stat("Blocklist listings", f"sum({m('repmon_dnsbl_listed')})", thresholds=ANY_IS_BAD,
                     description="(target, zone) pairs listed now."),
                stat("Suppressed addresses", f"sum({m('repmon_suppressed_addresses')})"),
                stat("Queued messages", f"sum({m('repmon_sender_queue_messages', state='queued')})"),
                stat("Google spam rate (worst domain)", f"max({m('repmon_postmaster_spam_ratio')})",
                     unit="percentunit", thresholds=PERCENT_LIMITS_LOW, decimals=3,
                     description="Postmaster Tools user-reported spam rate of the latest day published."),
            ]),
            ("Complaints and bounces", [
                series("Complaint rate by feedback type ($window window)",
                       q(f"sum by (feedback_type) (increase({complaints}[$window])) / on() group_left() "
                         f"sum(increase({DELIVERED}[$window]))", "{{feedback_type}}"),
                       q(m("repmon_postmaster_spam_ratio"), "Google {{domain}}"),
                       unit="percentunit"),
                series("Bounce rate by reason ($window window)",
                       q(f"sum by (reason) (increase({bounces}[$window])) / on() group_left() "
                         f"sum(increase({ENDED}[$window]))", "{{reason}}"),
                       unit="percentunit", stack=True),
                series("Feedback reports by type",
                       q(f"sum by (feedback_type) (increase({m('repmon_feedback_events_total')}[$__rate_interval]))",
                         "{{feedback_type}}"), bars=True, stack=True),
                series("Bounces by reason",
                       q(f"sum by (reason, hard_or_soft) (increase({bounces}[$__rate_interval]))",
                         "{{reason}} ({{hard_or_soft}})"), bars=True, stack=True),
            ]),
            ("Lists and queue", [
                series("Blocklist listings by zone", q(f"sum by (zone) ({m('repmon_dnsbl_listed')})", "{{zone}}"),
                       stack=True),
                series("Suppression list by reason",
                       q(f"sum by (reason) ({m('repmon_suppressed_addresses')})", "{{reason}}"), stack=True),
                series("Sender queue by lane",
                       q(f"sum by (source_ip, destination) ({m('repmon_sender_queue_messages', state='queued')})",
                         "{{source_ip}} → {{destination}}"), stack=True),
                series("Deliveries by result (messages/s)",
                       q(f"sum by (result) (rate({m('repmon_sender_deliveries_total')}[$__rate_interval]))",
                         "{{result}}"), stack=True),
            ]),
            ("Health, policy and alerts", [
                table("Subjects not healthy",
                      q(f"{m('repmon_health_state', state='!healthy')} == 1"), width=8,
                      description="Sending IPs, domains and lanes whose latest assessment is warning, critical "
                                  "or blocked (`repmon health` shows the reasons)."),
                series("Health score", q(m("repmon_health_score"), "{{subject_kind}} {{subject}}"), width=8,
                       description="0-100 per sending IP, domain and lane; higher is better."),
                series("Policy actions and alerts",
                       q(f"sum by (action) ({m('repmon_policy_actions_active')})", "policy {{action}}"),
                       q(f"sum by (severity) ({m('repmon_alerts_firing')})", "alerts {{severity}}"), width=8),
            ]),
            ("Ingestion", [
                series("Feedback mail ingested",
                       q(f"sum by (source, outcome) (increase("
                         f"{m('repmon_processed_messages_total')}[$__rate_interval]))",
                         "{{source}} {{outcome}}"), bars=True, stack=True, width=8),
                series("Quarantined messages held", q(m("repmon_quarantine_held_messages"), "held"), width=8,
                       description="Messages repmon could not turn into events, kept with the reason "
                                   "(`repmon quarantine`)."),
                table("Metric families", q(m("repmon_metrics_family_up")), hide=(), width=8, mappings=STATE_MAPPING,
                      description="Families skipped at the last scrape (missing table, query error) show "
                                  "'skipped'; see repmon_metrics_collect_errors_total."),
            ]),
        ],
    )


def blocklists() -> Dashboard:
    pick = {"zone": "~$zone", "target": "~$target"}
    listed = m("repmon_dnsbl_listed", **pick)
    return Dashboard(
        uid="repmon-blocklists",
        title="repmon / Blocklists and provider reputation",
        description="DNS blocklist states per sending IP / domain and zone, zone health, Microsoft SNDS and "
                    "Google Postmaster reputation.",
        variables=[_datasource_variable(), _instance_variable(),
                   _label_variable("zone", "Zone", "repmon_dnsbl_targets", "zone"),
                   _label_variable("target", "Target", "repmon_dnsbl_listed", "target")],
        rows=[
            ("Now", [
                stat("Listed", f"sum({listed})", thresholds=ANY_IS_BAD, description="(target, zone) pairs listed."),
                stat("Unknown", f"sum({m('repmon_dnsbl_unknown', **pick)})", thresholds=[(None, "green"), (1,
                                                                                                           "orange")],
                     description="Pairs whose lookups kept failing: we do not know whether they are listed."),
                stat("Zones not OK", f"sum({m('repmon_dnsbl_zone_status', zone='~$zone', status='!ok')})",
                     thresholds=[(None, "green"), (1, "orange")],
                     description="Zones whose RFC 5782 test points answer wrongly: their answers are not trusted."),
                stat("Since last check", f"time() - max({m('repmon_dnsbl_last_check_timestamp_seconds')})", unit="s",
                     thresholds=[(None, "green"), (3600, "orange"), (6 * 3600, "red")]),
                stat("SNDS red IPs", f"sum({m('repmon_snds_filter_result', result='red')})", thresholds=ANY_IS_BAD),
                stat("SNDS blocked ranges", f"sum({m('repmon_snds_blocked_ranges')})", thresholds=ANY_IS_BAD),
            ]),
            ("Blocklists", [
                table("Current listings", q(f"{listed} == 1"),
                      description="Every (target, zone) pair listed now."),
                table("Zone health", q(f"{m('repmon_dnsbl_zone_status', zone='~$zone')} == 1"),
                      description="Status of each zone at the last cycle."),
                series("Listings by zone", q(f"sum by (zone) ({listed})", "{{zone}}"), stack=True),
                series("Targets by state", q(f"sum by (state) ({m('repmon_dnsbl_targets', zone='~$zone')})",
                                             "{{state}}"), stack=True),
                table("Failing lookups", q(f"{m('repmon_dnsbl_error_streak', **pick)} > 0"), hide=(),
                      description="Pairs with failed lookups in a row (Value); after [dnsbl] unknown_after_errors "
                                  "the state turns unknown."),
                series("Blocklist changes",
                       q(f"sum by (kind) (increase({m('repmon_signal_events_total', source='~dnsbl|dnsbl_zone')}"
                         f"[$__rate_interval]))", "{{kind}}"), bars=True, stack=True),
            ]),
            ("Provider reputation", [
                table("SNDS filter result", q(f"{m('repmon_snds_filter_result')} == 1"), width=8),
                series("SNDS complaint rate", q(m("repmon_snds_complaint_ratio"), "{{ip}}"), unit="percentunit",
                       width=8),
                series("SNDS trap hits", q(m("repmon_snds_trap_hits"), "{{ip}}"), width=8),
                table("Google domain reputation", q(f"{m('repmon_postmaster_domain_reputation')} == 1"), width=8),
                series("Google spam rate", q(m("repmon_postmaster_spam_ratio"), "{{domain}}"), unit="percentunit",
                       width=8),
                table("Signal feeds", q(m("repmon_signal_fetch_up"), "up"),
                      q(m("repmon_signal_fetch_consecutive_failures"), "failures"), hide=(), width=8,
                      description="Value #A: 1 when the last fetch worked; Value #B: failures in a row."),
            ]),
        ],
    )


def dmarc_tls() -> Dashboard:
    dmarc = m("repmon_dmarc_messages_total", domain="~$domain")
    tls = m("repmon_tls_report_sessions_total", policy_domain="~$policy_domain")
    dmarc_enforced = m("repmon_dmarc_messages_total", domain="~$domain", disposition="~quarantine|reject")
    tls_failed = m("repmon_tls_report_sessions_total", policy_domain="~$policy_domain", result="failed")
    tls_failures = m("repmon_tls_failed_sessions_total", policy_domain="~$policy_domain")
    source_messages = m("repmon_dmarc_source_messages_total")
    return Dashboard(
        uid="repmon-dmarc-tls",
        title="repmon / DMARC and TLS reports",
        description="What DMARC aggregate and failure reports and SMTP TLS reports say about our domains.",
        variables=[_datasource_variable(), _instance_variable(),
                   _label_variable("domain", "Domain", "repmon_dmarc_messages_total", "domain"),
                   _label_variable("policy_domain", "TLS policy domain", "repmon_tls_report_sessions_total",
                                   "policy_domain")],
        rows=[
            ("In the time range", [
                stat("DMARC pass rate",
                     f"sum(increase({m('repmon_dmarc_messages_total', domain='~$domain', result='pass')}[$__range])) "
                     f"/ sum(increase({dmarc}[$__range]))", unit="percentunit", decimals=2,
                     thresholds=[(None, "red"), (0.9, "orange"), (0.98, "green")]),
                stat("Messages failing DMARC",
                     f"sum(increase({m('repmon_dmarc_messages_total', domain='~$domain', result='fail')}[$__range]))"),
                stat("Quarantined / rejected",
                     f"sum(increase({dmarc_enforced}"
                     f"[$__range]))", description="Messages the receivers quarantined or rejected under DMARC."),
                stat("Failure reports",
                     f"sum(increase({m('repmon_dmarc_failure_reports_total', domain='~$domain')}[$__range]))"),
                stat("TLS failed sessions",
                     f"sum(increase({tls_failed}"
                     f"[$__range])) / sum(increase({tls}[$__range]))", unit="percentunit", decimals=2,
                     thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")]),
            ]),
            ("DMARC", [
                series("Messages by DMARC result", q(f"sum by (result) (increase({dmarc}[$__rate_interval]))",
                                                   "{{result}}"), bars=True, stack=True),
                series("Aligned DKIM and SPF results",
                       q(f"sum by (dkim) (increase({dmarc}[$__rate_interval]))", "DKIM {{dkim}}"),
                       q(f"sum by (spf) (increase({dmarc}[$__rate_interval]))", "SPF {{spf}}"), bars=True),
                table("Failing sources",
                      q(f"sort_desc(sum by (domain, source_ip) (increase("
                        f"{m('repmon_dmarc_messages_total', domain='~$domain', result='fail')}[$__range])))"),
                      hide=(), description="Messages failing DMARC per source in the time range; sources outside "
                                           "our networks are summed up as 'other'."),
                series("Receiver disposition", q(f"sum by (disposition) (increase({dmarc}[$__rate_interval]))",
                                                 "{{disposition}}"), bars=True, stack=True),
                series("Failure reports by mechanism",
                       q(f"sum by (auth_failure) (increase({m('repmon_dmarc_failure_reports_total', domain='~$domain')}"
                         f"[$__rate_interval]))", "{{auth_failure}}"), bars=True, stack=True),
                table("DNS authentication records", q(f"{m('repmon_dns_auth_status')} == 1"),
                      description="Latest SPF, DMARC, DKIM, MTA-STS and TLS-RPT check per sending domain."),
            ]),
            ("DMARC sources", [
                table("Top failing sources",
                      q(f"sort_desc(topk(15, sum by (source, source_type, ours) (increase("
                        f"{m('repmon_dmarc_source_messages_total', result='fail')}[$__range]))))"),
                      hide=(), description="Messages failing DMARC per sending source (service, else AS, else IP) "
                                           "in the time range. ours = one of our IPs: fix its DKIM/SPF; otherwise "
                                           "someone sends as us (a forwarder, a vendor to authorise, or abuse). "
                                           "Beyond the top sources, the rest is summed up as 'other'. "
                                           "`repmon dmarc sources --failing` lists the IPs behind each."),
                table("DMARC pass rate by source",
                      q(f"sort(sum by (source, ours) (increase({m('repmon_dmarc_source_messages_total', result='pass')}"
                        f"[$__range])) / sum by (source, ours) (increase({source_messages}[$__range])))"),
                      hide=(), unit="percentunit",
                      description="Share of each source's messages that passed DMARC in the time range."),
                series("Messages by service type",
                       q(f"sum by (source_type) (increase({source_messages}[$__rate_interval]))", "{{source_type}}"),
                       bars=True, stack=True,
                       description="Types from parsedmarc's service map (Email Provider, Marketing, ...); "
                                   "empty when the source is not a known service."),
                series("Messages by source",
                       q(f"sum by (source) (increase({source_messages}[$__rate_interval]))", "{{source}}"),
                       bars=True, stack=True),
                geomap("Messages by country",
                       f"sum by (country) (increase({m('repmon_dmarc_country_messages_total')}[$__range]))",
                       description="Country of the source IPs (IPinfo Lite, as parsedmarc), all DMARC results."),
                geomap("Failing messages by country",
                       f"sum by (country) (increase("
                       f"{m('repmon_dmarc_country_messages_total', result='fail')}[$__range]))",
                       description="Country of the source IPs of mail that failed DMARC."),
            ]),
            ("SMTP TLS reports", [
                series("TLS sessions by result", q(f"sum by (result) (increase({tls}[$__rate_interval]))",
                                                   "{{result}}"), bars=True, stack=True),
                series("TLS failures by type",
                       q(f"sum by (policy_domain, result_type) (increase("
                         f"{tls_failures}[$__rate_interval]))",
                         "{{policy_domain}} {{result_type}}"), bars=True, stack=True),
            ]),
            ("Google Postmaster", [
                series("Authentication success rate", q(m("repmon_postmaster_auth_success_ratio"),
                                                        "{{domain}} {{mechanism}}"), unit="percentunit", min=None),
                series("Delivery error rate", q(m("repmon_postmaster_delivery_error_ratio"), "{{domain}}"),
                       unit="percentunit"),
            ]),
        ],
    )


def sender_lanes() -> Dashboard:
    lane = {"source_ip": "~$source_ip", "destination": "~$destination"}
    deliveries = m("repmon_sender_deliveries_total", **lane)
    queued = m("repmon_sender_queue_messages", state="queued", **lane)
    deferred = m("repmon_sender_deliveries_total", result="deferred", **lane)
    return Dashboard(
        uid="repmon-sender",
        title="repmon / Sender lanes",
        description="The built-in sender: queue, deliveries and the state of each lane (source IP x provider).",
        variables=[_datasource_variable(), _instance_variable(),
                   _label_variable("source_ip", "Source IP", "repmon_sender_deliveries_total", "source_ip"),
                   _label_variable("destination", "Destination", "repmon_sender_deliveries_total", "destination"),
                   _window_variable("1h")],
        rows=[
            ("Now", [
                stat("Queued", f"sum({queued})"),
                stat("In flight", f"sum({m('repmon_sender_queue_messages', state='inflight', **lane)})"),
                stat("Lanes stopped", f"sum({m('repmon_sender_lanes', state='~paused|halted|suspended')})",
                     thresholds=[(None, "green"), (1, "orange")],
                     description="Lanes paused by an operator or the policy engine, halted or suspended by a "
                                 "response rule."),
                stat("Lanes slowed", f"sum({m('repmon_sender_lanes', state='slowed')})",
                     thresholds=[(None, "green"), (1, "yellow")]),
                stat("Delivered in range",
                     f"sum(increase({m('repmon_sender_deliveries_total', result='delivered', **lane)}[$__range]))"),
                stat("Deferral rate ($window)",
                     f"sum(increase({deferred}[$window])) / sum(increase({deliveries}[$window]))",
                     unit="percentunit", decimals=1, thresholds=[(None, "green"), (0.1, "orange"), (0.3, "red")]),
            ]),
            ("Deliveries", [
                series("Deliveries by result (messages/s)",
                       q(f"sum by (result) (rate({deliveries}[$__rate_interval]))", "{{result}}"), stack=True),
                series("Delivered per lane (messages/s)",
                       q(f"sum by (source_ip, destination) (rate("
                         f"{m('repmon_sender_deliveries_total', result='delivered', **lane)}[$__rate_interval]))",
                         "{{source_ip}} → {{destination}}")),
                series("Deferral rate by lane ($window window)",
                       q(f"sum by (source_ip, destination) (increase({deferred}[$window])) / "
                         f"sum by (source_ip, destination) (increase({deliveries}[$window]))",
                         "{{source_ip}} → {{destination}}"), unit="percentunit"),
                series("SMTP-time bounces by lane",
                       q(f"sum by (source_ip, destination) (increase("
                         f"{m('repmon_sender_deliveries_total', result='bounced', **lane)}[$__rate_interval]))",
                         "{{source_ip}} → {{destination}}"), bars=True, stack=True),
            ]),
            ("Lanes", [
                table("Lanes not sending freely",
                      q(f"{m('repmon_sender_lane_state', state='!sending', **lane)} == 1"),
                      description="Lanes paused, halted, suspended or slowed now (per-MX-host lanes are only "
                                  "counted in the stats above)."),
                series("Rate limit in force (messages/s)",
                       q(m("repmon_sender_lane_rate_limit_messages_per_second", **lane),
                         "{{source_ip}} → {{destination}}")),
                series("Queue by lane", q(f"sum by (source_ip, destination) ({queued})",
                                          "{{source_ip}} → {{destination}}"), stack=True),
                series("Directives and rule actions in force",
                       q(f"sum by (kind) ({m('repmon_sender_lane_directives_active')})", "directive {{kind}}"),
                       q(f"sum by (action) ({m('repmon_sender_lane_actions_active')})", "rule {{action}}")),
            ]),
        ],
    )


def all_dashboards() -> list[Dashboard]:
    return [overview(), blocklists(), dmarc_tls(), sender_lanes()]


def file_name(dashboard: dict[str, Any]) -> str:
    return f"{dashboard['uid'].removeprefix('repmon-')}.json"


# --- reading queries back (for checks and tests) ------------------------------------------------

_METRIC_NAME = re.compile(r"\b(repmon_[a-z0-9_]+)\b")


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(panel title, refId, target) of every query of a dashboard JSON."""
    out = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner.get("title", ""), target.get("refId", ""), target))
    return out


def metric_names(expr: str) -> set[str]:
    return set(_METRIC_NAME.findall(expr))
