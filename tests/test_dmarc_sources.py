"""DMARC sources (issue 13): records stored with where their mail came from,
`repmon dmarc sources`, reverse DNS as a switch, and the parse pool's time budget.
Reports are written here."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor.core.runtime import Runtime
from monitor.ingest.folder import FolderReader
from monitor.ingest.pool import ParsePool
from monitor.ingest.settings import DmarcConfig, ParsingConfig
from monitor.ingest.sources import RecordSources
from monitor.storage.dmarc_sources import dmarc_sources, networks
from monitor.storage.models import DmarcRecord, QuarantinedMessage
from parsers import parse_bytes
from parsers.events import DmarcAggregateEvent
from tests.ingest_helpers import make_config

GOOGLE_1, GOOGLE_2 = "209.85.220.41", "209.85.220.42"
MICROSOFT = "40.107.22.100"
OURS = "192.0.2.10"
BEGIN = datetime.now(UTC) - timedelta(days=1)


def record(ip: str, count: int, dkim: str, spf: str, *, dkim_raw: str | None = None, spf_raw: str | None = None,
           header_from: str = "news.example.com") -> str:
    return f"""
  <record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>none</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row>
    <identifiers><header_from>{header_from}</header_from></identifiers>
    <auth_results><dkim><domain>signer.example</domain><result>{dkim_raw or dkim}</result></dkim>
      <spf><domain>bounce.example</domain><result>{spf_raw or spf}</result></spf></auth_results>
  </record>"""


def report(report_id: str, records: list[str], *, domain: str = "news.example.com",
           begin: datetime = BEGIN) -> bytes:
    start = int(begin.timestamp())
    return gzip.compress(f"""<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata><org_name>receiver.example</org_name><email>dmarc@receiver.example</email>
    <report_id>{report_id}</report_id><date_range><begin>{start}</begin><end>{start + 86400}</end></date_range>
  </report_metadata>
  <policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><pct>100</pct></policy_published>
  {''.join(records)}
