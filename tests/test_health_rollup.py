"""The incremental roll-up: counters equal a direct count of the events,
each row is counted once however the passes fall, and on PostgreSQL a
transaction that commits out of id order is not missed."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from monitor.health.counts import WINDOW_GRAINS, window_start
from monitor.health.rollup import Rollup
from monitor.health.subjects import DomainMapper
from monitor.health.windows import read_windows, total_of
from tests.fixtures._health_rows import T0, add_deliveries, add_dmarc, add_events, dt


def rollup(engine, **kw):
    return Rollup(engine, mapper=DomainMapper(["example.com"]), own_ips={"127.0.0.2"}, **kw)


def test_counts_per_lane_ip_and_domain(engine):
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=40, at=T0 - 600)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=5, at=T0 - 300, outcome="deferred")
    add_deliveries(engine, ip="127.0.0.2", dest="google", n=30, at=T0 - 7200, rdomain="gmail.com")
    add_deliveries(engine, ip="127.0.0.3", dest="yahoo", n=10, at=T0 - 60)
    add_events(engine, n=3, at=T0 - 100, kind="feedback", complaint=True)  # yahoo.com: route learned from the log
    add_events(engine, n=2, at=T0 - 100, hard_or_soft="hard", reason="userunknown", recipient_domain="gmail.com")
    add_events(engine, n=4, at=T0 - 100, hard_or_soft="soft", reason="blocked", smtp_agent="repmon-sender",
               remote_mta="yahoo")
    add_events(engine, n=7, at=T0 - 100, hard_or_soft="soft", action="delayed")  # DSN "delayed": not a bounce
    add_events(engine, n=9, at=T0 - 100, kind="feedback", complaint=False)  # an opt-out: not a complaint
    result = rollup(engine).run(T0)
    assert result.rows == {"delivery_log": 85, "events": 9}
    assert ("127.0.0.2", "yahoo") in result.dirty_lanes and "example.com" in result.dirty_domains
    with engine.connect() as conn:
        windows = read_windows(conn, T0)
    day = windows["24h"]
    yahoo = day[("ip", "127.0.0.2")]["yahoo"]
    assert (yahoo.delivered, yahoo.deferred, yahoo.attempts, yahoo.sent) == (40, 5, 45, 40)
    assert (yahoo.complaints, yahoo.soft_bounces, yahoo.blocks) == (3, 4, 4)
    assert day[("ip", "127.0.0.2")]["google"].hard_bounces == 2
    assert day[("ip", "127.0.0.3")]["yahoo"].delivered == 10
    # bounce.example.com rolls up to the configured sending domain example.com
    domain = total_of(day[("domain", "example.com")])
    assert (domain.delivered, domain.complaints, domain.hard_bounces) == (80, 3, 2)
    # the 1 h window (5-minute buckets) does not see the google mail of two hours ago
    hour = windows["1h"][("ip", "127.0.0.2")]
    assert "google" not in hour or hour["google"].delivered == 0
    assert hour["yahoo"].delivered == 40


def test_each_row_counted_once_across_passes_and_equal_to_a_direct_count(engine):
    rng = random.Random(7)
    up = rollup(engine, batch=37)  # small id ranges: many passes per call
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    for round_ in range(4):
        for _ in range(6):
            add_deliveries(engine, ip=rng.choice(ips), dest=rng.choice(["yahoo", "microsoft"]), n=rng.randint(1, 30),
                           at=T0 - rng.randint(0, 80_000), outcome=rng.choice(["delivered", "delivered", "deferred"]))
            add_events(engine, n=rng.randint(1, 5), at=T0 - rng.randint(0, 80_000), kind="feedback", complaint=True,
                       sending_ip=rng.choice(ips))
        up.run(T0)
        if round_ == 1:
            up = rollup(engine, batch=1000)  # a restart: the cursor lives in the database
    assert up.run(T0).rows == {}
    with engine.connect() as conn:
        windows = read_windows(conn, T0, windows=("24h",))["24h"]
        direct = dict(conn.execute(text(
            "SELECT l.lane, COUNT(*) FROM sender_delivery_log l WHERE l.outcome = 'delivered' "
            "AND l.at >= :start GROUP BY l.lane"), {"start": window_start("24h", T0)}).all())
        complaints = dict(conn.execute(text(
            "SELECT sending_ip, COUNT(*) FROM events WHERE is_complaint = :y GROUP BY sending_ip"), {"y": True}).all())
    for lane, count in direct.items():
        ip, dest = lane.split("|")
        assert windows[("ip", ip)][dest].delivered == count
    for ip, count in complaints.items():
        assert total_of(windows[("ip", ip)]).complaints == count


def test_dmarc_rows_count_for_own_ips_only(engine):
    add_dmarc(engine, domain="example.com", source_ip="127.0.0.2", count=90, dkim="pass", spf="fail", begin=T0 - 86400)
    add_dmarc(engine, domain="example.com", source_ip="127.0.0.2", count=10, dkim="fail", spf="fail", begin=T0 - 86400)
    add_dmarc(engine, domain="example.com", source_ip="203.0.113.9", count=500, dkim="fail", spf="fail",
              begin=T0 - 86400)  # a spoofer: not our mail
    rollup(engine).run(T0)
    with engine.connect() as conn:
        week = read_windows(conn, T0, windows=("7d",))["7d"]
    domain = total_of(week[("domain", "example.com")])
    assert (domain.dmarc_messages, domain.dmarc_pass, domain.dkim_pass, domain.spf_pass) == (100, 90, 90, 0)
    assert total_of(week[("ip", "127.0.0.2")]).dmarc_messages == 100
    assert ("ip", "203.0.113.9") not in week


def test_old_events_skip_fine_grains_and_prune_drops_expired_buckets(engine):
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=3, at=T0 - 5 * 86400)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=2, at=T0 - 100)
    up = rollup(engine)
    up.run(T0)
    with engine.connect() as conn:
        grains = dict(conn.execute(text("SELECT grain, SUM(delivered) FROM health_counts WHERE scope = 'ip' "
                                        "GROUP BY grain")).all())
    assert grains == {"5m": 2, "1h": 5, "1d": 5}
    up.prune(T0 + 4 * 86400)  # the 5-minute and the older hour buckets are past their keep
    with engine.connect() as conn:
        grains = dict(conn.execute(text("SELECT grain, SUM(delivered) FROM health_counts WHERE scope = 'ip' "
                                        "GROUP BY grain")).all())
    assert grains == {"1h": 2, "1d": 5}
    assert WINDOW_GRAINS["7d"][0] == "1d"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_commit_out_of_id_order_is_not_missed(engine):
    """Transaction A takes an id, B takes the next one and commits first; the
    roll-up reads B, remembers A's id as a gap, and counts A once it commits."""
    add_events(engine, n=1, at=T0 - 10, kind="feedback", complaint=True)  # makes the table's sequence move
    up = rollup(engine)
    up.run(T0)
    from monitor.storage.models import StoredEvent
    table = StoredEvent.__table__
    row = {"kind": "feedback", "occurred_at": dt(T0 - 5), "stored_at": dt(T0 - 5), "recipient_domain": "yahoo.com",
           "is_complaint": True, "sending_ip": "127.0.0.2"}
    slow = engine.connect()
    slow_tx = slow.begin()
    slow.execute(table.insert(), row)  # takes id N, not committed yet
    add_events(engine, n=1, at=T0 - 5, kind="feedback", complaint=True)  # id N+1, committed
    first = up.run(T0)
    assert first.rows == {"events": 1}
    slow_tx.commit()
    slow.close()
    second = up.run(T0)
    assert second.rows == {"events": 1}
    with engine.connect() as conn:
        day = read_windows(conn, T0, windows=("24h",))["24h"]
        gaps = conn.execute(text("SELECT gaps FROM health_cursors WHERE source = 'events'")).scalar()
    assert total_of(day[("ip", "127.0.0.2")]).complaints == 3
    assert gaps == []
