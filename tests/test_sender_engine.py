"""The delivery service end to end: queue in SQLite / PostgreSQL, real
receivers (smtp-sink, scripted aiosmtpd), lanes reacting to replies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import text

from monitor.config import parse_config
from monitor.core.db import session_scope
from monitor.storage.suppression import HARD_BOUNCE, OPT_OUT, suppress, suppressed_addresses
from parsers import tracking
from sender import control
from sender.campaign import inject
from sender.coordinator import Sender
from sender.lanes import Lane, LaneSettings, Overlay
from sender.settings import WarmupConfig
from sender.warmup import WarmupState
from tests.fixtures._waiting import eventually
from tests.fixtures.smtp_receivers import Script

TEMPLATE = b"From: News <news@example.com>\nSubject: Hi {{name}}\n\nHello {{name}}\n"


def make_config(port: int | None, tmp_path: Path, **sender):
    data = {"mail_from": "bounces@bounce.example.com", "retry_initial": "1s", "retry_max": "2s", **sender}
    if port is not None:
        data.setdefault("relay", {"host": "127.0.0.1", "port": port})
    return parse_config({"sender": data}, base_dir=tmp_path)


def queue(engine, config, tmp_path: Path, recipients: list[str], campaign: str = "spring", pool: str = "default"):
    template = tmp_path / "t.eml"
    template.write_bytes(TEMPLATE)
    csv = tmp_path / f"{campaign}.csv"
    csv.write_text("email,name\n" + "".join(f"{r},N{i}\n" for i, r in enumerate(recipients)))
    return inject(engine, config.sender, template, csv, campaign=campaign, pool=pool)


async def deliver(config, engine, **kw):
    sender = Sender(config.sender, engine, **kw)
    stats = await asyncio.wait_for(sender.run(until_idle=True), 120)
    return sender, stats


def states(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text("SELECT state, COUNT(*) FROM sender_message GROUP BY state"))}


def make_due(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE sender_message SET next_attempt_at = 0 WHERE state = 'queued'"))


def make_older(engine, seconds: float) -> None:
    """Move the queued messages' creation back, as if `seconds` had passed."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE sender_message SET created_at = created_at - :s WHERE state = 'queued'"),
                     {"s": seconds})


def count_where(engine, where: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM sender_message WHERE {where}"), params).scalar() or 0


async def sink_holds(sink, n: int) -> None:
    """Wait until the smtp-sink dump holds `n` messages (tracking tokens): the
    known point after which a test may look for what should not be there."""
    await eventually(lambda: sum(sink.tokens().values()) >= n, what=f"{n} messages in the smtp-sink dump")


async def test_relay_delivery_tracking_verp_and_weighted_pool(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path, ips=[
        {"address": "127.0.0.2", "ehlo_name": "mta2.example.com", "weight": 3},
        {"address": "127.0.0.3", "ehlo_name": "mta3.example.com", "weight": 1}])
    recipients = [f"user{i}@example{i % 3}.org" for i in range(40)]
    queue(engine, config, tmp_path, recipients)
    _, stats = await deliver(config, engine)
    assert stats.delivered == 40 and states(engine) == {"delivered": 40}
    await sink_holds(smtp_sink, 40)
    assert smtp_sink.client_addresses() == {"127.0.0.2": 30, "127.0.0.3": 10}
    tokens = smtp_sink.tokens()
    assert len(tokens) == 40 and set(tokens.values()) == {1}
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT message_id, source_ip FROM sender_message")).all())
        log = conn.execute(text("SELECT outcome, COUNT(*) FROM sender_delivery_log GROUP BY outcome")).all()
        lanes = dict(conn.execute(text("SELECT lane, delivered_today FROM sender_lane")).all())
        content = conn.execute(text("SELECT COUNT(*) FROM sender_message_content")).scalar()
    for token in tokens:
        found = tracking.decode(token)
        assert found.campaign == "spring" and rows[found.message_id] == found.source_ip
    dump = smtp_sink.dump()
    assert dump.count(b"X-Mail-Args: <bounces+rm-v1.") == 40  # VERP return path carries the token
    assert log == [("delivered", 40)]
    assert lanes == {"127.0.0.2|relay": 30, "127.0.0.3|relay": 10}
    assert content == 0  # content is dropped once delivered


async def test_4xx_defers_with_the_servers_retry_hint_then_delivers(engine, scripted_smtp, tmp_path):
    server = scripted_smtp(Script(accept_first=3, then_reply="451 4.7.1 Too busy, try again in 30 seconds"))
    config = make_config(server.port, tmp_path, relay={"host": "127.0.0.1", "port": server.port, "connections": 1})
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(6)])
    started = time.time()
    _, stats = await deliver(config, engine)
    assert (stats.delivered, stats.deferred) == (3, 3)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT attempts, next_attempt_at, last_reply FROM sender_message "
                                 "WHERE state = 'queued'")).all()
    assert len(rows) == 3
    for attempts, next_at, reply in rows:
        assert attempts == 1 and "try again in 30 seconds" in reply
        assert started + 30 <= next_at <= time.time() + 33  # the hint, not the 1 s back-off
    server.script.accept_first = None
    make_due(engine)
    _, stats = await deliver(config, engine)
    assert stats.delivered == 3 and states(engine) == {"delivered": 6}
    assert server.count() == 6


