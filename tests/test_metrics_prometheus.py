"""End to end: rows stored in SQLite, served by repmon's metrics endpoint,
scraped by a real Prometheus every second, and every query of every
dashboard in dashboards/ run through Prometheus' HTTP API.

Each query must return data (finite values); the key panels must show what
was stored. Rates are checked on ratio panels: numerator and denominator
come from the same scrapes, so Prometheus' extrapolation cancels out and the
ratio is exact.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.core.db import make_engine
from monitor.metrics.collector import RepmonCollector
from monitor.metrics.dashboards import panel_queries
from monitor.metrics.jobs import build_registry
from monitor.metrics.reading import reader_engine
from monitor.metrics.server import MetricsServer
from monitor.parts import upgrade_schema
from tests.fixtures._metrics_rows import (
    B_BOUNCE_EVENTS,
    B_BOUNCED_AT_SMTP,
    B_COMPLAINTS,
    B_DELIVERED,
    B_DMARC_ALL,
    B_DMARC_PASS,
    B_TLS_ALL,
    B_TLS_FAILED,
    OURS,
    store_batch_a,
    store_batch_b,
)
from tests.fixtures._waiting import eventually

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
RANGE = "1h"  # $__range and $window: longer than the test, so every sample is inside


def substitute(expr: str, instance: str) -> str:
    """Grafana's template variables, as Grafana would expand them here."""
    values = {"instance": instance, "window": RANGE, "__range": RANGE, "__rate_interval": "1m",
              "__interval": "15s"}

    def one(match: re.Match) -> str:
        return values.get(match.group(1), ".*")  # the multi-value variables: "All"

    return re.sub(r"\$\{?(\w+)\}?", one, expr)


