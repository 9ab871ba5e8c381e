"""One node's side of a shared lane budget: the granted send times it holds.

The sender asks `try_acquire()` before each message exactly as it asks its
local GCRA (sender/throttle.py): 0 means go now, a positive number is the
seconds to wait. Slots are fetched from the database (monitor/cluster/budget.py)
by `refill()`, which the sender runs in a worker thread whenever `wants_refill()`
says the held times run low, so the next slot is there before the current one
ends and no message waits for the database.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.engine import Engine

from monitor.cluster.budget import LaneLimit, NoSlot, Slot, give_back, grant_slot

# Wait this long after a failed or empty grant before asking again (the
# database may be gone; asking in a tight loop would not help it come back).
MAX_RETRY_S = 1.0
# A granted time this far in the past is dropped, not used late: a node that
# was paused or stalled must not send its old slot on top of the others' new
# ones. (Sending up to this late widens a window's bound by rate x 0.2 s.)
STALE_AFTER_S = 0.2


class SharedLaneRate:
    def __init__(self, engine: Engine, lane: str, limit: LaneLimit, slice_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.lane = lane
        self.limit = limit
        self.slice_s = slice_s
        self.clock = clock
        self.times: deque[float] = deque()
        self.slot: Slot | None = None
        self.retry_at = 0.0
        self.refilling = False
        self.granted = 0
        self.grants = 0

    def slot_size(self) -> int:
        if self.limit.rate is None:
            return 1000
        return max(1, int(self.limit.rate * self.slice_s) + self.limit.burst)

    def try_acquire(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        while self.times and self.times[0] < now - STALE_AFTER_S:
            self.times.popleft()
        if self.times:
            first = self.times[0]
            if first <= now:
                self.times.popleft()
                return 0.0
            return first - now
        return max(0.01, self.retry_at - now)

    def wants_refill(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        if self.refilling or now < self.retry_at:
            return False
        return len(self.times) <= max(1, self.slot_size() // 4)

    def refill(self, want: int | None = None) -> None:
        """Ask the database for the next slot (blocking: run it in a thread)."""
        self.refilling = True
        try:
            now = self.clock()
            got = grant_slot(self.engine, self.lane, self.limit, want or self.slot_size(), now, self.slice_s)
            if isinstance(got, NoSlot):
                self.retry_at = now + min(MAX_RETRY_S, got.wait_s)
                return
            self.slot = got
            self.times.extend(got.times)
            self.granted += len(got.times)
            self.grants += 1
        except Exception:
            self.retry_at = self.clock() + MAX_RETRY_S
            raise
        finally:
            self.refilling = False

    def failed(self, now: float | None = None) -> None:
        """A refill raised (database unreachable): wait before the next try."""
        self.retry_at = (self.clock() if now is None else now) + MAX_RETRY_S

    def release(self) -> None:
        """Give back what this node holds and will not send (a pause, a new
        rate, shutdown). Blocking: run it in a thread."""
        unused = len(self.times)
        self.times.clear()
        if self.slot is not None and unused:
            give_back(self.engine, self.slot, unused, self.clock())
        self.slot = None

    def reconfigure(self, limit: LaneLimit) -> bool:
        """A new rate or cap; True when held times must be given back (release())."""
        if limit == self.limit:
            return False
        self.limit = limit
        return bool(self.times)
