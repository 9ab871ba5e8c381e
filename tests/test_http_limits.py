"""Every HTTP server repmon runs (metrics, one-click unsubscribe, the API and
operator page: all on monitor/core/http.py; test_api_limits.py has more on the
API's body limits) against
slow, idle and greedy clients, with bounded loops on loopback: idle and
trickling connections are cut at the header timeout, past the connection cap
a new connection gets a 503 (so 300 sockets cannot exhaust file
descriptors), slow bodies time out, and a client sending garbage in a loop
cannot flood the log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.registry import CollectorRegistry

from monitor.core.http import HardenedServer, HttpLimits, RateLimitFilter, limit_server_logs
from monitor.metrics.server import MetricsServer
from sender.settings import UnsubscribeConfig
from sender.unsubscribe import serve, token_maker
from tests.fixtures._api import AUTH, api_server
from tests.fixtures._slow_clients import closed_within, dribble_headers

TEST_LIMITS = HttpLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=20, max_body_bytes=4096,
                         log_burst=5, log_window_s=60.0)


@dataclass
class Target:
    host: str
    port: int
    path: str  # a GET that answers 200
    server: HardenedServer
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@asynccontextmanager
async def metrics_target(limits: HttpLimits) -> AsyncIterator[Target]:
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, limits=limits)
    await server.start()
    try:
        assert server._server is not None
        yield Target("127.0.0.1", server.port, "/metrics", server._server)
    finally:
        await server.stop()


@asynccontextmanager
async def unsubscribe_target(limits: HttpLimits, engine) -> AsyncIterator[Target]:
    config = UnsubscribeConfig(url="https://unsub.example.com/u", listen="127.0.0.1:0", secret="k3y")
    token = token_maker(config).make("bob@example.org", "spring")
    stop = asyncio.Event()
    started: asyncio.Future[HardenedServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(engine, config, stop, limits=limits, started=started))
    server = await asyncio.wait_for(started, 10)
    try:
        yield Target("127.0.0.1", server.port, f"/u/{token}", server)
    finally:
        stop.set()
        await task


@asynccontextmanager
async def api_target(limits: HttpLimits, tmp_path: Path) -> AsyncIterator[Target]:
    async with api_server(tmp_path, header_timeout_s=limits.header_timeout_s,
                          max_connections=limits.max_connections) as api:
        assert api.server._server is not None
        yield Target(api.server.host, api.server.port, "/api/v1/check?address=x@example.net", api.server._server,
                     dict(AUTH))


@pytest.fixture(params=["metrics", "unsubscribe", "api"])
def target(request, sqlite_engine, tmp_path):
    def open_target(limits: HttpLimits = TEST_LIMITS):
        if request.param == "metrics":
            return metrics_target(limits)
        if request.param == "api":
            return api_target(limits, tmp_path)
        return unsubscribe_target(limits, sqlite_engine)
    return open_target


async def _dribble(t: Target, wanted_s: float) -> float:
    request_line = f"GET {t.path} HTTP/1.1\r\nHost: {t.host}\r\n".encode()
    return await dribble_headers(t.host, t.port, request_line, wanted_s)


async def _get_ok(t: Target) -> None:
    async with aiohttp.ClientSession(headers=t.headers) as http, http.get(t.url) as answer:
        assert answer.status == 200


async def test_idle_connection_is_closed_at_the_header_timeout(target):
    async with target() as t:
        reader, writer = await asyncio.open_connection(t.host, t.port)
        started = time.monotonic()
        assert await closed_within(reader, 5.0)
        assert time.monotonic() - started < 3.0  # 1 s header timeout (+ timer granularity), not minutes
        writer.close()


async def test_trickling_headers_are_cut_and_others_still_served(target):
    async with target() as t:
        slow = [asyncio.create_task(_dribble(t, 6.0)) for _ in range(10)]
        await asyncio.sleep(0.3)
        for _ in range(3):
            await _get_ok(t)
            await asyncio.sleep(0.1)
        lasted = await asyncio.gather(*slow)
    assert max(lasted) < 3.0, lasted


async def test_connection_cap_answers_503_and_recovers(target):
    async with target() as t:
        held = [await asyncio.open_connection(t.host, t.port) for _ in range(TEST_LIMITS.max_connections)]
        await asyncio.sleep(0.1)
        extra = [await asyncio.open_connection(t.host, t.port) for _ in range(280)]  # 300 sockets in all
        for reader, _ in extra:
            async with asyncio.timeout(3):
                answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 503") and b"too many open connections" in answer
        assert t.server.refused == 280
        assert t.server.connections <= TEST_LIMITS.max_connections
        for _, writer in held + extra:
            writer.close()
        await asyncio.sleep(0.2)
        await _get_ok(t)


async def test_slow_body_times_out(sqlite_engine):
    """The unsubscribe POST is the one body any of these servers reads."""
    limits = HttpLimits(header_timeout_s=5.0, body_timeout_s=1.0, max_connections=20, max_body_bytes=4096)
    async with unsubscribe_target(limits, sqlite_engine) as t:
        reader, writer = await asyncio.open_connection(t.host, t.port)
        writer.write(f"POST {t.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 100\r\n\r\nList-Unsub".encode())
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert b" 408 " in status_line and time.monotonic() - started < 3.0
        writer.close()


async def test_garbage_in_a_loop_does_not_flood_the_log(target, caplog):
    caplog.set_level(logging.DEBUG)
    async with target() as t:
        for limiter in limit_server_logs(TEST_LIMITS.log_burst, TEST_LIMITS.log_window_s).values():
            limiter.reset()  # a fresh window: earlier tests' servers logged through the same loggers
        for _ in range(100):
            reader, writer = await asyncio.open_connection(t.host, t.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBroken header line without colon\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(3):
                await reader.read()
            writer.close()
    server_records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    # one traceback per bad request was the flood; now at most the burst (per logger) gets through
    assert len(server_records) <= 5 * 2, len(server_records)
    assert sum(len(r.getMessage()) + len(r.exc_text or "") for r in caplog.records) < 100_000


def test_rate_limit_filter_counts_and_reports_what_it_dropped():
    now = [0.0]
    limiter = RateLimitFilter(burst=3, window_s=10.0, clock=lambda: now[0])
    records = [logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "bad request", None, None)
               for _ in range(10)]
    assert [limiter.filter(r) for r in records] == [True] * 3 + [False] * 7
    now[0] = 11.0
    later = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "bad request", None, None)
    assert limiter.filter(later) and "7 more log records" in later.getMessage()
