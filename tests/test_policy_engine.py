"""The policy loop on a real database (SQLite and PostgreSQL) with an
injected clock: rules fire on health, reach the sender as lane directives,
expire, clear, ramp back up, re-fire only on new evidence, and yield to
operators."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from monitor.health.clock import FakeClock
from monitor.loop import HealthLoop
from monitor.policy import manual
from sender import control
from tests.fixtures._health_rows import T0, add_deliveries, add_events, config, control_version, directives, set_listing


def loop_for(engine, clock, **sections):
    return HealthLoop(config(**sections), engine, clock)


def notifications(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT kind, subject, cause FROM alert_notifications ORDER BY id"))]


def test_complaint_spike_pauses_the_lane_with_evidence(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=1000, at=T0 - 3600)
    add_deliveries(engine, ip="127.0.0.2", dest="microsoft", n=1000, at=T0 - 3600, rdomain="hotmail.com")
    loop.tick()
    assert directives(engine) == []
    version = control_version(engine)
    add_events(engine, n=4, at=T0 - 60, kind="feedback", complaint=True)  # 0.4 % at yahoo
    report = loop.tick()
    assert [(a.action, a.subject, a.rule) for a in report.policy.started] == [
        ("pause", "lane:127.0.0.2/yahoo", "lane-complaint-rate-pause")]
    action = report.policy.started[0]
    assert action.evidence == ["complaint rate 0.4% (4 of 1,000) over 24h >= 0.3%"]
    assert action.expires_at.timestamp() == pytest.approx(T0 + 4 * 3600)
    [d] = directives(engine)
    assert (d["source_ip"], d["destination"], d["kind"], d["created_by"]) == (
        "127.0.0.2", "yahoo", "pause", "policy:lane-complaint-rate-pause")
    assert d["expires_at"] == pytest.approx(T0 + 4 * 3600)
    assert control_version(engine) > version  # running senders notice within their 200 ms poll
    # the same condition on the next pass does not stack a second action
    clock.advance(1)
    assert loop.tick().policy.started == []
    assert len(directives(engine)) == 1
    kinds = notifications(engine)
    assert ("action", "lane:127.0.0.2/yahoo", "action:lane-complaint-rate-pause") in kinds
    assert ("firing", "ip:127.0.0.2", "complaint_rate:yahoo") in kinds
    assert not any(s.startswith("lane:") for k, s, c in kinds if k == "firing")


def test_expiry_ramps_up_and_refires_only_on_new_evidence(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock, policy={"ramp": {"start": "2/s", "factor": 3, "step": "10m", "steps": 2}})
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=1000, at=T0 - 3600)
    add_events(engine, n=5, at=T0 - 60, kind="feedback", complaint=True)
    loop.tick()
    [pause] = directives(engine)
    clock.advance(4 * 3600 + 1)
    report = loop.tick()
    assert [(a.action, a.end_reason) for a in report.policy.ended] == [("pause", "expired")]
    [ramp] = directives(engine)
    assert (ramp["kind"], ramp["rate"], ramp["destination"]) == ("slow", 2.0, "yahoo")
    # the 24 h rate is still over the line, but nothing new happened: no new pause
    assert report.policy.started == []
    clock.advance(600)
    loop.tick()
    [ramp2] = directives(engine)
    assert ramp2["rate"] == 6.0 and ramp2["id"] != ramp["id"]
    clock.advance(600)
    loop.tick()
    assert directives(engine) == []  # ramp done: full speed
    # a new complaint is new evidence: the lane stops again
    add_events(engine, n=1, at=clock.now() - 5, kind="feedback", complaint=True)
    report = loop.tick()
    assert [(a.action, a.subject) for a in report.policy.started] == [("pause", "lane:127.0.0.2/yahoo")]
    with engine.connect() as conn:
        ended = conn.execute(text("SELECT end_reason FROM sender_lane_directive WHERE id = :i"), {"i": pause["id"]}).scalar()
    assert ended == "expired"


def test_major_listing_pauses_the_ip_until_delisted(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=10, at=T0 - 600)
    set_listing(engine, "127.0.0.2", "zen.spamhaus.org", ["127.0.0.2"], at=T0, reason="SBL: direct spam source")
    report = loop.tick()
    started = [(a.action, a.subject, a.destinations) for a in report.policy.started]
    assert started == [("pause", "ip:127.0.0.2", ["*"])]  # Spamhaus: every destination
    assert report.policy.started[0].evidence[0].startswith("listed on zen.spamhaus.org (127.0.0.2")
    assert [(d["source_ip"], d["destination"], d["kind"]) for d in directives(engine)] == [("127.0.0.2", "*", "pause")]
    clock.advance(3600)
    loop.tick()
    assert len(directives(engine)) == 1  # still listed: still paused
    set_listing(engine, "127.0.0.2", "zen.spamhaus.org", [], at=clock.now(), state="clean")
    report = loop.tick()
    assert [(a.action, a.end_reason) for a in report.policy.ended] == [("pause", "cleared")]
    assert [(d["kind"], d["destination"]) for d in directives(engine)] == [("slow", "*")]  # the ramp
    kinds = notifications(engine)
    assert ("firing", "ip:127.0.0.2", "listing:zen.spamhaus.org") in kinds
    assert ("resolved", "ip:127.0.0.2", "listing:zen.spamhaus.org") in kinds
    assert ("ended", "ip:127.0.0.2", "action:major-listing-pause") in kinds


def test_listing_used_by_some_receivers_pauses_only_their_lanes(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=10, at=T0 - 600)
    add_deliveries(engine, ip="127.0.0.2", dest="mx:mail.example.net", n=10, at=T0 - 600, rdomain="example.net")
    set_listing(engine, "127.0.0.2", "b.barracudacentral.org", ["127.0.0.2"], at=T0)
    report = loop.tick()
    assert [a.destinations for a in report.policy.started] == [["mx:mail.example.net"]]
    # a lane that appears while the listing lasts is paused too
    add_deliveries(engine, ip="127.0.0.2", dest="mx:mx.example.org", n=1, at=T0 + 5, rdomain="example.org")
    clock.advance(10)
    loop.tick()
    assert sorted(d["destination"] for d in directives(engine)) == ["mx:mail.example.net", "mx:mx.example.org"]


def test_operator_cancel_is_an_override_and_hold_keeps_it(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=1000, at=T0 - 3600)
    add_events(engine, n=5, at=T0 - 60, kind="feedback", complaint=True)
    [action] = loop.tick().policy.started
    with engine.begin() as conn:
        manual.cancel(loop.policy, conn, action.id, user="ann", now=clock.now(), reason="false alarm",
                      hold=7200, ramp=False)
    assert directives(engine) == []
    clock.advance(1)
    assert loop.tick().policy.started == []  # same evidence: the override stands
    add_events(engine, n=3, at=clock.now(), kind="feedback", complaint=True)
    clock.advance(1)
    assert loop.tick().policy.started == []  # new evidence, but on hold for 2 h
    clock.advance(7200)
    add_events(engine, n=1, at=clock.now(), kind="feedback", complaint=True)
    assert [a.action for a in loop.tick().policy.started] == ["pause"]
    with engine.connect() as conn:
        reason = conn.execute(text("SELECT end_reason FROM policy_actions WHERE id = :i"), {"i": action.id}).scalar()
    assert reason == "cancelled by ann: false alarm"


def test_policy_never_lifts_a_pause_it_did_not_set(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=10, at=T0 - 600)
    with engine.begin() as conn:
        own = control.add_directive(conn, "pause", "127.0.0.2", "*", reason="maintenance", now=clock.now()).id
    set_listing(engine, "127.0.0.2", "zen.spamhaus.org", ["127.0.0.3"], at=T0)
    loop.tick()
    set_listing(engine, "127.0.0.2", "zen.spamhaus.org", [], at=T0 + 60, state="clean")
    clock.advance(60)
    loop.tick()
    ids = {d["id"] for d in directives(engine)}
    assert own in ids


def test_dry_run_decides_but_touches_nothing(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock, policy={"dry_run": True})
    set_listing(engine, "127.0.0.2", "zen.spamhaus.org", ["127.0.0.2"], at=T0)
    report = loop.tick()
    assert [w["action"] for w in report.policy.would] == ["pause"]
    assert directives(engine) == [] and report.policy.started == []
    clock.advance(1)
    assert loop.tick(full=True).policy.would == []  # said once, not at every pass


def test_dead_recipient_domain_is_suppressed_then_lifted(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_events(engine, n=3, at=T0 - 600, hard_or_soft="hard", reason="hostunknown", recipient_domain="nosuch.test")
    add_deliveries(engine, ip="127.0.0.2", dest="mx:nosuch.test", n=2, at=T0, outcome="queued", rdomain="nosuch.test")
    with engine.begin() as conn:  # queued, not yet attempted: no delivery-log row
        conn.execute(text("DELETE FROM sender_delivery_log WHERE outcome = 'queued'"))
    report = loop.tick(full=True)
    assert [(a.action, a.target) for a in report.policy.started] == [("suppress", "@nosuch.test")]
    with engine.connect() as conn:
        suppressed = conn.execute(text("SELECT COUNT(*) FROM suppressions WHERE domain = 'nosuch.test'")).scalar()
    assert suppressed == 2
    clock.advance(30 * 86400 + 1)
    loop.tick(full=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM suppressions WHERE domain = 'nosuch.test'")).scalar() == 0


def test_manual_pause_slow_resume(engine):
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    with engine.begin() as conn:
        pause = manual.operator_action(loop.policy, conn, "pause", "lane:127.0.0.9/google", user="bob", now=T0,
                                       duration=3600, reason="Gmail asked us to slow down")
        slow = manual.operator_action(loop.policy, conn, "slow", "ip:127.0.0.9", user="bob", now=T0, rate=0.5)
    rows = directives(engine)
    assert [(d["destination"], d["kind"], d["rate"], d["created_by"]) for d in rows] == [
        ("google", "pause", None, "operator:bob"), ("*", "slow", 0.5, "operator:bob")]
    assert pause.expires_at.timestamp() == T0 + 3600 and slow.expires_at is None
    with engine.begin() as conn:
        ended = manual.resume(loop.policy, conn, "ip:127.0.0.9", user="bob", now=T0 + 5, ramp=False)
    assert {a.id for a in ended} == {pause.id, slow.id}
    assert directives(engine) == []
    with pytest.raises(manual.ManualError):
        with engine.begin() as conn:
            manual.operator_action(loop.policy, conn, "pause", "domain:example.com", user="bob", now=T0)


def test_a_resume_through_repmon_lanes_is_an_override_too(engine):
    """`repmon lanes resume` (the sender's command) ends our directives; the
    policy notices, closes its action, and does not pause again on the same evidence."""
    clock = FakeClock(T0)
    loop = loop_for(engine, clock)
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=1000, at=T0 - 3600)
    add_events(engine, n=5, at=T0 - 60, kind="feedback", complaint=True)
    [action] = loop.tick().policy.started
    with engine.begin() as conn:
        control.add_directive(conn, "resume", "127.0.0.2", "yahoo", reason="checked with Yahoo", now=clock.now())
    clock.advance(1)
    report = loop.tick()
    assert [(a.id, a.end_reason) for a in report.policy.ended] == [(action.id, "lifted outside the policy (resumed by operator)")]
    assert report.policy.started == [] and directives(engine) == []