def load_dashboards() -> dict[str, dict]:
    return {d["uid"]: d for d in (json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json")))}


def query_of(dashboard: dict, title: str, ref: str = "A") -> str:
    for panel_title, panel_ref, target in panel_queries(dashboard):
        if panel_title == title and panel_ref == ref:
            return target["expr"]
    raise KeyError(f"{dashboard['uid']} has no panel {title!r}")


@pytest.fixture
async def served(tmp_path):
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    upgrade_schema(url)
    writer = make_engine(url)
    reader = reader_engine(url)
    collector = RepmonCollector(reader, own_networks=OURS, lane_rate={"gmail": 20.0, "yahoo": 10.0}.get,
                                refresh_s=0)
    server = MetricsServer(build_registry(collector), "127.0.0.1", 0)
    await server.start()
    try:
        yield writer, server
    finally:
        await server.stop()
        writer.dispose()
        reader.dispose()


async def test_every_dashboard_query_returns_what_was_stored(served, prometheus) -> None:
    writer, server = served
    now = datetime.now(UTC)
    await asyncio.to_thread(store_batch_a, writer, now)
    prom = await prometheus([f"127.0.0.1:{server.port}"])
    scrapes = await prom.wait_for_scrapes(3)
    await asyncio.to_thread(store_batch_b, writer, now)
    await prom.wait_for_scrapes(2, after=scrapes)
    # Evaluate everything just after a successful scrape: a scrape that failed
    # later (a busy machine) must not make series look stale.
    last = await eventually(lambda: prom.query('timestamp(up{job="repmon"} == 1)'), 10, 0.25,
                            what="a successful scrape")
    at = float(last[0]["value"][1]) + 0.05

    instance = f"127.0.0.1:{server.port}"
    dashboards = load_dashboards()
    assert set(dashboards) == {"repmon-overview", "repmon-blocklists", "repmon-dmarc-tls", "repmon-sender"}
    checked = 0
    for uid, dashboard in dashboards.items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert found, variable["definition"]
            expr = f"count by ({found.group(2)}) ({substitute(found.group(1), instance)})"
            assert await prom.query(expr, at), f"{uid} variable {variable['name']}: no values"
        for title, ref, target in panel_queries(dashboard):
            expr = substitute(target["expr"], instance)
            result = await prom.query(expr, at)
            assert result, f"{uid} / {title} / {ref}: no data for {expr}"
            values = [float(r["value"][1]) for r in result]
            assert all(math.isfinite(v) for v in values), f"{uid} / {title}: {expr} -> {values}"
            checked += 1
    assert checked >= 50

    async def single(uid: str, title: str) -> float:
        result = await prom.query(substitute(query_of(dashboards[uid], title), instance), at)
        assert len(result) == 1, (title, result)
        return float(result[0]["value"][1])

    overview = "repmon-overview"
    assert await single(overview, "Complaint rate ($window)") == pytest.approx(B_COMPLAINTS / B_DELIVERED, rel=1e-9)
    assert await single(overview, "Bounce rate ($window)") == pytest.approx(
        B_BOUNCE_EVENTS / (B_DELIVERED + B_BOUNCED_AT_SMTP), rel=1e-9)
    assert await single(overview, "Blocklist listings") == 1
    assert await single(overview, "Suppressed addresses") == 7
    assert await single(overview, "Queued messages") == 9
    assert await single(overview, "Google spam rate (worst domain)") == 0.002
    unhealthy = await prom.query(substitute(query_of(dashboards[overview], "Subjects not healthy"), instance), at)
    assert [(r["metric"]["subject_kind"], r["metric"]["subject"], r["metric"]["state"]) for r in unhealthy] == [
        ("lane", "192.0.2.10/yahoo", "warning")]

    blocklists = "repmon-blocklists"
    assert await single(blocklists, "Listed") == 1
    assert await single(blocklists, "Unknown") == 1
    assert await single(blocklists, "Zones not OK") == 1
    assert await single(blocklists, "SNDS red IPs") == 0
    assert await single(blocklists, "SNDS blocked ranges") == 1
    listings = await prom.query(substitute(query_of(dashboards[blocklists], "Current listings"), instance), at)
    assert [(r["metric"]["target"], r["metric"]["zone"]) for r in listings] == [("192.0.2.10", "zen.spamhaus.org")]

    dmarc = "repmon-dmarc-tls"
    assert await single(dmarc, "DMARC pass rate") == pytest.approx(B_DMARC_PASS / B_DMARC_ALL, rel=1e-9)
    assert await single(dmarc, "TLS failed sessions") == pytest.approx(B_TLS_FAILED / B_TLS_ALL, rel=1e-9)
    by_source = await prom.query(substitute(query_of(dashboards[dmarc], "DMARC pass rate by source"), instance), at)
    assert {(r["metric"]["source"], r["metric"]["ours"]): float(r["value"][1]) for r in by_source} == {
        ("Example Mailer", "true"): 1.0}
    failing = await prom.query(substitute(query_of(dashboards[dmarc], "Top failing sources"), instance), at)
    assert {(r["metric"]["source"], r["metric"].get("source_type", "")) for r in failing} == {
        ("Bulk Sender Inc", "Marketing"), ("198.51.100.9", "")}
    countries = await prom.query(substitute(query_of(dashboards[dmarc], "Failing messages by country"), instance), at)
    assert {r["metric"].get("country", "") for r in countries} == {"DE", ""}

    sender = "repmon-sender"
    assert await single(sender, "Queued") == 9
    assert await single(sender, "In flight") == 1
    assert await single(sender, "Lanes stopped") == 3  # paused, suspended, halted (the per-MX lane)
    assert await single(sender, "Lanes slowed") == 1
    assert await single(sender, "Deferral rate ($window)") == pytest.approx(10 / (B_DELIVERED + 2 + 10), rel=1e-9)
    lanes = await prom.query(substitute(query_of(dashboards[sender], "Lanes not sending freely"), instance), at)
    assert {(r["metric"]["source_ip"], r["metric"]["destination"], r["metric"]["state"]) for r in lanes} == {
        ("192.0.2.10", "yahoo", "paused"), ("192.0.2.10", "gmail", "suspended"), ("192.0.2.11", "gmail", "slowed")}
