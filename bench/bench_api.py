"""The per-message suppression check over HTTP: GET /api/v1/check?address=
against a list of 100,000 suppressed addresses (SQLite), with a bounded load
loop on loopback and references measured in the same run.

    .venv/bin/python bench/bench_api.py [--requests 20000] [--concurrency 16] [--suppressed 100000]

The server runs in its own process (as in `repmon run`), the load generator
in this one: `concurrency` keep-alive connections, each sending its share of
`requests` one after the other (half the addresses suppressed, half not).
Measured: requests/s and p50/p99 latency; every answer is checked against the
truth. References, same run and same load loop:
- a bare aiohttp handler answering a constant JSON (no token, no database):
  the ceiling of the HTTP stack;
- the storage check itself (`suppression_admin.check`) called in a loop in
  one thread: the ceiling of the database side.
Prints one markdown table row for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session  # noqa: E402

from monitor.api.data import reader_engine  # noqa: E402
from monitor.core.db import make_engine  # noqa: E402
from monitor.parts import upgrade_schema  # noqa: E402
from monitor.storage import suppression_admin as admin  # noqa: E402
from monitor.storage.models import Suppression  # noqa: E402

TOKEN = "bench-token-0123456789-abcdef"

SERVER = """
import asyncio, sys
from monitor.api.data import ApiData, reader_engine
from monitor.api.server import ApiServer
from monitor.api.settings import ApiConfig
from monitor.config import parse_config
from monitor.core.db import make_engine

async def main(url, port, token):
    engine = make_engine(url)
    settings = ApiConfig(listen=f"127.0.0.1:{port}", token_env="X", max_connections=1000)
    server = ApiServer(settings, ApiData(parse_config({}), engine, reader_engine(url, settings.db_threads)), token)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""

BARE = """
import sys
from aiohttp import web

async def check(request):
    return web.json_response({"suppressed": False, "reason": None})

app = web.Application()
app.router.add_get("/api/v1/check", check)
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (less sensitive to a busy machine than wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, count: int) -> list[str]:
    upgrade_schema(url)
    engine = make_engine(url)
    addresses = [f"user{i}@example{i % 97}.net" for i in range(count)]
    now = admin.utcnow()
    rows = [{"address": a, "domain": a.rpartition("@")[2], "reason": "hard_bounce", "detail": "userunknown",
             "source": "bounce", "first_seen_at": now, "last_seen_at": now, "count": 1} for a in addresses]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Suppression.__table__), rows[start:start + 5000])  # type: ignore[attr-defined]
    engine.dispose()
    return addresses


def start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        raise SystemExit("server did not start")
    time.sleep(0.3)
    return proc


async def load(base: str, queries: list[tuple[str, bool]], concurrency: int, headers: dict[str, str],
               verify: bool) -> tuple[float, list[float]]:
    latencies: list[float] = []
    shares = [queries[i::concurrency] for i in range(concurrency)]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as http:
        async def worker(share: list[tuple[str, bool]]) -> None:
            for address, truth in share:
                t0 = time.perf_counter()
                async with http.get("/api/v1/check", params={"address": address}) as response:
                    body = await response.json()
                latencies.append(time.perf_counter() - t0)
                if verify and (response.status != 200 or body["suppressed"] is not truth):
                    raise SystemExit(f"wrong answer for {address}: {response.status} {body}")

        started = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in shares))
        return time.perf_counter() - started, latencies


def direct(url: str, queries: list[tuple[str, bool]]) -> float:
    engine = reader_engine(url, 1)
    started = time.perf_counter()
    with Session(engine) as session:
        for address, _ in queries:
            admin.check(session, address)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(queries) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--suppressed", type=int, default=100000)
    args = parser.parse_args()
    rng = random.Random(12)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        addresses = seed(url, args.suppressed)
        queries = [(rng.choice(addresses), True) if i % 2 else (f"fresh{i}@example{i % 31}.org", False)
                   for i in range(args.requests)]
        port = free_port()
        server = start(SERVER, url, str(port), TOKEN)
        try:
            asyncio.run(load(f"http://127.0.0.1:{port}", queries[:500], args.concurrency,
                             {"Authorization": f"Bearer {TOKEN}"}, True))  # warm-up
            cpu_before = cpu_seconds(server.pid)
            took, latencies = asyncio.run(load(f"http://127.0.0.1:{port}", queries, args.concurrency,
                                               {"Authorization": f"Bearer {TOKEN}"}, True))
            server_cpu = cpu_seconds(server.pid) - cpu_before
        finally:
            server.terminate()
            server.wait(10)
        bare_port = free_port()
        bare = start(BARE, str(bare_port))
        try:
            asyncio.run(load(f"http://127.0.0.1:{bare_port}", queries[:500], args.concurrency, {}, False))
            cpu_before = cpu_seconds(bare.pid)
            bare_took, _ = asyncio.run(load(f"http://127.0.0.1:{bare_port}", queries, args.concurrency, {}, False))
            bare_cpu = cpu_seconds(bare.pid) - cpu_before
        finally:
            bare.terminate()
            bare.wait(10)
        db_rate = direct(url, queries)
    rate = args.requests / took
    bare_rate = args.requests / bare_took
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(f"repmon /check: {rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"({args.requests} requests, {args.concurrency} connections, {args.suppressed} suppressed)", file=sys.stderr)
    per_request = server_cpu / args.requests * 1e6
    bare_per_request = bare_cpu / args.requests * 1e6
    print(f"server CPU per request: repmon {per_request:.0f} us, bare aiohttp {bare_per_request:.0f} us "
          f"(one core's worth: {1e6 / per_request:,.0f} req/s)", file=sys.stderr)
    print(f"bare aiohttp: {bare_rate:,.0f} req/s; storage check alone: {db_rate:,.0f}/s", file=sys.stderr)
    print(f"| suppression check over HTTP, {args.requests:,} requests x {args.concurrency} connections, "
          f"{args.suppressed:,} suppressed, SQLite (`bench_api.py`) | {rate:,.0f} req/s, p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, server CPU {per_request:.0f} us/request | bare aiohttp handler: {bare_rate:,.0f} req/s, "
          f"{bare_per_request:.0f} us/request; storage check alone: {db_rate:,.0f}/s "
          f"| {rate / bare_rate:.2f}x bare | >= 1,000 req/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