async def test_deferred_past_max_age_expires_into_a_bounce_event(engine, scripted_smtp, tmp_path):
    server = scripted_smtp(Script(accept_first=0, then_reply="451 4.3.0 Temporary System Problem"))
    config = make_config(server.port, tmp_path, max_age="1s")
    queue(engine, config, tmp_path, ["late@example.org"])
    await deliver(config, engine)  # first attempt: deferred
    make_older(engine, 2)  # past max_age without sleeping through it
    make_due(engine)
    _, stats = await deliver(config, engine)
    assert stats.expired == 1 and states(engine) == {"expired": 1}
    with engine.connect() as conn:
        event = conn.execute(text("SELECT kind, reason, hard_or_soft, recipient, campaign FROM events")).one()
    assert tuple(event) == ("bounce", "expired", "soft", "late@example.org", "spring")
    with session_scope(engine) as session:
        assert not suppressed_addresses(session, ["late@example.org"])  # an expiry says nothing about the address


async def test_5xx_recipient_bounce_suppresses_but_ip_block_halts_the_lane(engine, scripted_smtp, tmp_path):
    block = ("550 5.7.1 Unfortunately, messages from [127.0.0.2] weren't sent. Please contact your Internet "
             "service provider since part of their network is on our block list (S3150).")
    server = scripted_smtp(Script(rcpt_replies={
        "gone@example.org": "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "blocked@example.org": block}))
    config = make_config(server.port, tmp_path, relay={"host": "127.0.0.1", "port": server.port, "connections": 1},
                         ips=[{"address": "127.0.0.2", "ehlo_name": "mta2.example.com"}])
    queue(engine, config, tmp_path, ["ok1@example.org", "gone@example.org", "blocked@example.org",
                                     "ok2@example.org", "ok3@example.org"])
    sender, stats = await deliver(config, engine)
    assert (stats.delivered, stats.bounced) == (1, 2)
    lane = sender.lanes["127.0.0.2|relay"]
    assert "S3150" in lane.blocked()
    with engine.connect() as conn:
        action = conn.execute(text("SELECT action, rule, response, expires_at, source_ip, destination "
                                   "FROM sender_lane_action")).one()
        queued = conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'queued'")).scalar()
        reasons = dict(conn.execute(text("SELECT recipient, reason FROM events")).all())
    assert action[:2] == ("halt", "microsoft-ip-blocklist") and "S3150" in action[2]
    assert action[3] is None and action[4:] == ("127.0.0.2", "relay")  # until an operator clears it
    assert queued == 2  # the rest waits in the halted lane, not rotated to other IPs
    assert reasons["gone@example.org"] == "userunknown"
    with session_scope(engine) as session:
        assert suppressed_addresses(session, ["gone@example.org", "blocked@example.org"]) == {"gone@example.org"}
    # An operator clears the halt; the waiting mail goes out.
    with engine.begin() as conn:
        result = control.add_directive(conn, "resume", "127.0.0.2", "relay", reason="delisted")
    assert result.ended_actions == 1
    _, stats = await deliver(config, engine)
    assert stats.delivered == 2 and states(engine) == {"delivered": 3, "bounced": 2}


async def test_dropped_connection_retries_and_every_message_arrives(engine, scripted_smtp, tmp_path):
    server = scripted_smtp(Script(drop_after=2))
    config = make_config(server.port, tmp_path)
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(5)])
    _, stats = await deliver(config, engine)
    assert stats.delivered == 2 and stats.deferred >= 1
    with engine.connect() as conn:
        reply = conn.execute(text("SELECT last_reply FROM sender_message WHERE state = 'queued' LIMIT 1")).scalar()
    assert "lost" in reply
    server.script.drop_after = None
    make_due(engine)
    await deliver(config, engine)
    assert states(engine) == {"delivered": 5}
    got = {r.rcpt_tos[0] for r in server.received}
    assert got == {f"u{i}@example.org" for i in range(5)}


async def test_suppression_is_checked_again_before_delivery(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path)
    recipients = [f"u{i}@example.org" for i in range(10)]
    with session_scope(engine) as session:
        suppress(session, "u0@example.org", HARD_BOUNCE, "test")
    result = queue(engine, config, tmp_path, recipients)
    assert (result.queued, result.suppressed) == (9, 1)  # checked at enqueue
    with session_scope(engine) as session:  # unsubscribed while queued
        suppress(session, "u1@example.org", OPT_OUT, "test")
        suppress(session, "U2@Example.org", OPT_OUT, "test")
    _, stats = await deliver(config, engine)
    assert stats.delivered == 7 and stats.suppressed == 2
    assert states(engine) == {"delivered": 7, "suppressed": 3}
    await sink_holds(smtp_sink, 7)  # every delivery the sender made is in the dump: now look
    dump = smtp_sink.dump()
    assert sum(smtp_sink.tokens().values()) == 7
    assert b"u1@example.org" not in dump and b"u2@example.org" not in dump and b"u0@example.org" not in dump


async def test_pause_directive_from_the_database_stops_the_lane(engine, scripted_smtp, tmp_path):
    server = scripted_smtp()
    config = make_config(server.port, tmp_path,
                         relay={"host": "127.0.0.1", "port": server.port, "connections": 2, "rate": "20/s"})
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(400)])
    stop = asyncio.Event()
    sender = Sender(config.sender, engine)
    task = asyncio.create_task(sender.run(stop=stop))
    try:
        await eventually(lambda: server.count() >= 10, what="10 deliveries")
        with engine.begin() as conn:
            control.add_directive(conn, "pause", "*", "relay", reason="complaint spike")
        lane = next(iter(sender.lanes.values()))
        await eventually(lane.blocked, what="the control poll to pause the lane")
        assert "complaint spike" in (lane.blocked() or "")
        at_pause = server.count()
        # The known point: the lane closed its connections and handed every
        # claimed message back; from here nothing can go out without a claim.
        await eventually(lambda: lane.active == 0 and lane.buffered() == 0
                         and count_where(engine, "state = 'inflight'") == 0,
                         what="the paused lane to close its connections and hand its mail back")
        stopped_at = server.count()
        assert stopped_at <= at_pause + 2  # at most the transactions already in flight
        await eventually(lambda: count_where(engine, "state = 'delivered'") == stopped_at,
                         what="every delivery recorded")
        assert server.count() == stopped_at  # still nothing new while paused
        with engine.begin() as conn:
            control.add_directive(conn, "slow", "*", "relay", rate=5.0, reason="test")
            control.add_directive(conn, "resume", "*", "relay")
        await eventually(lambda: lane.blocked() is None and server.count() > stopped_at,
                         what="the resumed lane to deliver again")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    with engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM sender_lane_directive ORDER BY id"))]
        left = conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'inflight'")).scalar()
    assert kinds == ["pause", "slow", "resume"]
    assert left == 0  # stopping hands claimed messages back


