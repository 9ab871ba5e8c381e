"""Cluster ground rules on SQLite and PostgreSQL: leases have one owner,
lane budgets granted to several nodes never add up to more than the lane's
rate, daily cap or connection limit."""

from __future__ import annotations

import threading
import time

import pytest

from monitor.cluster import leases, nodes
from monitor.cluster.budget import (
    LaneLimit,
    NoSlot,
    Slot,
    budget_views,
    claim_connections,
    give_back,
    grant_slot,
    slot_times,
)
from tests.fixtures._rates import max_in_window


def test_slot_times_follow_gcra() -> None:
    limit = LaneLimit(rate=20.0, burst=1, daily_cap=None)
    times, tat = slot_times(0.0, 100.0, limit, want=100, slice_s=0.5)
    assert len(times) == 11  # 100.00 .. 100.50 inclusive
    assert times[0] == 100.0 and times[1] == pytest.approx(100.05)
    assert tat == pytest.approx(100.55)
    bursty = LaneLimit(rate=10.0, burst=5, daily_cap=None)
    times, _ = slot_times(0.0, 50.0, bursty, want=5, slice_s=0.0)
    assert times == [50.0] * 5  # an idle lane may send its burst at once


def test_unlimited_rate_grants_what_is_asked() -> None:
    times, tat = slot_times(3.0, 10.0, LaneLimit(None, 1, None), want=7, slice_s=0.5)
    assert times == [10.0] * 7 and tat == 3.0


def test_lease_has_one_owner_and_moves_when_it_expires(engine) -> None:
    assert leases.try_acquire(engine, "leader", "a", 6.0, now=100.0) == 1
    assert leases.try_acquire(engine, "leader", "b", 6.0, now=101.0) is None
    assert leases.try_acquire(engine, "leader", "a", 6.0, now=104.0) == 1  # renewal keeps the epoch
    assert leases.try_acquire(engine, "leader", "b", 6.0, now=109.0) is None  # a renewed until 110
    assert leases.try_acquire(engine, "leader", "b", 6.0, now=110.5) == 2  # expired: b takes over
    assert leases.try_acquire(engine, "leader", "a", 6.0, now=111.0) is None
    assert leases.release(engine, "leader", "a") is False
    assert leases.release(engine, "leader", "b") is True
    assert leases.try_acquire(engine, "leader", "a", 6.0, now=112.0) == 3
    [row] = leases.list_leases(engine)
    assert (row.owner, row.epoch, row.acquired_at) == ("a", 3, 112.0)


def test_nodes_register_heartbeat_and_dead_ones_are_forgotten(engine) -> None:
    a = nodes.new_identity("node-a", now=1.0)
    b = nodes.new_identity("node-b", now=2.0)
    nodes.heartbeat(engine, a, 10.0)
    nodes.heartbeat(engine, b, 10.0)
    nodes.heartbeat(engine, a, 20.0)
    rows = {r.node_id: r for r in nodes.list_nodes(engine)}
    assert rows["node-a"].heartbeat_at == 20.0 and rows["node-b"].heartbeat_at == 10.0
    assert rows["node-a"].alive(21.0, 6.0) and not rows["node-b"].alive(21.0, 6.0)
    assert nodes.forget_dead(engine, now=21.0, older_than_s=5.0) == 1
    assert [r.node_id for r in nodes.list_nodes(engine)] == ["node-a"]


def test_two_nodes_share_one_rate(engine) -> None:
    """Slots asked for in turns by two nodes never overlap: together they keep 20/s."""
    limit = LaneLimit(rate=20.0, burst=1, daily_cap=None)
    sent: list[float] = []
    now = 1000.0
    for _step in range(40):
        for _node in ("a", "b"):
            got = grant_slot(engine, "10.0.0.1|gmail", limit, want=50, now=now, slice_s=0.5)
            if isinstance(got, Slot):
                sent.extend(got.times)
        now += 0.25
    assert max_in_window(sent, 1.0) <= 21  # rate x 1 s + burst
    assert len(sent) == pytest.approx(20 * (now - 1000.0), abs=12)
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(sorted(sent), sorted(sent)[1:], strict=False))


def test_daily_cap_is_one_count_and_unused_messages_come_back(engine) -> None:
    limit = LaneLimit(rate=None, burst=1, daily_cap=25)
    first = grant_slot(engine, "lane", limit, want=20, now=50.0, slice_s=0.5)
    second = grant_slot(engine, "lane", limit, want=20, now=50.1, slice_s=0.5)
    assert isinstance(first, Slot) and isinstance(second, Slot)
    assert (len(first.times), len(second.times)) == (20, 5)
    spent = grant_slot(engine, "lane", limit, want=1, now=50.2, slice_s=0.5)
    assert isinstance(spent, NoSlot) and spent.wait_s > 0
    give_back(engine, first, unused=4, now=50.3)
    again = grant_slot(engine, "lane", limit, want=10, now=50.4, slice_s=0.5)
    assert isinstance(again, Slot) and len(again.times) == 4
    [view] = budget_views(engine, 50.5)
    assert view.day_count == 25
    tomorrow = grant_slot(engine, "lane", limit, want=10, now=50.0 + 86400, slice_s=0.5)
    assert isinstance(tomorrow, Slot) and len(tomorrow.times) == 10


