"""Message-rate limiting per lane: GCRA (the generic cell rate algorithm).

GCRA keeps one number per lane, the theoretical arrival time (TAT) of the
next message. A message may go at `now` when now >= TAT - burst_window;
sending it moves TAT to max(TAT, now) + interval. Over any window of length
T a lane then sends at most rate*T + burst messages, and a steady stream
runs at exactly `rate`, which the rate-accuracy bench checks from the
receiver's side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def default_burst(rate: float) -> int:
    """One second's worth of messages, at least one."""
    return max(1, math.ceil(rate))


class Gcra:
    __slots__ = ("rate", "burst", "interval", "tolerance", "tat", "clock")

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tat = 0.0
        self.configure(rate, burst)

    def configure(self, rate: float, burst: int | None = None) -> None:
        """Change the rate (a slow directive) keeping the position in time."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else default_burst(rate)
        self.interval = 1.0 / rate
        self.tolerance = self.interval * (self.burst - 1)
        now = self.clock()
        # A lower rate must not inherit credit earned at the higher one.
        self.tat = min(max(self.tat, now), now + self.tolerance + self.interval)

    def wait_time(self, now: float | None = None) -> float:
        """Seconds until one message conforms (0 when it may go now)."""
        now = self.clock() if now is None else now
        return max(0.0, self.tat - self.tolerance - now)

    def try_acquire(self, now: float | None = None) -> float:
        """Take one message's slot when it conforms and return 0, else return
        the seconds to wait (nothing taken)."""
        now = self.clock() if now is None else now
        tat = self.tat if self.tat > now else now
        wait = tat - self.tolerance - now
        if wait > 0:
            return wait
        self.tat = tat + self.interval
        return 0.0
