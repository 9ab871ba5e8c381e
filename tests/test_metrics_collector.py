"""The Prometheus collector against real databases (SQLite and PostgreSQL):
metric names, labels and values from stored rows, running totals, caching,
label hygiene and families whose tables are missing.

The rows come from tests/fixtures/_metrics_rows.py (test_metrics_prometheus.py uses them too).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import delete, text
from sqlalchemy.engine import Engine
from sqlmodel import col

from monitor.core.db import make_engine, session_scope
from monitor.metrics.catalog import METRICS
from monitor.metrics.collector import RepmonCollector
from monitor.metrics.reading import reader_engine
from monitor.parts import upgrade_schema
from monitor.storage.models import (
    DmarcFailure,
    DmarcRecord,
    DmarcReport,
    StoredEvent,
)
from tests.fixtures._metrics_rows import (
    B_COMPLAINTS,
    B_DELIVERED,
    OURS,
    feedback_rows,
    flushed_id,
    store_batch_a,
    store_batch_b,
    store_events,
)

# --- helpers -----------------------------------------------------------------------------------

def samples(collector: RepmonCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted label items: value}}."""
    out: dict[str, dict] = {}
    for metric in collector.collect():
        for sample in metric.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    key = tuple(sorted(labels.items()))
    assert key in found.get(name, {}), f"{name}{labels} not exported; have {sorted(found.get(name, {}))[:20]}"
    return found[name][key]


@pytest.fixture
def reader(migrated_db_url: str):
    engine = reader_engine(migrated_db_url)
    yield engine
    engine.dispose()


NOW = datetime.now(UTC).replace(microsecond=0)


def make_collector(reader: Engine, **kwargs) -> RepmonCollector:
    rates = {"gmail": 20.0, "yahoo": 10.0}
    return RepmonCollector(reader, own_networks=OURS, lane_rate=rates.get, refresh_s=0, **kwargs)


# --- tests -------------------------------------------------------------------------------------