async def test_in_process_rule_suspension_then_one_connection_at_a_time(engine, scripted_smtp, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "test-deferral"\nmatch = "SLOWDOWN"\naction = "suspend"\nduration = "1s"\n')
    server = scripted_smtp(Script(rcpt_replies={"trigger@example.org": "421 4.7.0 SLOWDOWN from your IP"}))
    config = make_config(server.port, tmp_path, rules_file=str(rules), resume_step="0.2s",
                         relay={"host": "127.0.0.1", "port": server.port, "connections": 4})
    queue(engine, config, tmp_path, ["trigger@example.org"] + [f"u{i}@example.org" for i in range(30)])
    stop = asyncio.Event()
    sender = Sender(config.sender, engine)
    task = asyncio.create_task(sender.run(stop=stop))
    try:
        lane = await eventually(lambda: next((x for x in sender.lanes.values() if x.blocked()), None),
                                what="the rule to suspend the lane")
        assert "test-deferral" in (lane.blocked() or "")
        server.script.rcpt_replies = {}  # the provider is happy again
        ramps = set()

        def all_delivered() -> bool:
            if lane.blocked() is None and lane.ramp is not None:
                ramps.add(lane.ramp)
            return server.count() >= 31

        await eventually(all_delivered, interval=0.005, what="all 31 messages")
        assert server.count() == 31
        # resumed with one connection (the stepping itself: test_lane_ramp_adds_one_connection_per_step)
        assert 1 in ramps
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    with engine.connect() as conn:
        action = conn.execute(text("SELECT action, rule, response, end_reason FROM sender_lane_action")).one()
    assert action[:2] == ("suspend", "test-deferral") and "SLOWDOWN" in action[2]


async def test_warmup_caps_route_overflow_to_the_warm_pool(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path, warmup={"schedule": [5, 10], "overflow_pool": "warm"}, ips=[
        {"address": "127.0.0.2", "ehlo_name": "cold.example.com", "pool": "new", "warmup": True},
        {"address": "127.0.0.3", "ehlo_name": "warm.example.com", "pool": "warm"}])
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(12)], pool="new")
    await deliver(config, engine)
    await sink_holds(smtp_sink, 12)
    assert smtp_sink.client_addresses() == {"127.0.0.2": 5, "127.0.0.3": 7}
    with engine.connect() as conn:
        row = conn.execute(text("SELECT day_index, routed_today, delivered_today FROM sender_warmup")).one()
    assert tuple(row) == (0, 5, 5)