</feedback>
""".encode(), mtime=0)


def sample_report() -> bytes:
    return report("sources-1", [
        record(GOOGLE_1, 100, "pass", "pass"),
        record(GOOGLE_2, 50, "pass", "fail", spf_raw="pass"),  # SPF passes, not aligned
        record(MICROSOFT, 30, "fail", "fail"),  # someone sending as us through Microsoft
        record(OURS, 20, "pass", "fail"),
    ])


async def ingest(engine, db_url: str, tmp_path: Path, files: dict[str, bytes], **config) -> None:
    folder = tmp_path / "drop"
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    settings = make_config(db_url, tmp_path, folders=[{"path": str(folder), "name": "dmarc"}], **config)
    pool = ParsePool(ParsingConfig(workers=1), settings.dmarc)
    try:
        result = await FolderReader(Runtime(engine), settings.folders[0], suppression=settings.suppression,
                                    dmarc=settings.dmarc, pool=pool).run_once()
    finally:
        pool.close()
    assert result.quarantined == 0, result


async def test_ingestion_stores_the_sources_of_records(engine, migrated_db_url, tmp_path):
    await ingest(engine, migrated_db_url, tmp_path, {"r.xml.gz": sample_report()})
    with engine.connect() as conn:
        rows = {r.source_ip: r for r in conn.execute(select(DmarcRecord.__table__))}
    expected = parse_bytes(sample_report())[0]
    assert isinstance(expected, DmarcAggregateEvent)
    from parsers.reports.sources import default_enricher

    default_enricher().enrich(expected)  # the values `repmon parse` gives (parsedmarc's)
    for want in expected.records:
        row = rows[want.source_ip]
        for name in ("country", "asn", "as_name", "as_domain", "name", "type", "reverse_dns", "base_domain"):
            assert getattr(row, f"source_{name}") == getattr(want, f"source_{name}"), (want.source_ip, name)
    assert rows[GOOGLE_1].source_type == "Email Provider"
    assert rows[MICROSOFT].source_name == "Microsoft"
    assert rows[OURS].source_name is None and rows[OURS].source_country is None  # documentation range


async def test_sources_off_stores_none(engine, migrated_db_url, tmp_path):
    await ingest(engine, migrated_db_url, tmp_path, {"r.xml.gz": sample_report()}, dmarc={"sources": False})
    with engine.connect() as conn:
        names = set(conn.execute(select(DmarcRecord.source_name, DmarcRecord.source_country)).all())
    assert names == {(None, None)}


async def test_sources_query_rates_ours_and_failing(engine, migrated_db_url, tmp_path):
    old = report("sources-old", [record(MICROSOFT, 999, "fail", "fail")], begin=BEGIN - timedelta(days=30))
    other = report("sources-2", [record(GOOGLE_1, 10, "fail", "fail")], domain="shop.example.com")
    await ingest(engine, migrated_db_url, tmp_path, {"a.xml.gz": sample_report(), "b.xml.gz": old,
                                                     "c.xml.gz": other})
    since = datetime.now(UTC) - timedelta(days=7)
    with engine.connect() as conn:
        found = {s.source: s for s in dmarc_sources(conn, since=since, domain="news.example.com",
                                                    ours=networks(["192.0.2.0/28"]))}
        failing = dmarc_sources(conn, since=since, failing=True)
    google = found["Google (Including Gmail and Google Workspace)"]
    assert google.messages == 150 and google.source_type == "Email Provider"
    assert google.rate(google.dmarc_pass) == 1.0
    assert google.rate(google.spf_pass) == 1.0 and google.rate(google.spf_aligned) == round(100 / 150, 4)
    assert set(google.ips) == {GOOGLE_1, GOOGLE_2} and not google.ours
    assert found["Microsoft"].messages == 30 and found["Microsoft"].dmarc_fail == 30  # the 999 are too old
    assert found["Microsoft"].countries == {"NL": 30}
    assert found[OURS].ours and found[OURS].ips[OURS].ours
    assert found[OURS].rate(found[OURS].dmarc_pass) == 1.0 and found[OURS].rate(found[OURS].spf_pass) == 0.0
    # failing, every domain: Microsoft (30 failing) before Google (10 failing on shop.example.com)
    assert [(s.source, s.dmarc_fail) for s in failing] == [
        ("Microsoft", 30), ("Google (Including Gmail and Google Workspace)", 10)]


def test_cli_dmarc_sources(sqlite_url, tmp_path, capsys):
    import asyncio

    from monitor.cli import main
    from monitor.core.db import make_engine

    engine = make_engine(sqlite_url)
    try:
        asyncio.run(ingest(engine, sqlite_url, tmp_path, {"r.xml.gz": sample_report()}))
    finally:
        engine.dispose()
    config = tmp_path / "repmon.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n[dnsbl]\nips = ["192.0.2.10"]\n')
    assert main(["dmarc", "sources", "--config", str(config), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["source"] for line in lines] == ["Google (Including Gmail and Google Workspace)", "Microsoft", OURS]
    assert lines[2]["ours"] is True and lines[2]["ips"][0] == {"ip": OURS, "messages": 20, "ours": True,
                                                               "country": None, "reverse_dns": None}
    assert lines[1]["dmarc_pass_rate"] == 0.0 and lines[1]["countries"] == {"NL": 30}

    assert main(["dmarc", "sources", "--config", str(config), "--failing"]) == 0
    table = capsys.readouterr().out
    assert "Microsoft" in table and "Google" not in table and "NL" in table

    assert main(["dmarc", "sources", "--config", str(config), "--domain", "other.example"]) == 0
    assert "no DMARC aggregate data" in capsys.readouterr().out
    assert main(["dmarc", "sources", "--config", str(config), "--since", "yesterday"]) == 2


# --- reverse DNS ------------------------------------------------------------------------------

@pytest.fixture
def ptr_server(dns_server_factory, monkeypatch):
    from dnslib import PTR

    from tests.fixtures import dns_server

    plain = dns_server._rdata
    monkeypatch.setattr(dns_server, "_rdata", lambda rtype, value: PTR(value) if rtype == "PTR" else plain(rtype, value))
    return dns_server_factory({
        "41.220.85.209.in-addr.arpa": {"PTR": ["mail-sor-f41.google.com"]},
        "100.22.107.40.in-addr.arpa": {"PTR": ["mail-am6eur05on2100.outbound.protection.outlook.com"]},
    })


def test_reverse_dns_names_the_service_from_the_ptr_name(ptr_server):
    sources = RecordSources(DmarcConfig(reverse_dns=True, reverse_dns_resolver=ptr_server.resolver,
                                        reverse_dns_timeout_s=1.0))
    event = parse_bytes(sample_report())[0]
    assert isinstance(event, DmarcAggregateEvent)
    sources.enrich([event])
    by_ip = {r.source_ip: r for r in event.records}
    assert by_ip[GOOGLE_1].source_reverse_dns == "mail-sor-f41.google.com"
    assert by_ip[GOOGLE_1].source_base_domain == "google.com"
    assert by_ip[MICROSOFT].source_base_domain == "outlook.com"
    assert by_ip[GOOGLE_2].source_reverse_dns is None  # NXDOMAIN: no name
    asked = ptr_server.queries
    sources.enrich([parse_bytes(sample_report())[0]])  # the same IPs again: from the cache
    assert ptr_server.queries == asked


def test_reverse_dns_timeout_gives_no_name_quickly(ptr_server):
    import time

    ptr_server.mode, ptr_server.delay_s = "slow", 3.0
    sources = RecordSources(DmarcConfig(reverse_dns=True, reverse_dns_resolver=ptr_server.resolver,
                                        reverse_dns_timeout_s=0.3))
    event = parse_bytes(sample_report())[0]
    assert isinstance(event, DmarcAggregateEvent)
    started = time.monotonic()
    sources.enrich([event])
    assert time.monotonic() - started < 2.0  # concurrent lookups, each within its timeout
    assert all(r.source_reverse_dns is None for r in event.records)
    assert {r.source_name for r in event.records if r.source_ip == GOOGLE_1} == {
        "Google (Including Gmail and Google Workspace)"}  # offline values still there


# --- the parse pool's time budget ----------------------------------------------------------------

def big_report(records: int) -> bytes:
    rows = [record(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 1, "pass", "pass") for i in range(records)]
    return report("big", rows)


async def test_a_parse_over_budget_is_quarantined_and_the_pool_goes_on(engine, migrated_db_url, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a-big.xml.gz").write_bytes(big_report(60_000))
    (folder / "b-small.xml.gz").write_bytes(sample_report())
    settings = make_config(migrated_db_url, tmp_path, folders=[{"path": str(folder), "name": "dmarc"}])
    pool = ParsePool(ParsingConfig(workers=1, parse_timeout_s=0.3), settings.dmarc)
    pool.start()
    try:
        result = await FolderReader(Runtime(engine), settings.folders[0], suppression=settings.suppression,
                                    pool=pool).run_once()
    finally:
        pool.close()
    assert (result.stored, result.quarantined) == (1, 1)
    with engine.connect() as conn:
        reasons = conn.execute(select(QuarantinedMessage.reason, QuarantinedMessage.location)).all()
        stored = conn.execute(select(DmarcRecord.source_ip)).scalars().all()
    assert len(reasons) == 1 and "longer than 0.3 s" in reasons[0][0] and reasons[0][1].endswith("a-big.xml.gz")
    assert sorted(stored) == sorted([GOOGLE_1, GOOGLE_2, MICROSOFT, OURS])
