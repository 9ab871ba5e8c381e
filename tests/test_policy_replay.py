"""`repmon policy replay`: the actions the policy would have taken on the
stored history, with the same firing, expiry and clearing rules, and
nothing written."""

from __future__ import annotations

import json

from sqlalchemy import text

from monitor.cli import main
from monitor.health.rollup import Rollup
from monitor.health.subjects import DomainMapper
from monitor.loop import health_service
from monitor.policy.replay import Replay
from tests.fixtures._configs import write_config
from tests.fixtures._health_rows import T0, add_deliveries, add_events, config, set_listing

HOUR = 3600.0


def _history(engine, now=T0):
    base = now - now % HOUR  # on the hour, like the tests' T0
    # day 1: a complaint spike on the yahoo lane of .2
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=2000, at=base - 5 * 86400)
    add_events(engine, n=10, at=base - 5 * 86400 + 1800, kind="feedback", complaint=True)
    # day 3: .3 listed on Spamhaus for 6 hours
    add_deliveries(engine, ip="127.0.0.3", dest="yahoo", n=10, at=base - 3 * 86400)
    set_listing(engine, "127.0.0.3", "zen.spamhaus.org", ["127.0.0.2"], at=base - 3 * 86400 + 600)
    set_listing(engine, "127.0.0.3", "zen.spamhaus.org", [], at=base - 3 * 86400 + 6 * HOUR + 600, state="clean")


def test_replay_finds_the_spike_and_the_listing_and_writes_nothing(engine):
    _history(engine)
    cfg = config()
    Rollup(engine, mapper=DomainMapper(["example.com"]), own_ips=set()).run(T0)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM policy_actions")).scalar()
        actions = Replay(conn, cfg.policy, health_service(cfg, engine)).run(T0 - 7 * 86400, T0, HOUR)
        after = conn.execute(text("SELECT COUNT(*) FROM policy_actions")).scalar()
        directives = conn.execute(text("SELECT COUNT(*) FROM sender_lane_directive")).scalar()
    assert before == after == 0 and directives == 0
    found = [(a.subject, a.action, a.rule) for a in actions]
    assert found == [("lane:127.0.0.2/yahoo", "pause", "lane-complaint-rate-pause"),
                     ("ip:127.0.0.3", "pause", "major-listing-pause")]
    spike, listing = actions
    assert spike.started == T0 - 5 * 86400 + HOUR and spike.end_reason == "expired"
    assert spike.ended == spike.started + 4 * HOUR  # and not again: no new complaints afterwards
    assert listing.end_reason == "cleared" and listing.destinations == ["*"]
    assert listing.ended - listing.started == 6 * HOUR


def test_replay_command_json(engine, tmp_path, capsys):
    import time

    _history(engine, time.time())  # the command replays up to the real now
    path = write_config(tmp_path, {"database": {"url": engine.url.render_as_string(hide_password=False)},
                                   "dnsbl": {"domains": ["example.com"]}})
    assert main(["policy", "replay", "--config", str(path), "--since", "7d", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["subject"], x["action"]) for x in lines] == [("lane:127.0.0.2/yahoo", "pause"), ("ip:127.0.0.3", "pause")]
    assert set(lines[0]) >= {"subject", "action", "rule", "evidence", "started", "expires", "ended"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM policy_actions")).scalar() == 0


def test_old_history_falls_back_on_day_buckets(engine):
    """Replaying further back than the hour buckets are kept still finds the spike."""
    _history(engine)
    now = T0 + 20 * 86400
    cfg = config()
    Rollup(engine, mapper=DomainMapper(["example.com"]), own_ips=set()).run(now)  # hour buckets already past keep
    with engine.connect() as conn:
        actions = Replay(conn, cfg.policy, health_service(cfg, engine)).run(T0 - 7 * 86400, now, HOUR)
    assert [(a.subject, a.rule) for a in actions][:1] == [("lane:127.0.0.2/yahoo", "lane-complaint-rate-pause")]