def test_every_family_from_stored_rows(engine: Engine, reader: Engine) -> None:
    store_batch_a(engine, NOW)
    found = samples(make_collector(reader))

    assert set(found["repmon_metrics_family_up"].values()) == {1.0}, found["repmon_metrics_family_up"]
    assert "repmon_metrics_collect_errors_total" not in found

    assert value(found, "repmon_events_stored_total", kind="bounce", reason="userunknown", hard_or_soft="hard") == 3
    assert value(found, "repmon_events_stored_total", kind="bounce", reason="mailboxfull", hard_or_soft="soft") == 2
    assert value(found, "repmon_events_stored_total", kind="feedback", reason="", hard_or_soft="") == 3
    assert value(found, "repmon_events_stored_total", kind="auto_reply", reason="", hard_or_soft="") == 1
    assert value(found, "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2
    assert value(found, "repmon_feedback_events_total", feedback_type="opt-out", complaint="false") == 1
    assert value(found, "repmon_processed_messages_total", source="imap:fbl", outcome="stored") == 5
    assert value(found, "repmon_quarantined_messages_total") == 2
    assert value(found, "repmon_quarantine_held_messages") == 1

    # Suppressions: the expired soft bounce is not counted.
    assert value(found, "repmon_suppressed_addresses", reason="hard_bounce") == 3
    assert value(found, "repmon_suppressed_addresses", reason="soft_bounce") == 1
    assert sum(found["repmon_suppressed_addresses"].values()) == 7

    # DMARC: our IP keeps its label, the others are "other"; result = aligned DKIM or SPF pass.
    assert value(found, "repmon_dmarc_messages_total", domain="example.com", source_ip="192.0.2.10", result="pass",
                 dkim="pass", spf="pass", disposition="none") == 100
    assert value(found, "repmon_dmarc_messages_total", domain="example.com", source_ip="192.0.2.10", result="pass",
                 dkim="fail", spf="pass", disposition="none") == 5
    assert value(found, "repmon_dmarc_messages_total", domain="example.com", source_ip="other", result="fail",
                 dkim="fail", spf="fail", disposition="reject") == 20
    assert value(found, "repmon_dmarc_failure_reports_total", domain="example.com", auth_failure="dkim") == 2
    # DMARC sources: the service (else the IP), its type, ours or not; countries.
    assert value(found, "repmon_dmarc_source_messages_total", source="Example Mailer", source_type="Email Provider",
                 ours="true", result="pass") == 105
    assert value(found, "repmon_dmarc_source_messages_total", source="Bulk Sender Inc", source_type="Marketing",
                 ours="false", result="fail") == 20
    assert value(found, "repmon_dmarc_source_messages_total", source="198.51.100.9", source_type="",
                 ours="false", result="fail") == 7
    assert value(found, "repmon_dmarc_country_messages_total", country="US", result="pass") == 105
    assert value(found, "repmon_dmarc_country_messages_total", country="DE", result="fail") == 20
    assert value(found, "repmon_dmarc_country_messages_total", country="", result="fail") == 7
    assert value(found, "repmon_tls_report_sessions_total", policy_domain="example.com", policy_type="sts",
                 result="failed") == 10
    assert value(found, "repmon_tls_report_sessions_total", policy_domain="example.com", policy_type="sts",
                 result="successful") == 1000
    assert value(found, "repmon_tls_failed_sessions_total", policy_domain="example.com",
                 result_type="certificate-expired") == 6

    # Blocklists.
    assert value(found, "repmon_dnsbl_listed", target="192.0.2.10", target_kind="ip", zone="zen.spamhaus.org") == 1
    assert value(found, "repmon_dnsbl_listed", target="192.0.2.10", target_kind="ip", zone="bl.spamcop.net") == 0
    assert value(found, "repmon_dnsbl_unknown", target="example.com", target_kind="domain",
                 zone="dbl.spamhaus.org") == 1
    assert value(found, "repmon_dnsbl_error_streak", target="example.com", target_kind="domain",
                 zone="dbl.spamhaus.org") == 4
    assert value(found, "repmon_dnsbl_targets", zone="zen.spamhaus.org", state="clean") == 1
    assert value(found, "repmon_dnsbl_targets", zone="zen.spamhaus.org", state="unknown") == 0
    assert value(found, "repmon_dnsbl_last_check_timestamp_seconds") == NOW.timestamp()
    assert value(found, "repmon_dnsbl_zone_status", zone="dbl.spamhaus.org", status="broken") == 1
    assert value(found, "repmon_dnsbl_zone_status", zone="dbl.spamhaus.org", status="ok") == 0
    assert value(found, "repmon_signal_events_total", source="dnsbl", kind="listed") == 1

    # Latest DNS check wins; postmaster per figure latest day, v2 over v1 on the same day.
    assert value(found, "repmon_dns_auth_status", domain="example.com", record="dkim", status="invalid") == 1
    assert value(found, "repmon_dns_auth_status", domain="example.com", record="dkim", status="ok") == 0
    assert value(found, "repmon_dns_auth_status", domain="example.com", record="mta_sts", status="missing") == 1
    assert value(found, "repmon_postmaster_spam_ratio", provider="google", domain="example.com") == 0.002
    assert value(found, "repmon_postmaster_auth_success_ratio", provider="google", domain="example.com",
                 mechanism="dkim") == 0.97
    assert value(found, "repmon_postmaster_domain_reputation", provider="google", domain="example.com",
                 reputation="high") == 1
    day = datetime.combine((NOW - timedelta(days=1)).date(), datetime.min.time(), UTC)
    assert value(found, "repmon_postmaster_day_timestamp_seconds", provider="google",
                 domain="example.com") == day.timestamp()
    assert value(found, "repmon_snds_filter_result", ip="192.0.2.10", result="green") == 1
    assert value(found, "repmon_snds_filter_result", ip="192.0.2.10", result="red") == 0
    assert value(found, "repmon_snds_complaint_ratio", ip="192.0.2.11") == 0.004
    assert value(found, "repmon_snds_blocked_ranges") == 1
    assert value(found, "repmon_signal_fetch_up", source="snds:data") == 0
    assert value(found, "repmon_signal_fetch_consecutive_failures", source="snds:data") == 3

    # Sender: queue, deliveries, lanes (per-MX lanes folded into "mx:other").
    assert value(found, "repmon_sender_queue_messages", source_ip="192.0.2.10", destination="gmail",
                 state="queued") == 4
    assert value(found, "repmon_sender_queue_messages", source_ip="", destination="unrouted", state="queued") == 3
    assert value(found, "repmon_sender_queue_messages", source_ip="192.0.2.11", destination="gmail",
                 state="inflight") == 1
    assert value(found, "repmon_sender_deliveries_total", source_ip="192.0.2.10", destination="gmail",
                 result="delivered") == 50
    assert value(found, "repmon_sender_deliveries_total", source_ip="192.0.2.11", destination="mx:other",
                 result="expired") == 1
    lane = {"source_ip": "192.0.2.10", "destination": "yahoo"}
    assert value(found, "repmon_sender_lane_state", state="paused", **lane) == 1
    assert value(found, "repmon_sender_lane_state", state="sending", **lane) == 0
    assert value(found, "repmon_sender_lane_state", source_ip="192.0.2.10", destination="gmail",
                 state="suspended") == 1
    assert value(found, "repmon_sender_lane_state", source_ip="192.0.2.11", destination="gmail", state="slowed") == 1
    assert value(found, "repmon_sender_lane_state", source_ip="192.0.2.11", destination="gmail", state="sending") == 1
    assert value(found, "repmon_sender_lane_rate_limit_messages_per_second", source_ip="192.0.2.11",
                 destination="gmail") == 2.0
    assert value(found, "repmon_sender_lane_rate_limit_messages_per_second", source_ip="192.0.2.10",
                 destination="yahoo") == 10.0
    assert not any(dict(k)["destination"].startswith("mx:") for k in found["repmon_sender_lane_state"])
    assert value(found, "repmon_sender_lanes", state="halted") == 1  # the per-MX lane
    assert value(found, "repmon_sender_lanes", state="sending") == 1  # only 192.0.2.11|gmail
    assert value(found, "repmon_sender_lane_directives_active", kind="pause") == 1
    assert value(found, "repmon_sender_lane_actions_active", action="halt") == 1

    # Health of our IPs, domains and lanes; recipient domains stay out.
    assert value(found, "repmon_health_score", subject_kind="lane", subject="192.0.2.10/yahoo") == 61
    assert value(found, "repmon_health_state", subject_kind="lane", subject="192.0.2.10/yahoo", state="warning") == 1
    assert value(found, "repmon_health_state", subject_kind="ip", subject="192.0.2.10", state="warning") == 0
    assert not any(dict(k)["subject_kind"] == "rdomain" for k in found["repmon_health_score"])
    assert value(found, "repmon_policy_actions_active", action="pause") == 1
    assert value(found, "repmon_policy_actions_active", action="slow") == 0
    assert value(found, "repmon_alerts_firing", severity="warning") == 1
    assert value(found, "repmon_alerts_firing", severity="critical") == 0

    # Every exported name is in the catalog, with the catalog's labels.
    for name, series in found.items():
        if name.startswith("repmon_"):
            assert name in METRICS, name
            for labels in series:
                assert tuple(k for k, _ in labels) == tuple(sorted(METRICS[name].labels)), name


def test_running_totals_add_new_rows_and_survive_deletion(engine: Engine, reader: Engine) -> None:

    clock = [1000.0]
    collector = make_collector(reader, clock=lambda: clock[0])
    store_batch_a(engine, NOW)
    first = samples(collector)
    clock[0] += 400  # past PostgreSQL's settle time: batch A is in the kept totals
    store_batch_b(engine, NOW)
    second = samples(collector)
    clock[0] += 400
    samples(collector)  # settles batch B into the kept totals (PostgreSQL)
    key = {"kind": "bounce", "reason": "userunknown", "hard_or_soft": "hard"}
    assert value(first, "repmon_events_stored_total", **key) == 3
    assert value(second, "repmon_events_stored_total", **key) == 5
    assert value(second, "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2 + B_COMPLAINTS
    assert value(second, "repmon_dmarc_messages_total", domain="example.com", source_ip="192.0.2.10",
                 result="pass", dkim="pass", spf="pass", disposition="none") == 150
    assert value(second, "repmon_tls_failed_sessions_total", policy_domain="example.com",
                 result_type="certificate-expired") == 16
    delivered = sum(v for k, v in second["repmon_sender_deliveries_total"].items()
                    if dict(k)["result"] == "delivered")
    assert delivered == 104 + B_DELIVERED

    # Retention deletes old rows: a counter counts what was stored, it does not go down.
    with session_scope(engine) as session:
        session.execute(delete(StoredEvent).where(col(StoredEvent.kind) == "bounce"))
    third = samples(collector)
    assert value(third, "repmon_events_stored_total", **key) == 5

    # A new process starts from what the table holds now.
    fresh = samples(make_collector(reader))
    assert ("repmon_events_stored_total" not in fresh
            or tuple(sorted(key.items())) not in fresh["repmon_events_stored_total"])


def test_results_are_cached_for_refresh_s(engine: Engine, reader: Engine) -> None:
    clock = [1000.0]
    collector = RepmonCollector(reader, refresh_s=30, clock=lambda: clock[0])
    store_events(engine, NOW, feedback_rows("abuse", True, 1))
    assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 1
    store_events(engine, NOW, feedback_rows("abuse", True, 1))
    clock[0] += 29
    assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 1
    clock[0] += 1
    assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2


def test_hostile_values_do_not_mint_series_and_no_address_is_exported(engine: Engine, reader: Engine) -> None:

    store_events(engine, NOW, [{"kind": "feedback", "feedback_type": "x-evil\"}{a=\"b\"}", "is_complaint": True},
                          {"kind": "feedback", "feedback_type": "Abuse", "is_complaint": True},
                          {"kind": "bounce", "reason": "Evil Reason!\n", "hard_or_soft": "hard"}])
    with session_scope(engine) as session:
        session.add(DmarcFailure(occurred_at=NOW, reported_domain="exa mple.com\n", auth_failure="dkim, spf"))
    registry = CollectorRegistry()
    registry.register(make_collector(reader))
    text_out = generate_latest(registry).decode()
    assert 'repmon_feedback_events_total{complaint="true",feedback_type="other"} 1.0' in text_out
    assert 'repmon_feedback_events_total{complaint="true",feedback_type="abuse"} 1.0' in text_out
    assert 'reason="other"' in text_out
    assert 'repmon_dmarc_failure_reports_total{auth_failure="dkim",domain="other"} 1.0' in text_out
    assert "someone@example.net" not in text_out and "example.net" not in text_out


def test_dnsbl_series_limit_keeps_only_interesting_pairs(engine: Engine, reader: Engine) -> None:
    store_batch_a(engine, NOW)
    found = samples(make_collector(reader, dnsbl_series_limit=3))
    pairs = {(dict(k)["target"], dict(k)["zone"]) for k in found["repmon_dnsbl_listed"]}
    # listed, unknown and the clean pair with failing lookups stay; quiet clean pairs go.
    assert pairs == {("192.0.2.10", "zen.spamhaus.org"), ("example.com", "dbl.spamhaus.org"),
                     ("192.0.2.11", "bl.spamcop.net")}
    assert value(found, "repmon_dnsbl_targets", zone="bl.spamcop.net", state="clean") == 2


def test_missing_tables_skip_their_family_only(db_url: str) -> None:

    upgrade_schema(db_url, revision="0001_core")  # no signals, sender or health tables
    writer = make_engine(db_url)
    reader = reader_engine(db_url)
    try:
        store_events(writer, NOW, feedback_rows("abuse", True, 2))
        collector = make_collector(reader)
        samples(collector)
        found = samples(collector)
        up = {dict(k)["family"]: v for k, v in found["repmon_metrics_family_up"].items()}
        assert up["events"] == 1 and up["suppressions"] == 1
        for name in ("dnsbl", "dnsbl_zones", "postmaster", "snds", "sender_queue", "sender_deliveries",
                     "sender_lanes", "health", "policy", "alerts"):
            assert up[name] == 0, name
            assert value(found, "repmon_metrics_collect_errors_total", family=name, reason="missing_table") == 2
        assert value(found, "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2
        assert "repmon_dnsbl_listed" not in found
    finally:
        writer.dispose()
        reader.dispose()


def test_unreachable_database_still_answers(tmp_path) -> None:
    engine = reader_engine(f"sqlite:///{tmp_path / 'missing' / 'nothing' / 'x.db'}")
    found = samples(RepmonCollector(engine, refresh_s=0))
    assert set(found["repmon_metrics_family_up"].values()) == {0.0}
    assert list(found["repmon_build_info"].values()) == [1.0]


@pytest.mark.postgres
def test_rows_committed_out_of_id_order_are_counted(postgres_url: str) -> None:
    """PostgreSQL hands out ids at insert time: a transaction that commits late
    makes a lower id appear after a higher one. The running totals must
    still count it (rows settle only after settle_s)."""

    upgrade_schema(postgres_url)
    writer = make_engine(postgres_url)
    reader = reader_engine(postgres_url)
    clock = [1000.0]
    collector = RepmonCollector(reader, refresh_s=0, settle_s=300, clock=lambda: clock[0])
    try:
        with writer.connect() as slow:
            slow.begin()
            slow.execute(text("INSERT INTO events (kind, occurred_at, stored_at, is_complaint, feedback_type) "
                              "VALUES ('feedback', now(), now(), true, 'abuse')"))  # takes the lower id, commits later
            store_events(writer, NOW, feedback_rows("abuse", True, 1))
            assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse",
                         complaint="true") == 1
            clock[0] += 10
            slow.commit()
        assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2
        clock[0] += 600  # both settle into the kept totals, counted once
        assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 2
        store_events(writer, NOW, feedback_rows("abuse", True, 1))
        assert value(samples(collector), "repmon_feedback_events_total", feedback_type="abuse", complaint="true") == 3
    finally:
        writer.dispose()
        reader.dispose()


def test_catalog_families_match_the_collector(reader: Engine) -> None:
    families = {name for name, _ in make_collector(reader).families} | {"self"}
    assert {d.family for d in METRICS.values()} == families
    for name, definition in METRICS.items():
        assert name.startswith("repmon_")
        assert name.endswith("_total") == (definition.type == "counter"), name


def test_dmarc_sources_keep_the_top_sources_and_sum_up_the_rest(engine: Engine, reader: Engine) -> None:
    """Label cardinality is bounded: the largest DMARC_SOURCE_SERIES sources
    by volume keep series of their own, every other source is "other"."""
    from monitor.metrics.collector import DMARC_SOURCE_SERIES

    now = datetime.now(UTC)
    with session_scope(engine) as session:
        report = DmarcReport(report_id="many-sources", org_name="google.com", domain="example.com",
                             begin=now - timedelta(days=1), end=now)
        session.add(report)
        session.flush()
        for i in range(DMARC_SOURCE_SERIES + 30):
            session.add(DmarcRecord(report_pk=flushed_id(report.id), domain="example.com", begin=report.begin, end=report.end,
                                    source_ip=f"198.18.{i // 256}.{i % 256}", count=1000 - i, dkim="fail",
                                    spf="fail", source_name=f"Service {i:03d}", source_type=f"type {i}",
                                    source_country="XX" if i % 2 else "x-1"))
    collector = make_collector(reader)
    found = samples(collector)["repmon_dmarc_source_messages_total"]
    names = {dict(labels)["source"] for labels in found}
    assert len(names) == DMARC_SOURCE_SERIES + 1 and "other" in names
    assert "Service 000" in names and f"Service {DMARC_SOURCE_SERIES - 1:03d}" in names
    assert f"Service {DMARC_SOURCE_SERIES:03d}" not in names
    assert sum(found.values()) == sum(1000 - i for i in range(DMARC_SOURCE_SERIES + 30))
    countries = samples(collector)["repmon_dmarc_country_messages_total"]
    assert {dict(labels)["country"] for labels in countries} == {"XX", "other"}
