"""Series from reports are bounded (issue 14): one TLS report with 10,000
policy domains added 30,000 series. Report-derived labels keep the top N
values (by volume) and fold the rest into "other"; totals are unchanged.
And a scrape of a database holding 1M DMARC records stays cheap."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine

from monitor.core.db import session_scope
from monitor.metrics.collector import LabelCap, RepmonCollector
from monitor.storage.models import DmarcRecord, DmarcReport, TlsPolicyResult, TlsReport

NOW = datetime.now(UTC).replace(microsecond=0)


def _series(collector: RepmonCollector, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict = {}
    for metric in collector.collect():
        for sample in metric.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _tls_report(engine: Engine, domains: list[tuple[str, int, int]]) -> None:
    with session_scope(engine) as session:
        report = TlsReport(report_id=f"t-{time.time_ns()}", organization_name="hostile.example",
                           begin=NOW - timedelta(days=1), end=NOW)
        session.add(report)
        session.flush()
        assert report.id is not None
        session.add_all([TlsPolicyResult(report_pk=report.id, policy_domain=domain, policy_type="sts",
                                         successful_session_count=ok, failed_session_count=failed,
                                         failure_details=[{"result_type": "certificate-expired",
                                                           "failed_session_count": failed}] if failed else [])
                         for domain, ok, failed in domains])


def test_one_tls_report_with_10000_policy_domains_adds_bounded_series(sqlite_engine: Engine) -> None:
    _tls_report(sqlite_engine, [("example.com", 50_000, 10)])
    hostile = [(f"d{i}.hostile.example", 1, 1) for i in range(10_000)]
    _tls_report(sqlite_engine, hostile)
    collector = RepmonCollector(sqlite_engine, refresh_s=0, series_limit=50)
    sessions = _series(collector, "repmon_tls_report_sessions_total")
    failed = _series(collector, "repmon_tls_failed_sessions_total")
    domains = {dict(k)["policy_domain"] for k in sessions} | {dict(k)["policy_domain"] for k in failed}
    assert len(domains) <= 51 and "other" in domains
    assert "example.com" in domains  # the top domain by volume keeps its series
    assert len(sessions) + len(failed) <= 3 * 51
    assert sum(sessions.values()) == 50_000 + 10 + 2 * 10_000  # nothing lost, only folded
    # sticky: a later report for an admitted domain still counts under it; a new domain is "other"
    _tls_report(sqlite_engine, [("example.com", 5, 0), ("new.hostile.example", 7, 0)])
    again = _series(collector, "repmon_tls_report_sessions_total")
    ok = {(dict(k)["policy_domain"], dict(k)["result"]): v for k, v in again.items()}
    assert ok[("example.com", "successful")] == 50_005
    assert {dict(k)["policy_domain"] for k in again} == {dict(k)["policy_domain"] for k in sessions}


def test_dmarc_domains_are_capped_too(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as session:
        report = DmarcReport(report_id="r-many", org_name="google.com", domain="example.com",
                             begin=NOW - timedelta(days=1), end=NOW)
        session.add(report)
        session.flush()
        assert report.id is not None
        session.add_all([DmarcRecord(report_pk=report.id, domain=f"d{i}.example", begin=report.begin, end=report.end,
                                     source_ip="198.51.100.1", count=1, disposition="none", dkim="pass", spf="pass")
                         for i in range(3000)])
    collector = RepmonCollector(sqlite_engine, refresh_s=0, series_limit=20)
    series = _series(collector, "repmon_dmarc_messages_total")
    assert len({dict(k)["domain"] for k in series}) == 21
    assert sum(series.values()) == 3000


def test_label_cap_admits_by_volume_and_keeps_what_it_admitted() -> None:
    cap = LabelCap(2)
    cap.admit({"small": 1.0, "big": 100.0, "mid": 10.0})
    assert (cap("big"), cap("mid"), cap("small")) == ("big", "mid", "other")
    cap.admit({"huge": 1e9})
    assert cap("huge") == "other" and cap("big") == "big"


def test_scrape_with_1m_stored_records_is_cheap(tmp_path) -> None:
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema

    url = f"sqlite:///{tmp_path / 'big.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            session.add(DmarcReport(id=1, report_id="r1", org_name="google.com", domain="example.com",
                                    begin=NOW - timedelta(days=1), end=NOW))
        with engine.begin() as conn:
            begin, end = conn.execute(text('SELECT begin, "end" FROM dmarc_reports')).one()
            conn.execute(text(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) "
                "INSERT INTO dmarc_records (report_pk, domain, begin, \"end\", source_ip, count, disposition, dkim, "
                "spf) SELECT 1, 'd' || (i % 5000) || '.example', :b, :e, "
                "'198.51.100.' || (i % 50), 1, 'none', 'pass', 'fail' FROM n"),
                {"b": begin, "e": end})
        collector = RepmonCollector(engine, refresh_s=15.0)
        list(collector.collect())  # the one full pass at start
        cached = time.process_time()
        for _ in range(10):
            list(collector.collect())
        assert (time.process_time() - cached) / 10 < 0.1
        # past refresh_s: a real refresh reads only new rows (none here) and re-reads the gauges
        collector.refresh_s = 0
        started = time.process_time()
        metrics = list(collector.collect())
        assert time.process_time() - started < 0.1
        dmarc = next(m for m in metrics if m.name in ("repmon_dmarc_messages", "repmon_dmarc_messages_total"))
        assert sum(s.value for s in dmarc.samples if s.name.endswith("_total")) == 1_000_000
        assert len({s.labels["domain"] for s in dmarc.samples}) <= 201
    finally:
        engine.dispose()
