"""Alerts end to end on real peers: a local Slack webhook (aiohttp server)
and an aiosmtpd mail receiver; dedup, cooldown, resolved messages, digests,
Retry-After and permanent errors, with an injected clock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.notify import AlertCenter
from monitor.config import parse_config
from monitor.health.clock import FakeClock
from monitor.loop import HealthLoop
from tests.fixtures._health_rows import T0, add_deliveries, add_events, config, set_listing
from tests.fixtures.http_fixture_server import Reply
from tests.fixtures.slack import SlackWebhook
from tests.fixtures.smtp_receivers import Script

HOOK = "/services/T0001/B0001/secretsecret"


def alerts_config(server=None, smtp=None, **extra):
    section = {"cooldown": "1h", "gather_s": 2, "digest_threshold": 5, **extra}
    if server is not None:
        section["slack"] = [{"name": "ops", "webhook_url": server.url(HOOK), "min_severity": "warning"}]
    if smtp is not None:
        section["smtp"] = {"host": smtp.host, "port": smtp.port, "security": "none", "sender": "repmon@example.com"}
        section["email"] = [{"name": "oncall", "to": ["oncall@example.com"], "min_severity": "critical"}]
    return parse_config({"alerts": section}).alerts


def fire(engine, center, subject, cause="listing:zen.spamhaus.org", severity="critical", now=T0):
    with engine.begin() as conn:
        return center.fire(conn, subject, cause, severity, f"{subject}: listed", "listed on zen.spamhaus.org", {}, now)


def deliveries(engine):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT channel, status, attempts, next_attempt_at, last_error FROM alert_deliveries ORDER BY id")).mappings()]


def test_dedup_cooldown_escalation_and_resolution(engine):
    center = AlertCenter(alerts_config())
    assert fire(engine, center, "ip:192.0.2.1", severity="warning")
    assert not fire(engine, center, "ip:192.0.2.1", severity="warning", now=T0 + 60)  # still firing
    assert fire(engine, center, "ip:192.0.2.1", severity="critical", now=T0 + 120)  # escalation: always sent
    with engine.begin() as conn:
        assert center.resolve(conn, "ip:192.0.2.1", "listing:zen.spamhaus.org", "resolved", "delisted", {}, T0 + 180)
    assert not fire(engine, center, "ip:192.0.2.1", severity="critical", now=T0 + 240)  # flapping within cooldown
    with engine.begin() as conn:  # its firing was held, so its clearing is quiet too
        assert not center.resolve(conn, "ip:192.0.2.1", "listing:zen.spamhaus.org", "resolved", "delisted", {}, T0 + 300)
    assert fire(engine, center, "ip:192.0.2.1", severity="critical", now=T0 + 180 + 3601)  # after the cooldown
    assert fire(engine, center, "ip:192.0.2.2")  # another subject is another alert
    with engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM alert_notifications ORDER BY id"))]
        held = conn.execute(text("SELECT held FROM alert_states WHERE subject = 'ip:192.0.2.1'")).scalar()
    assert kinds == ["firing", "firing", "resolved", "firing", "firing"]
    assert held == 1


async def test_slack_message_blocks_and_one_post(sqlite_engine, http_fixture_server):
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook())
    clock = FakeClock(T0)
    cfg = alerts_config(server)
    fire(sqlite_engine, AlertCenter(cfg), "ip:192.0.2.1")
    dispatcher = Dispatcher(sqlite_engine, cfg, clock)
    try:
        assert await dispatcher.run_once() == 0  # gathering: the 2 s are not over
        clock.advance(2)
        assert await dispatcher.run_once() == 1
        assert await dispatcher.run_once() == 0  # sent once
    finally:
        await dispatcher.close()
    [request] = server.requests_to(HOOK)
    body = request.json()
    assert body["text"] == "ip:192.0.2.1: listed"
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "ip:192.0.2.1: listed"}}
    assert "listed on zen.spamhaus.org" in body["blocks"][1]["text"]["text"]
    assert deliveries(sqlite_engine)[0]["status"] == "sent"


async def test_slack_429_waits_for_retry_after(sqlite_engine, http_fixture_server):
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook(Reply(429, "rate_limited", {"Retry-After": "7"}), Reply(200, "ok")))
    clock = FakeClock(T0)
    cfg = alerts_config(server, gather_s=0)
    fire(sqlite_engine, AlertCenter(cfg), "ip:192.0.2.1")
    dispatcher = Dispatcher(sqlite_engine, cfg, clock)
    try:
        assert await dispatcher.run_once() == 0
        [row] = deliveries(sqlite_engine)
        assert row["status"] == "pending" and row["next_attempt_at"] == pytest.approx(T0 + 7)
        clock.advance(6)
        assert await dispatcher.run_once() == 0
        assert len(server.requests_to(HOOK)) == 1  # not before Retry-After
        clock.advance(1)
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.close()
    assert len(server.requests_to(HOOK)) == 2
    assert deliveries(sqlite_engine)[0]["status"] == "sent"


@pytest.mark.parametrize("status, word", [(403, "invalid_token"), (404, "no_service"), (410, "channel_is_archived")])
async def test_slack_permanent_errors_are_not_retried(sqlite_engine, http_fixture_server, status, word):
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook(Reply(status, word)))
    clock = FakeClock(T0)
    cfg = alerts_config(server, gather_s=0)
    fire(sqlite_engine, AlertCenter(cfg), "ip:192.0.2.1")
    dispatcher = Dispatcher(sqlite_engine, cfg, clock)
    try:
        await dispatcher.run_once()
        clock.advance(86400)
        await dispatcher.run_once()
    finally:
        await dispatcher.close()
    assert len(server.requests_to(HOOK)) == 1
    [row] = deliveries(sqlite_engine)
    assert row["status"] == "failed" and word in row["last_error"]
    assert "secretsecret" not in row["last_error"]


async def test_slack_5xx_backs_off_then_succeeds(sqlite_engine, http_fixture_server):
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook(Reply(500, "oops"), Reply(503, "busy"), Reply(200, "ok")))
    clock = FakeClock(T0)
    cfg = alerts_config(server, gather_s=0)
    fire(sqlite_engine, AlertCenter(cfg), "ip:192.0.2.1")
    dispatcher = Dispatcher(sqlite_engine, cfg, clock)
    try:
        await dispatcher.run_once()
        assert deliveries(sqlite_engine)[0]["next_attempt_at"] == pytest.approx(T0 + 5)
        clock.advance(5)
        await dispatcher.run_once()
        assert deliveries(sqlite_engine)[0]["next_attempt_at"] == pytest.approx(T0 + 5 + 10)
        clock.advance(10)
        await dispatcher.run_once()
    finally:
        await dispatcher.close()
    row = deliveries(sqlite_engine)[0]
    assert (row["status"], row["attempts"]) == ("sent", 3)


async def test_two_hundred_listed_ips_make_one_digest(sqlite_engine, http_fixture_server, scripted_smtp):
    """A blocklist cycle lists 200 sending IPs: Slack and the on-call mailbox
    each get one message, not 200."""
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook())
    receiver = scripted_smtp(Script())
    clock = FakeClock(T0)
    cfg = config(alerts={"slack": [{"name": "ops", "webhook_url": server.url(HOOK)}], "gather_s": 2,
                         "smtp": {"host": receiver.host, "port": receiver.port, "security": "none",
                                  "sender": "repmon@example.com"},
                         "email": [{"name": "oncall", "to": ["oncall@example.com"]}]},
                 policy={"enabled": False})
    loop = HealthLoop(cfg, sqlite_engine, clock)
    for i in range(200):
        set_listing(sqlite_engine, f"198.51.100.{i}" if i < 100 else f"203.0.113.{i - 100}", "zen.spamhaus.org",
                    ["127.0.0.2"], at=T0)
    report = loop.tick()
    assert report.notifications == 200
    dispatcher = Dispatcher(sqlite_engine, cfg.alerts, clock)
    try:
        clock.advance(2)
        assert await dispatcher.run_once() == 2
    finally:
        await dispatcher.close()
    [request] = server.requests_to(HOOK)
    body = request.json()
    assert len(body["blocks"]) <= 50
    assert body["blocks"][0]["text"]["text"] == "repmon digest: 200 alerts"
    assert "200 × listing:zen.spamhaus.org (critical)" in body["blocks"][1]["text"]["text"]
    assert "and 190 more" in body["blocks"][1]["text"]["text"]
    assert receiver.count() == 1
    mail = receiver.received[0].content.decode()
    assert "Subject: [repmon critical] repmon digest: 200 alerts" in mail
    assert mail.count("listed on zen.spamhaus.org") >= 50 and receiver.received[0].rcpt_tos == ["oncall@example.com"]


async def test_email_goes_by_severity_and_a_refusal_is_permanent(sqlite_engine, scripted_smtp):
    receiver = scripted_smtp(Script())
    clock = FakeClock(T0)
    cfg = alerts_config(smtp=receiver, gather_s=0)
    center = AlertCenter(cfg)
    fire(sqlite_engine, center, "ip:192.0.2.1", severity="warning")  # below the mailbox's "critical"
    dispatcher = Dispatcher(sqlite_engine, cfg, clock)
    try:
        assert await dispatcher.run_once() == 0
        assert receiver.count() == 0
        fire(sqlite_engine, center, "ip:192.0.2.2", severity="critical")
        assert await dispatcher.run_once() == 1
        assert receiver.count() == 1
        assert "Subject: [repmon critical] ip:192.0.2.2: listed" in receiver.received[0].content.decode()
        receiver.script.rcpt_replies["oncall@example.com"] = "550 5.1.1 no such user"
        fire(sqlite_engine, center, "ip:192.0.2.3", severity="critical")
        await dispatcher.run_once()
        clock.advance(3600)
        await dispatcher.run_once()
    finally:
        await dispatcher.close()
    rows = deliveries(sqlite_engine)
    assert [r["status"] for r in rows] == ["sent", "failed"] and rows[1]["attempts"] == 1
    assert "550" in rows[1]["last_error"]


async def test_lane_pause_and_its_end_are_announced_once(sqlite_engine, http_fixture_server):
    server = http_fixture_server
    server.script("POST", HOOK, SlackWebhook())
    clock = FakeClock(T0)
    cfg = config(alerts={"slack": [{"name": "ops", "webhook_url": server.url(HOOK)}], "gather_s": 1})
    loop = HealthLoop(cfg, sqlite_engine, clock)
    add_deliveries(sqlite_engine, ip="127.0.0.2", dest="yahoo", n=1000, at=T0 - 3600)
    add_events(sqlite_engine, n=5, at=T0 - 60, kind="feedback", complaint=True)
    dispatcher = Dispatcher(sqlite_engine, cfg.alerts, clock)
    try:
        for _ in range(5):
            loop.tick()
            clock.advance(1)
            await dispatcher.run_once()
        clock.advance(4 * 3600)
        loop.tick()
        clock.advance(1)
        await dispatcher.run_once()
    finally:
        await dispatcher.close()
    messages = [r.json()["text"] for r in server.requests_to(HOOK)]
    # one message for the incident (the pause, and what the IP and the domain show), one when the pause ends
    assert messages == [
        "Paused lane 127.0.0.2/yahoo (rule lane-complaint-rate-pause); "
        "ip:127.0.0.2: complaint rate at yahoo 0.5% over 24h; domain:example.com: complaint rate at yahoo 0.5% over 24h",
        "Ended: paused lane 127.0.0.2/yahoo (rule lane-complaint-rate-pause)"]


async def test_two_dispatchers_on_one_database_send_each_alert_once(engine, http_fixture_server):
    """Two nodes' dispatchers (a leader and one that just took over) plan and
    send at the same moment: each notification becomes one Slack post."""
    server = http_fixture_server
    server.script("POST", HOOK, *[SlackWebhook() for _ in range(10)])
    clock = FakeClock(T0)
    cfg = alerts_config(server, digest_threshold=50)
    center = AlertCenter(cfg)
    for n in range(3):
        fire(engine, center, f"ip:192.0.2.{n + 1}")
    clock.advance(3)
    first, second = Dispatcher(engine, cfg, clock), Dispatcher(engine, cfg, clock)
    try:
        sent = await asyncio.gather(first.run_once(), second.run_once(), first.run_once(), second.run_once())
    finally:
        await first.close()
        await second.close()
    assert sum(sent) == 1
    assert len(server.requests_to(HOOK)) == 1
    assert [d["status"] for d in deliveries(engine)] == ["sent"]
