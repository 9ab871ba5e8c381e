"""How the parts of repmon plug their jobs into `repmon run`.

Each part has a provider, a function `provide(section, runtime) -> list[JobSpec]`
that is handed its own settings section. The daemon (monitor/daemon.py) calls the
providers listed in monitor/parts.py, schedules interval jobs with APScheduler
and supervises services (long-running tasks, e.g. an IMAP IDLE loop) by
restarting them with back-off when they fail.

`repmon run --once` calls every job's `run` exactly once instead, so a job must
be able to do one complete pass when asked (a service's `run` is its one pass).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of the daemon.

    name: unique, shown in logs ("ingest:imap:bounces@mx1/INBOX").
    run: one complete pass (what `--once` calls, and what the interval trigger calls).
    interval_s: run `run` every interval_s seconds (first run at start-up).
    service: a long-running coroutine function used instead of the interval
        schedule in the daemon; it returns only when asked to stop (runtime.stopping)
        and is restarted with back-off when it raises.
    A job has an interval or a service (or both: then the daemon uses the service).
    lease: the name of the cluster lease a node must hold to run the job (one
        owner across nodes: a mailbox, a polling cycle, the leader's loop); None:
        every node runs it (the sender). With one node every lease is held.
    """

    name: str
    run: Callable[[], Coroutine[Any, Any, Any]]
    interval_s: float | None = None
    service: Callable[[], Coroutine[Any, Any, Any]] | None = None
    lease: str | None = None

    def __post_init__(self) -> None:
        if self.interval_s is None and self.service is None:
            raise ValueError(f"job {self.name}: give an interval or a service")
        if self.interval_s is not None and self.interval_s <= 0:
            raise ValueError(f"job {self.name}: interval must be positive")


@dataclass(slots=True)
class Runtime:
    """What a running repmon shares with its jobs."""

    engine: Engine
    once: bool = False  # `repmon run --once`
    progress: bool = False  # show progress bars (stderr)
    logs_as_json: bool = False  # [logging] json: progress lines as JSON too
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Anything parts want to share between their jobs (e.g. a metrics registry).
    shared: dict[str, Any] = field(default_factory=dict)
    # Whether this node holds a cluster lease now (set by the daemon from the
    # cluster membership; one node alone holds them all).
    holds: Callable[[str], bool] = field(default=lambda _name: True)
    node_id: str = "local"

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


class Backoff:
    """Exponential back-off with a cap: 1, 2, 4, ... x initial, reset on success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