def test_rate_given_back_only_when_nobody_was_granted_after(engine) -> None:
    limit = LaneLimit(rate=10.0, burst=1, daily_cap=None)
    mine = grant_slot(engine, "lane", limit, want=5, now=10.0, slice_s=1.0)
    assert isinstance(mine, Slot) and len(mine.times) == 5
    give_back(engine, mine, unused=3, now=10.05)
    nxt = grant_slot(engine, "lane", limit, want=1, now=10.05, slice_s=1.0)
    assert isinstance(nxt, Slot) and nxt.times[0] == pytest.approx(10.2)
    other = grant_slot(engine, "lane", limit, want=2, now=10.3, slice_s=1.0)
    assert isinstance(other, Slot)
    give_back(engine, nxt, unused=1, now=10.31)  # someone was granted after: the rate stays spent
    later = grant_slot(engine, "lane", limit, want=1, now=10.32, slice_s=1.0)
    assert isinstance(later, Slot) and later.times[0] == pytest.approx(10.5)


def test_connection_claims_stay_within_the_lane_limit(engine) -> None:
    assert claim_connections(engine, "lane", "a", want=8, limit=10, ttl_s=6.0, now=100.0) == 8
    assert claim_connections(engine, "lane", "b", want=8, limit=10, ttl_s=6.0, now=101.0) == 2
    assert claim_connections(engine, "lane", "a", want=3, limit=10, ttl_s=6.0, now=102.0) == 3  # a shrinks
    assert claim_connections(engine, "lane", "b", want=8, limit=10, ttl_s=6.0, now=103.0) == 7
    # a dies: its claim expires and b may take the whole lane
    assert claim_connections(engine, "lane", "b", want=10, limit=10, ttl_s=6.0, now=109.0) == 10
    [view] = budget_views(engine, 109.5)
    assert view.claims == {"b": 10}


@pytest.mark.postgres
def test_concurrent_nodes_never_exceed_the_rate_on_postgresql(postgres_url: str) -> None:
    """Four threads (four nodes' worth of connections) grant slots on one lane
    for 1.5 s of real time: the union of their slots keeps rate x T + burst."""
    from monitor.core.db import make_engine
    from monitor.parts import upgrade_schema

    upgrade_schema(postgres_url)
    engine = make_engine(postgres_url)
    limit = LaneLimit(rate=200.0, burst=5, daily_cap=None)
    sent: list[float] = []
    lock = threading.Lock()
    deadline = time.time() + 1.5

    def node() -> None:
        while time.time() < deadline:
            got = grant_slot(engine, "lane", limit, want=40, now=time.time(), slice_s=0.1)
            if isinstance(got, Slot):
                with lock:
                    sent.extend(got.times)
            else:
                time.sleep(min(got.wait_s, 0.02))

    threads = [threading.Thread(target=node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    for window in (0.1, 0.5, 1.0):
        assert max_in_window(sent, window) <= 200 * window + 5 + 1


def test_shared_rate_hands_out_granted_times_in_order(engine) -> None:
    from monitor.cluster.shared_rate import SharedLaneRate

    clock = [500.0]
    rate = SharedLaneRate(engine, "lane", LaneLimit(rate=10.0, burst=1, daily_cap=None), slice_s=0.5,
                          clock=lambda: clock[0])
    assert rate.try_acquire() > 0 and rate.wants_refill()
    rate.refill()
    assert rate.try_acquire() == 0.0
    assert rate.try_acquire() == pytest.approx(0.1)
    clock[0] += 0.1
    assert rate.try_acquire() == 0.0
    rate.release()  # the rest goes back to the lane
    other = grant_slot(engine, "lane", LaneLimit(rate=10.0, burst=1, daily_cap=None), 1, now=500.1, slice_s=0.5)
    assert isinstance(other, Slot) and other.times[0] == pytest.approx(500.2)


async def test_one_pass_waits_for_a_dead_nodes_lease_to_expire(engine) -> None:
    """`repmon run --once` after a SIGKILLed node: the dead node's lease is
    taken once it expires instead of the job being skipped."""
    from monitor.cluster.member import ClusterMember
    from monitor.cluster.settings import ClusterConfig

    settings = ClusterConfig(heartbeat_s=0.1, lease_ttl_s=0.4)
    assert leases.try_acquire(engine, "imap:box/INBOX", "dead-node", 0.4, now=time.time()) == 1
    member = ClusterMember(engine, settings, enabled=True)
    member.want(["imap:box/INBOX", "leader"])
    assert await member.gather_leases() == []
    assert member.holds("imap:box/INBOX") and member.holds("leader")
    member.leave()
    assert all(row.owner is None for row in leases.list_leases(engine))
