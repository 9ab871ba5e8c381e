"""The durable queue's batch operations on SQLite and PostgreSQL, and the
sender's jobs for `repmon run`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

from sqlalchemy import text

from monitor.config import parse_config
from monitor.core.runtime import Runtime
from sender import control, queue
from sender.jobs import provide
from sender.queue import NewMessage, Outcome
from tests.fixtures._waiting import eventually


def new(i: int) -> NewMessage:
    return NewMessage("c", "default", f"u{i}@example.org", "b@example.com", f"m{i}@example.com",
                      b"Subject: x\r\n", b"body\r\n", None, False)


def test_claim_leases_oldest_first_and_outcomes_need_the_lease(engine):
    with engine.begin() as conn:
        assert queue.enqueue(conn, [new(i) for i in range(5)], now=100.0) == 5
    with engine.begin() as conn:
        first = queue.claim(conn, "", 3, "owner-a", now=200.0)
        second = queue.claim(conn, "", 10, "owner-b", now=200.0)
    assert [m.recipient for m in first] == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert [m.recipient for m in second] == ["u3@example.org", "u4@example.org"]  # nothing claimed twice
    assert first[0].headers == b"Subject: x\r\n" and first[0].body == b"body\r\n"
    m = first[0]
    m.lane, m.source_ip = "127.0.0.2|relay", "127.0.0.2"
    with engine.begin() as conn:
        queue.ensure_lanes(conn, [("127.0.0.2|relay", "127.0.0.2", "relay")], 200.0)
        queue.record_outcomes(conn, [Outcome(m, "delivered", 201.0, 250, "2.0.0", "250 2.0.0 ok")], "owner-b")
        assert conn.execute(text("SELECT state FROM sender_message WHERE id = :i"), {"i": m.id}).scalar() == "inflight"
        queue.record_outcomes(conn, [Outcome(m, "delivered", 201.0, 250, "2.0.0", "250 2.0.0 ok")], "owner-a")
        row = conn.execute(text("SELECT state, lane, attempts FROM sender_message WHERE id = :i"), {"i": m.id}).one()
        content = conn.execute(text("SELECT COUNT(*) FROM sender_message_content WHERE message_ref = :i"),
                               {"i": m.id}).scalar()
        counters = conn.execute(text("SELECT delivered_today, delivered_total FROM sender_lane")).one()
    assert tuple(row) == ("delivered", "127.0.0.2|relay", 1) and content == 0
    # The log and counters keep what each sender reported (a sender whose lease
    # was taken over did deliver); only the message's state is lease-guarded.
    assert tuple(counters) == (2, 2)


def test_deferred_and_released_go_back_to_the_queue(engine):
    with engine.begin() as conn:
        queue.enqueue(conn, [new(1), new(2)], now=100.0)
        a, b = queue.claim(conn, "", 2, "o", now=100.0)
        a.lane = b.lane = "ip|relay"
        queue.record_outcomes(conn, [Outcome(a, "deferred", 101.0, 451, "4.3.0", "451 busy", "deferred",
                                             retry_at=500.0),
                                     Outcome(b, "released", 101.0)], "o")
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(text(
            "SELECT recipient, state, attempts, next_attempt_at, lane FROM sender_message"))}
        log = conn.execute(text("SELECT outcome, reply_code FROM sender_delivery_log")).all()
    assert rows["u1@example.org"] == ("queued", 1, 500.0, "ip|relay")
    assert rows["u2@example.org"] == ("queued", 0, 100.0, "ip|relay")
    assert [tuple(r) for r in log] == [("deferred", 451)]  # a release is not an attempt


def test_messages_of_a_dead_sender_are_taken_back(engine):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner_dead = f"{socket.gethostname()}:{dead.pid}:{int(time.time())}"
    owner_alive = queue.owner_id()
    owner_elsewhere = f"other-host:{dead.pid}:1"
    with engine.begin() as conn:
        queue.enqueue(conn, [new(i) for i in range(3)], now=100.0)
        queue.claim(conn, "", 1, owner_dead, now=time.time())
        queue.claim(conn, "", 1, owner_alive, now=time.time())
        queue.claim(conn, "", 1, owner_elsewhere, now=time.time())
    with engine.begin() as conn:
        assert queue.reclaim_dead(conn, time.time()) == 1  # only the dead local owner's; the remote one's lease runs
        states = dict(conn.execute(text("SELECT lease_owner, state FROM sender_message "
                                        "WHERE state = 'inflight'")).all())
    assert states == {owner_alive: "inflight", owner_elsewhere: "inflight"}
    with engine.begin() as conn:
        assert queue.reclaim_dead(conn, time.time() + queue.LEASE_SECONDS + 1) == 2  # expired leases, whoever


def test_expire_old_finds_waiting_messages_not_due_ones(engine):
    with engine.begin() as conn:
        queue.enqueue(conn, [new(i) for i in range(3)], now=100.0)
        conn.execute(text("UPDATE sender_message SET lane = 'ip|halted' WHERE recipient = 'u0@example.org'"))
        conn.execute(text("UPDATE sender_message SET lane = 'ip|open', next_attempt_at = 9999 "
                          "WHERE recipient = 'u1@example.org'"))
        conn.execute(text("UPDATE sender_message SET lane = 'ip|open' WHERE recipient = 'u2@example.org'"))
        found = queue.expire_old(conn, max_age=50.0, now=200.0, blocked_lanes=["ip|halted"])
    assert sorted(m.recipient for m, _ in found) == ["u0@example.org", "u1@example.org"]


async def test_jobs_for_repmon_run(engine, smtp_sink, tmp_path):
    bare = parse_config({})
    assert "sender" not in bare.model_fields_set
    assert provide(None, Runtime(engine)) == []  # no [sender]: no polling
    config = parse_config({"sender": {"mail_from": "b@example.com",
                                      "relay": {"host": "127.0.0.1", "port": smtp_sink.port},
                                      "unsubscribe": {"url": "https://u.example.com/u", "secret": "s"}}})
    runtime = Runtime(engine)
    jobs = {job.name: job for job in provide(config.sender, runtime)}
    assert set(jobs) == {"sender:delivery", "sender:unsubscribe"}
    with engine.begin() as conn:
        queue.enqueue(conn, [new(i) for i in range(4)])
    await jobs["sender:delivery"].run()  # --once: deliver until idle
    await jobs["sender:unsubscribe"].run()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'delivered'")).scalar() == 4
    service = asyncio.create_task(jobs["sender:delivery"].service())
    with engine.begin() as conn:
        queue.enqueue(conn, [new(i) for i in range(10, 13)])

    def delivered() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'delivered'")).scalar() or 0

    await eventually(lambda: delivered() >= 7, what="the service to deliver the new mail")
    runtime.stopping.set()
    await asyncio.wait_for(service, 30)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM sender_message WHERE state = 'delivered'")).scalar() == 7


def test_actions_end_on_expiry_and_same_rule_extends(engine):
    with engine.begin() as conn:
        version = control.read_version(conn)
        first = control.add_action(conn, source_ip="127.0.0.2", destination="yahoo", action="suspend", rule="r",
                                   pattern="x", response="421 [TSS04] a", expires_at=150.0, now=100.0)
        again = control.add_action(conn, source_ip="127.0.0.2", destination="yahoo", action="suspend", rule="r",
                                   pattern="x", response="421 [TSS04] b", expires_at=250.0, now=140.0)
        assert first == again  # extended, not stacked
        assert control.end_expired(conn, now=200.0) == 0
        assert control.end_expired(conn, now=260.0) == 1
        row = conn.execute(text("SELECT ended_at, end_reason, response FROM sender_lane_action")).one()
        assert tuple(row) == (250.0, "expired", "421 [TSS04] b")
        assert control.active_actions(conn) == []
        assert control.read_version(conn) == version + 3