async def test_warmup_without_overflow_waits_for_tomorrow(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path, warmup={"schedule": [3]},
                         ips=[{"address": "127.0.0.2", "ehlo_name": "cold.example.com", "warmup": True}])
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(5)])
    await deliver(config, engine)
    with engine.connect() as conn:
        waiting = conn.execute(text("SELECT next_attempt_at, reason, attempts FROM sender_message "
                                    "WHERE state = 'queued'")).all()
    assert len(waiting) == 2
    midnight = (int(time.time()) // 86400 + 1) * 86400
    assert all(at >= midnight and reason == "warmup" and attempts == 0 for at, reason, attempts in waiting)


def test_warmup_day_advances_only_after_a_good_day():
    settings = WarmupConfig(schedule=[100, 200, 400], advance_fraction=0.9, max_deferral_rate=0.05)
    good = WarmupState("127.0.0.2", "google", 0, "2024-05-01", routed_today=100, delivered_today=95, deferred_today=2)
    good.roll_over("2024-05-02", settings)
    assert (good.day_index, good.routed_today) == (1, 0)
    short = WarmupState("127.0.0.2", "google", 1, "2024-05-01", delivered_today=150)
    short.roll_over("2024-05-02", settings)
    assert short.day_index == 1  # target not reached: the day repeats
    deferred = WarmupState("127.0.0.2", "google", 1, "2024-05-01", delivered_today=195, deferred_today=30)
    deferred.roll_over("2024-05-02", settings)
    assert deferred.day_index == 1  # deferral trouble: the day repeats
    assert WarmupState("i", "d", 3, "x").cap(settings.schedule) is None  # warm


async def test_mx_routing_providers_tls_demand_and_dns_failures(engine, smtp_sink, dns_server_factory, tmp_path):
    dns = dns_server_factory({
        "gmail-hosted.test": {"MX": ["10 aspmx.l.google.com"]},
        "aspmx.l.google.com": {"A": ["127.0.0.1"]},
        "small.test": {"MX": ["10 mx.small.test"]},
        "mx.small.test": {"A": ["127.0.0.1"]},
        "nullmx.test": {"MX": ["0 ."]},
    })
    config = make_config(None, tmp_path, nameservers=[dns.resolver], mx_port=smtp_sink.port,
                         ips=[{"address": "127.0.0.2", "ehlo_name": "mta2.example.com"}])
    queue(engine, config, tmp_path, ["a@gmail-hosted.test", "b@small.test", "c@nosuch.test", "d@nullmx.test"])
    sender, stats = await deliver(config, engine)
    with engine.connect() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(text("SELECT recipient, state, lane, reason, last_reply "
                                                        "FROM sender_message"))}
    assert rows["b@small.test"][:2] == ("delivered", "127.0.0.2|mx:mx.small.test")
    # Google demands TLS (built-in provider setting); smtp-sink offers none: deferred, not sent in clear.
    assert rows["a@gmail-hosted.test"][:2] == ("queued", "127.0.0.2|google")
    assert "STARTTLS" in rows["a@gmail-hosted.test"][3]
    assert rows["c@nosuch.test"][0] == "bounced" and rows["c@nosuch.test"][2] == "hostunknown"
    assert rows["d@nullmx.test"][0] == "bounced" and rows["d@nullmx.test"][2] == "notaccept"
    with session_scope(engine) as session:
        assert suppressed_addresses(session, ["c@nosuch.test", "d@nullmx.test", "b@small.test"]) == {
            "c@nosuch.test", "d@nullmx.test"}


