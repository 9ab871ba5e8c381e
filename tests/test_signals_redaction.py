"""Secrets never reach the database (issue 14): an SNDS server that echoes the
request URL (`...?key=...&date=...`) in its error page put the key into
signal_fetch_states.error and signal_events.reason. Whatever is stored or
logged goes through monitor.core.logs.redact, which masks the registered
secrets and any secret-looking URL parameter."""

from __future__ import annotations

import logging
from datetime import date

import pytest
from sqlalchemy import select

from monitor.config import parse_config
from monitor.core.db import session_scope
from monitor.core.logs import redact
from monitor.signals import store
from monitor.signals.models import SignalEvent, SignalFetchState
from monitor.signals.postmaster import cycle
from tests.fixtures.http_fixture_server import Reply

TODAY = date(2026, 6, 17)
SNDS_KEY = "4d1e7b0c-9a3f-unregistered"  # never passed to register_secret: the URL pattern must catch it


@pytest.mark.parametrize(("text", "kept"), [
    ("GET https://sendersupport.olc.protection.outlook.com/snds/data.aspx?key=SECRETVALUE&date=061626 failed",
     "date=061626"),
    ("500 for /snds/ipStatus.aspx?KEY=SECRETVALUE", "/snds/ipStatus.aspx?KEY=***"),
    ("redirect to https://x.example/cb?access_token=SECRETVALUE#frag", "#frag"),
    ('{"url": "https://h/p?api_key=SECRETVALUE", "status": 500}', '"status": 500'),
    ("https://user:SECRETVALUE@grafana.example.com/api", "grafana.example.com/api"),
    ("Authorization: Bearer SECRETVALUE", "Authorization: Bearer ***"),
])
def test_redact_masks_secret_looking_parameters(text, kept):
    out = redact(text)
    assert "SECRETVALUE" not in out and kept in out


def test_redact_keeps_ordinary_text():
    text = "zen.spamhaus.org lists 192.0.2.10 (127.0.0.2: SBL); monkey=banana; keyboard=us"
    assert redact(text) == text


def test_store_functions_redact(engine):
    with session_scope(engine) as session:
        store.record_fetch(session, "snds:data", ok=False, error=f"HTTP 500 for /data.aspx?key={SNDS_KEY}")
        store.add_event(session, source="postmaster", kind="fetch_failed", subject="snds:data",
                        reason=f"see https://h/data.aspx?key={SNDS_KEY}&date=1",
                        details={"url": f"https://h/data.aspx?key={SNDS_KEY}"})
    with session_scope(engine) as session:
        state = session.get(SignalFetchState, "snds:data")
        event = session.execute(select(SignalEvent)).scalars().one()
        assert SNDS_KEY not in (state.error or "")
        assert SNDS_KEY not in event.reason and SNDS_KEY not in str(event.details)


async def test_snds_error_page_echoing_the_url_stores_no_key(engine, http_fixture_server, caplog):
    def echo(request):
        return Reply(500, f"<html>Server error while processing {request.url} (key={request.query['key']})</html>")

    http_fixture_server.script("GET", "/snds/data.aspx", echo)
    http_fixture_server.script("GET", "/snds/ipStatus.aspx", Reply(404, f"Not found: {http_fixture_server.url()}"
                                                                        f"/snds/ipStatus.aspx?key={SNDS_KEY}-2"))
    config = parse_config({"postmaster": {
        "snds": {"data_url": http_fixture_server.url("/snds/data.aspx"),
                 "ipstatus_url": http_fixture_server.url("/snds/ipStatus.aspx"),
                 "data_key": SNDS_KEY, "ipstatus_key": SNDS_KEY + "-2", "lookback_days": 1},
        "backoff_s": 0.01, "max_attempts": 2}})
    caplog.set_level(logging.DEBUG)
    report = await cycle.run_snds(config.postmaster, engine, today=TODAY)
    assert report.failed  # both feeds failed ...
    assert all(SNDS_KEY not in error for error in report.failed.values())
    with session_scope(engine) as session:
        states = session.execute(select(SignalFetchState)).scalars().all()
        events = session.execute(select(SignalEvent)).scalars().all()
    assert states and all(s.status == "error" and SNDS_KEY not in (s.error or "") for s in states)
    assert events and all(SNDS_KEY not in e.reason and SNDS_KEY not in str(e.details) for e in events)
    assert SNDS_KEY not in caplog.text
