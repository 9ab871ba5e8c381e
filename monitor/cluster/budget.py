"""A lane's rate, daily cap and connections, held across every node.

Why slots: the rate is one GCRA (see sender/throttle.py) whose state, the
theoretical arrival time, lives in the lane's row. A node does not ask for
each message; it asks for a *slot*: the messages the lane may send in the next
`slice_s` seconds, each with the earliest time it may go. Granting moves the
row's arrival time past the slot, so slots given to different nodes never
overlap and the sum of what all nodes send is the GCRA's own bound: at most
rate x T + burst in any window T, whatever the number of nodes. The cost is one
short transaction per slot per node (at 20/s and 0.5 s slots: one per 10
messages; at 1,000/s: one per 500), not one per message. A node that does not
use all of its slot gives the rest back when nobody was granted after it; a
node that dies loses at most one slot (its messages simply are not sent). A
node that loses its database cannot get a new slot, so it stops sending on
the lane when its slot runs out: it never exceeds the budget.

The daily cap is one count in the same row; connections are claims per
(lane, node) that expire unless renewed, and a claim is granted only within
the lane's limit minus what the other live nodes hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from monitor.cluster.models import LaneBudget, LaneConnectionClaim
from monitor.cluster.rows import ensure_row, needs_row_lock

BUDGETS = LaneBudget.__table__  # type: ignore[attr-defined]
CLAIMS = LaneConnectionClaim.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class Slot:
    """Messages a node may send on a lane: message i not before times[i]."""

    lane: str
    times: list[float]
    end_tat: float  # the lane's arrival time right after this grant
    interval: float
    day: str


@dataclass(frozen=True, slots=True)
class NoSlot:
    """Nothing granted: try again in `wait_s` (infinite: the daily cap is spent)."""

    wait_s: float


@dataclass(frozen=True, slots=True)
class LaneLimit:
    rate: float | None  # messages/s, None: no rate limit
    burst: int
    daily_cap: int | None

    @property
    def interval(self) -> float:
        """Seconds between messages at the rate (0: no rate limit)."""
        return 1.0 / self.rate if self.rate else 0.0

    @property
    def tolerance(self) -> float:
        """How far ahead of its time a message may go: the burst, in seconds."""
        return self.interval * (self.burst - 1)


@dataclass(slots=True)
class BudgetView:
    lane: str
    day: str
    day_count: int
    claims: dict[str, int] = field(default_factory=dict)  # node -> connections


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")


def seconds_to_next_day(now: float) -> float:
    return 86400.0 - (now % 86400.0)


def _locked_row(conn: Connection, lane: str, now: float) -> tuple[float, str, int]:
    ensure_row(conn, BUDGETS, {"lane": lane, "tat": 0.0, "day": utc_day(now), "day_count": 0, "updated_at": now})
    query = select(BUDGETS.c.tat, BUDGETS.c.day, BUDGETS.c.day_count).where(BUDGETS.c.lane == lane)
    if needs_row_lock(conn):
        query = query.with_for_update()
    row = conn.execute(query).one()
    return float(row.tat), str(row.day), int(row.day_count)


def slot_times(tat: float, now: float, limit: LaneLimit, want: int, slice_s: float) -> tuple[list[float], float]:
    """The send times GCRA allows for up to `want` messages within the next
    `slice_s` seconds, and the arrival time after them (pure: the tests and the
    grant share it)."""
    if limit.rate is None:
        return [now] * want, tat
    interval, tolerance = limit.interval, limit.tolerance
    start = max(tat, now)
    fit = math.floor((now + slice_s - (start - tolerance)) / interval + 1e-9) + 1
    count = max(0, min(want, fit))
    times = [max(now, start + i * interval - tolerance) for i in range(count)]
    return times, start + count * interval


def grant_slot(engine: Engine, lane: str, limit: LaneLimit, want: int, now: float, slice_s: float) -> Slot | NoSlot:
    """Grant up to `want` messages of the lane's next `slice_s` seconds."""
    day = utc_day(now)
    with engine.begin() as conn:
        tat, row_day, day_count = _locked_row(conn, lane, now)
        if row_day != day:
            day_count = 0
        if limit.daily_cap is not None:
            want = min(want, limit.daily_cap - day_count)
            if want <= 0:
                return NoSlot(seconds_to_next_day(now))
        times, new_tat = slot_times(tat, now, limit, want, slice_s)
        if not times:
            return NoSlot(max(0.001, max(tat, now) - limit.tolerance - now - slice_s))
        conn.execute(update(BUDGETS).where(BUDGETS.c.lane == lane)
                     .values(tat=new_tat, day=day, day_count=day_count + len(times), updated_at=now))
    return Slot(lane, times, new_tat, limit.interval, day)


def give_back(engine: Engine, slot: Slot, unused: int, now: float) -> None:
    """Return the slot's last `unused` messages: to the daily count always, to
    the rate when no other slot was granted after this one."""
    if unused <= 0:
        return
    with engine.begin() as conn:
        tat, row_day, day_count = _locked_row(conn, slot.lane, now)
        values: dict[str, float | int] = {"updated_at": now}
        if row_day == slot.day:
            values["day_count"] = max(0, day_count - unused)
        if slot.interval and abs(tat - slot.end_tat) < 1e-6:
            values["tat"] = tat - unused * slot.interval
        conn.execute(update(BUDGETS).where(BUDGETS.c.lane == slot.lane).values(**values))


def claim_connections(engine: Engine, lane: str, node_id: str, want: int, limit: int, ttl_s: float,
                      now: float) -> int:
    """Hold up to `want` of the lane's `limit` connections (what live nodes do
    not hold already) until now + ttl_s; renewing is claiming again."""
    with engine.begin() as conn:
        _locked_row(conn, lane, now)  # serialises claims on the lane
        others = conn.execute(
            select(func.coalesce(func.sum(CLAIMS.c.connections), 0))
            .where(CLAIMS.c.lane == lane, CLAIMS.c.node_id != node_id, CLAIMS.c.expires_at >= now)
        ).scalar_one()
        granted = max(0, min(want, limit - int(others)))
        ensure_row(conn, CLAIMS, {"lane": lane, "node_id": node_id, "connections": 0, "expires_at": 0.0})
        conn.execute(update(CLAIMS).where(CLAIMS.c.lane == lane, CLAIMS.c.node_id == node_id)
                     .values(connections=granted, expires_at=now + ttl_s))
    return granted


def release_connections(engine: Engine, node_id: str, lane: str | None = None) -> None:
    with engine.begin() as conn:
        query = delete(CLAIMS).where(CLAIMS.c.node_id == node_id)
        if lane is not None:
            query = query.where(CLAIMS.c.lane == lane)
        conn.execute(query)


def budget_views(engine: Engine, now: float) -> list[BudgetView]:
    """Each lane's daily count and the live connection claims, for `repmon nodes`."""
    with engine.connect() as conn:
        views = {r.lane: BudgetView(r.lane, r.day, int(r.day_count))
                 for r in conn.execute(select(BUDGETS).order_by(BUDGETS.c.lane))}
        for claim in conn.execute(select(CLAIMS).where(CLAIMS.c.expires_at >= now)):
            view = views.setdefault(claim.lane, BudgetView(claim.lane, utc_day(now), 0))
            view.claims[claim.node_id] = int(claim.connections)
    return sorted(views.values(), key=lambda v: v.lane)