def test_lane_ramp_adds_one_connection_per_step():
    lane = Lane("ip|google", "ip", None, "h", "google", LaneSettings(4, 50, None, None, None, "required"), 10.0)
    lane.set_overlay(Overlay(suspended_until=1100.0, suspended_why="suspended by rule x"), 1000.0)
    assert lane.blocked(1050.0)
    lane.refresh(1100.5)  # the suspension ran out
    assert (lane.ramp, lane.effective_connections()) == (1, 1)
    lane.note_success(1105.0)
    assert lane.effective_connections() == 1  # not yet a whole step of good sending
    lane.note_success(1111.0)
    assert lane.effective_connections() == 2
    lane.note_success(1121.0)
    lane.note_success(1131.0)
    assert lane.ramp is None and lane.effective_connections() == 4  # back to the configured limit


async def test_in_process_pause_blocks_before_the_next_transaction(engine, scripted_smtp, tmp_path):
    server = scripted_smtp()
    config = make_config(server.port, tmp_path,
                         relay={"host": "127.0.0.1", "port": server.port, "connections": 2, "rate": "50/s"},
                         ips=[{"address": "127.0.0.2", "ehlo_name": "a.example.com"},
                              {"address": "127.0.0.3", "ehlo_name": "b.example.com"}])
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(600)])
    stop = asyncio.Event()
    sender = Sender(config.sender, engine)
    task = asyncio.create_task(sender.run(stop=stop))
    def mail_after(peer: str, at: float) -> int:
        with server.lock:
            return sum(1 for p, t in server.mail_times if p == peer and t > at)

    try:
        await eventually(lambda: len(server.mail_times) >= 20, what="20 transactions")
        paused_at = time.time()
        await sender.set_directive("pause", "127.0.0.2", "relay", reason="policy: complaint rate")
        paused = sender.lanes["127.0.0.2|relay"]
        assert "complaint rate" in (paused.blocked() or "")
        assert sender.lanes["127.0.0.3|relay"].blocked() is None  # the other IP's lane goes on
        # The known point: the paused lane has no connection left, and the other
        # lane has gone on sending well after the pause (its mail is the marker
        # that the sender kept working while .2 stayed quiet).
        await eventually(lambda: paused.active == 0 and paused.buffered() == 0, what="the paused lane to close")
        closed_at = time.time()
        await eventually(lambda: mail_after("127.0.0.3", closed_at) >= 10, what="the other lane to go on")
        assert mail_after("127.0.0.2", paused_at) <= 2  # only envelopes already on the wire (one per connection)
        assert mail_after("127.0.0.2", closed_at) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT kind, source_ip, destination, reason FROM sender_lane_directive")).one()
    assert tuple(row) == ("pause", "127.0.0.2", "relay", "policy: complaint rate")


