"""One hardened setup for every HTTP server repmon runs (metrics, one-click
unsubscribe, the API and operator page), against slow, idle and greedy
clients and against log floods:

- a connection cap: past `max_connections` open connections a new one gets
  a 503 and is closed at once (it never reaches aiohttp), so 300 idle
  sockets cannot exhaust file descriptors;
- a header timeout: a connection must deliver a complete request within
  `header_timeout_s` of opening or of its previous response. aiohttp's
  keep-alive timer is armed when the connection opens and closes a
  connection still waiting for a complete request, so idle connections and
  slowloris clients dribbling header bytes are cut off;
- body reads bounded in size (the application's client_max_size: build it
  with `limits.max_body_bytes`) and time (`read_body` / `read_form`,
  `body_timeout_s`); header line, field and count limits from aiohttp;
- log rate limiting: aiohttp logs a traceback for every malformed request
  ("Error handling request"), about 2 KB each, so a client sending garbage
  in a loop wrote 37 MB of log in 25 s. Each server logger gets at most
  `log_burst` records per `log_window_s`; the rest are counted and
  reported once per window.

Ground floor: imports no part.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("repmon.http")

# Loggers aiohttp's server side writes to (tracebacks of bad requests, access lines).
SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal", "repmon.http")

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 37\r\n"
         b"Connection: close\r\n\r\n{\"error\": \"too many open connections\"}")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout_s: float = 10.0  # a complete request within this of opening / of the previous answer
    body_timeout_s: float = 10.0  # a whole request body within this (read_body)
    max_connections: int = 100  # open connections; past it: 503 and close
    max_body_bytes: int = 64 * 1024
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    backlog: int = 128
    log_burst: int = 20  # log records per logger and window; the rest are counted
    log_window_s: float = 60.0


class RateLimitFilter(logging.Filter):
    """At most `burst` records per `window_s` pass; the others are dropped and
    counted, and the next record after the window says how many were."""

    def __init__(self, burst: int = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._passed = 0
        self.suppressed = 0  # in the current window
        self.suppressed_total = 0

    def reset(self) -> None:
        """Start a new window now (tests)."""
        with self._lock:
            self._window_start, self._passed, self.suppressed = self.clock(), 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.window_s:
                dropped = self.suppressed
                self._window_start, self._passed, self.suppressed = now, 0, 0
                if dropped:
                    record.msg = f"{record.msg} [{dropped} more log records of {record.name} were dropped " \
                                 f"in the previous {self.window_s:.0f} s: rate limit]"
            if self._passed < self.burst:
                self._passed += 1
                return True
            self.suppressed += 1
            self.suppressed_total += 1
            return False


_installed: dict[str, RateLimitFilter] = {}
_install_lock = threading.Lock()


def limit_server_logs(burst: int = 20, window_s: float = 60.0) -> dict[str, RateLimitFilter]:
    """Put a RateLimitFilter on each server logger (once; a later call with
    stricter settings tightens the installed filters, never loosens them)."""
    with _install_lock:
        for name in SERVER_LOGGERS:
            limiter = _installed.get(name)
            if limiter is None:
                limiter = _installed[name] = RateLimitFilter(burst, window_s)
                logging.getLogger(name).addFilter(limiter)
            else:
                limiter.burst = min(limiter.burst, burst)
                limiter.window_s = max(limiter.window_s, window_s)
        return dict(_installed)


class _Refuse(asyncio.Protocol):
    """What a connection over the cap talks to: one 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class BodyTimeout(web.HTTPRequestTimeout):
    pass


async def read_body(request: web.Request, limits: HttpLimits) -> bytes:
    """The request body, or 408 when it does not arrive within body_timeout_s
    (413 from aiohttp past client_max_size)."""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout(text="request body too slow\n") from None


async def read_form(request: web.Request, limits: HttpLimits) -> Any:
    """request.post() within body_timeout_s (408 past it)."""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.post()
    except TimeoutError:
        raise BodyTimeout(text="request body too slow\n") from None


class HardenedServer:
    """An aiohttp application served with the limits above. `start()` binds
    (port 0: any free port, then `port` says which); `stop()` closes."""

    def __init__(self, app: web.Application, host: str, port: int, limits: HttpLimits | None = None,
                 name: str = "http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.name = name
        self.refused = 0
        self._pending = 0  # connections accepted whose handler is not registered yet
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._last_refusal_log = -float("inf")

    @property
    def connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        limits = self.limits
        limit_server_logs(limits.log_burst, limits.log_window_s)
        runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=limits.header_timeout_s,
                               max_line_size=limits.max_line_size, max_field_size=limits.max_field_size,
                               max_headers=limits.max_headers, lingering_time=2.0, handler_cancellation=True)
        await runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._factory(runner), self.host, self.port,
                                                    reuse_address=True, backlog=limits.backlog)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
            break

    def _factory(self, runner: web.AppRunner) -> Callable[[], asyncio.BaseProtocol]:
        server = runner.server
        assert server is not None
        cap = self.limits.max_connections
        loop = asyncio.get_running_loop()

        def settle() -> None:
            self._pending -= 1

        def make() -> asyncio.BaseProtocol:
            if len(server.connections) + self._pending >= cap:
                self.refused += 1
                now = loop.time()
                if now - self._last_refusal_log >= self.limits.log_window_s:
                    self._last_refusal_log = now
                    log.warning("%s server: %d open connections, the cap: new ones get 503 (%d refused so far)",
                                self.name, cap, self.refused)
                return _Refuse()
            self._pending += 1
            # the transport schedules connection_made (which registers the
            # handler) right after this returns: settle after that
            loop.call_soon(loop.call_soon, settle)
            return server()

        return make

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