async def test_daily_cap_stops_the_lane_for_the_day(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path, relay={"host": "127.0.0.1", "port": smtp_sink.port, "daily_cap": 4})
    queue(engine, config, tmp_path, [f"u{i}@example.org" for i in range(7)])
    sender, stats = await deliver(config, engine)
    assert stats.delivered == 4 and states(engine) == {"delivered": 4, "queued": 3}
    assert "daily cap of 4" in next(iter(sender.lanes.values())).blocked()
    sender, stats = await deliver(config, engine)  # a new process remembers today's count
    assert stats.delivered == 0 and states(engine)["queued"] == 3


async def test_a_paused_lane_does_not_hold_up_routing_for_other_pools(engine, smtp_sink, tmp_path):
    config = make_config(smtp_sink.port, tmp_path, ips=[
        {"address": "127.0.0.2", "ehlo_name": "a.example.com", "pool": "a"},
        {"address": "127.0.0.3", "ehlo_name": "b.example.com", "pool": "b"}])
    queue(engine, config, tmp_path, [f"a{i}@example.org" for i in range(5)], campaign="first", pool="a")
    stop = asyncio.Event()
    sender = Sender(config.sender, engine)
    task = asyncio.create_task(sender.run(stop=stop))
    try:
        await eventually(lambda: states(engine).get("delivered") == 5, what="the first campaign")
        await sender.set_directive("pause", "127.0.0.2", "relay", reason="test")
        queue(engine, config, tmp_path, [f"a{i}@example.org" for i in range(5, 10)], campaign="second", pool="a")
        # Routed onto the paused lane (the only lane routing took mail to) and handed back with its lane.
        await eventually(lambda: count_where(engine, "state = 'queued' AND lane = :l", l="127.0.0.2|relay") == 5,
                         what="the second campaign routed onto the paused lane")
        queue(engine, config, tmp_path, [f"b{i}@example.org" for i in range(5)], campaign="third", pool="b")
        await eventually(lambda: states(engine).get("delivered") == 10, what="pool b's mail past the paused lane")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert states(engine) == {"delivered": 10, "queued": 5}
    with engine.connect() as conn:
        waiting = {r[0] for r in conn.execute(text("SELECT lane FROM sender_message WHERE state = 'queued'"))}
    assert waiting == {"127.0.0.2|relay"}


async def test_a_pause_stored_before_its_lane_exists_holds_the_new_lane(engine, smtp_sink, tmp_path):
    # A lane is made when mail first goes through its IP to its destination;
    # it starts under the directives in force, not open until the next change.
    config = make_config(smtp_sink.port, tmp_path, ips=[
        {"address": "127.0.0.2", "ehlo_name": "a.example.com", "pool": "a"},
        {"address": "127.0.0.3", "ehlo_name": "b.example.com", "pool": "b"}])
    with engine.begin() as conn:
        control.add_directive(conn, "pause", "127.0.0.2", "*", reason="listed")
    queue(engine, config, tmp_path, [f"a{i}@example.org" for i in range(3)], campaign="first", pool="a")
    stop = asyncio.Event()
    sender = Sender(config.sender, engine)
    task = asyncio.create_task(sender.run(stop=stop))
    try:
        # The known point: pool a's mail was routed onto its new lane and handed
        # back, and pool b's mail, queued after it, went out (the marker).
        await eventually(lambda: count_where(engine, "state = 'queued' AND lane = :l", l="127.0.0.2|relay") == 3,
                         what="pool a's mail routed onto the paused IP's new lane")
        queue(engine, config, tmp_path, [f"b{i}@example.org" for i in range(3)], campaign="second", pool="b")
        await eventually(lambda: states(engine).get("delivered") == 3, what="pool b's mail")
        assert "listed" in (sender.lanes["127.0.0.2|relay"].blocked() or "")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert states(engine) == {"delivered": 3, "queued": 3}
    await sink_holds(smtp_sink, 3)
    assert smtp_sink.client_addresses() == {"127.0.0.3": 3}
