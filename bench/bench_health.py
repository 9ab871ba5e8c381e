"""Health speed: 1,000 IPs x 100 domains assessed over 10 million stored
events, and the time from a signal being stored to the sender stopping the
lane, with a reference measured in the same run.

    .venv/bin/python bench/bench_health.py [--events 10000000] [--ips 1000] [--domains 100] [--trials 10]

SQLite (the embedded default), in a temporary folder. The events are made by
the database itself (INSERT ... SELECT over a recursive counter, indexes
built afterwards), spread over 7 days in arrival order:
- 80 % sender delivery-log rows (delivered / deferred / refused attempts on
  1,000 IPs x 5 destinations, for 1 million queued messages of 100 sending
  domains and 20 recipient domains);
- 20 % ingested events (bounces, complaints and other feedback: DSN
  successes, auto-replies).

Measured:
- roll-up: the incremental consumer reading all of them once (what the daemon
  does a few rows at a time as they arrive), events per second;
- repmon: a full health recompute (every IP, lane and domain over 1 h, 24 h
  and 7 d) from the roll-ups, median of 3, and the peak Python memory it
  allocates (tracemalloc): it depends on the number of subjects, not events;
- reference: the naive way, GROUP BY rescans of the raw tables for the same
  three windows (the SQL alone, no assessment);
- correctness: 7-day counts of 20 lanes from the roll-ups equal a direct count;
- latency: a listing stored (as the blocklist job stores it) while the sender
  (sender.engine.Sender, relay to a local aiosmtpd sink) sends on that IP,
  until the running sender's lane refuses new transactions; `--trials` IPs.
Prints markdown table rows for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import text  # noqa: E402

from monitor.config import parse_config  # noqa: E402
from monitor.core.db import make_engine  # noqa: E402
from monitor.core.dbtypes import utcnow  # noqa: E402
from monitor.health.counts import window_start  # noqa: E402
from monitor.health.rollup import Rollup  # noqa: E402
from monitor.health.service import Wanted  # noqa: E402
from monitor.health.windows import read_windows  # noqa: E402
from monitor.loop import HealthLoop, health_service  # noqa: E402
from monitor.parts import upgrade_schema  # noqa: E402
from monitor.signals.models import DnsblState, SignalEvent  # noqa: E402
from sender.campaign import inject  # noqa: E402
from sender.coordinator import Sender  # noqa: E402
from tests.fixtures.smtp_receivers import free_port  # noqa: E402

SPAN = 7 * 86400
DESTINATIONS = ["google", "microsoft", "yahoo", "apple", "mx:mx.other.example"]
RECIPIENT_DOMAINS = ["gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "yahoo.com", "aol.com",
                     "icloud.com", "me.com"] + [f"r{i}.example" for i in range(12)]


def ip_expr(column: str, n_ips: int) -> str:
    idx = f"(({column} * 7919) % {n_ips})"
    return f"('10.1.' || ({idx} / 256) || '.' || ({idx} % 256))"


def dest_expr(column: str) -> str:
    # a hash independent of the IP's, so every IP sends to every destination
    cases = " ".join(f"WHEN {i} THEN '{d}'" for i, d in enumerate(DESTINATIONS))
    return f"(CASE ((({column} * 2246822519) / 7) % 100) / 20 {cases} END)"


def rdomain_expr(column: str) -> str:
    cases = " ".join(f"WHEN {i} THEN '{d}'" for i, d in enumerate(RECIPIENT_DOMAINS))
    return f"(CASE ({column} % {len(RECIPIENT_DOMAINS)}) {cases} END)"


def generate(path: Path, n_events: int, n_ips: int, n_domains: int, now: float) -> dict[str, int]:
    n_log = int(n_events * 0.8)
    n_ev = n_events - n_log
    n_msgs = min(1_000_000, max(1, n_log // 4))
    start = now - SPAN
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-200000")
    # indexes are built after the rows: one sort instead of millions of B-tree inserts
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND "
                         "tbl_name IN ('sender_message', 'sender_delivery_log', 'events')").fetchall()
    for name, _sql in indexes:
        db.execute(f"DROP INDEX {name}")
    db.execute("BEGIN")
    db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n_msgs})
        INSERT INTO sender_message (id, campaign, pool, recipient, domain, mail_from, message_id, eight_bit, state,
                                    lane, source_ip, attempts, created_at, next_attempt_at, updated_at)
        SELECT i, 'bench', 'default', 'r' || i || '@' || {rdomain_expr('i')}, {rdomain_expr('i')},
               'bounces@d' || (i % {n_domains}) || '.example', 'm' || i, 0, 'delivered', '', NULL, 1,
               {start}, {start}, {start} FROM n""")
    db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n_log - 1})
        INSERT INTO sender_delivery_log (id, message_ref, at, lane, recipient, outcome, attempt)
        SELECT i + 1, ((i * 2654435761) % {n_msgs}) + 1, {start} + (i * {SPAN}.0 / {n_log}),
               {ip_expr('i', n_ips)} || '|' || {dest_expr('i')}, 'x',
               CASE WHEN ((i * 13) % 100) < 85 THEN 'delivered' WHEN ((i * 13) % 100) < 98 THEN 'deferred'
                    ELSE 'bounced' END, 1 FROM n""")
    db.execute(f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n_ev - 1})
        INSERT INTO events (id, kind, occurred_at, stored_at, recipient, recipient_domain, reason, hard_or_soft,
                            feedback_type, is_complaint, sending_ip, sending_domain)
        SELECT i + 1, k.kind, datetime({start} + (i * {SPAN}.0 / {n_ev}), 'unixepoch'),
               datetime({start} + (i * {SPAN}.0 / {n_ev}), 'unixepoch'), 'e' || i || '@' || {rdomain_expr('i')},
               {rdomain_expr('i')}, CASE WHEN k.kind = 'bounce' THEN (CASE WHEN i % 10 < 3 THEN 'userunknown'
                    WHEN i % 10 = 3 THEN 'blocked' ELSE 'mailboxfull' END) END,
               CASE WHEN k.kind = 'bounce' THEN (CASE WHEN i % 10 < 3 THEN 'hard' ELSE 'soft' END) END,
               CASE WHEN k.kind = 'feedback' THEN 'abuse' END, k.kind = 'feedback',
               {ip_expr('(i + 3)', n_ips)}, 'd' || (i % {n_domains}) || '.example'
        FROM (SELECT i, CASE WHEN ((i * 17) % 1000) < 100 THEN 'bounce' WHEN ((i * 17) % 1000) < 102
                                THEN 'feedback' ELSE 'delivery_success' END AS kind FROM n) AS k""")
    db.execute("COMMIT")
    for _name, sql in indexes:
        db.execute(sql)
    db.execute("ANALYZE")
    db.close()
    return {"messages": n_msgs, "delivery_log": n_log, "events": n_ev}


def naive_rescan(engine, now: float) -> float:
    """The same three windows straight from the raw tables."""
    t = time.perf_counter()
    with engine.connect() as conn:
        for window in ("1h", "24h", "7d"):
            since = window_start(window, now)
            conn.execute(text(
                "SELECT l.lane, l.outcome, m.mail_from, COUNT(*) FROM sender_delivery_log l "
                "JOIN sender_message m ON m.id = l.message_ref WHERE l.at >= :s GROUP BY 1, 2, 3"), {"s": since}).all()
            conn.execute(text(
                "SELECT sending_ip, sending_domain, recipient_domain, kind, hard_or_soft, reason, is_complaint, "
                "COUNT(*) FROM events WHERE occurred_at >= :s AND (kind = 'bounce' OR is_complaint = 1) "
                "GROUP BY 1, 2, 3, 4, 5, 6, 7"),
                {"s": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))}).all()
    return time.perf_counter() - t


def check_counts(engine, now: float, n_ips: int) -> int:
    """7-day delivered counts of some lanes: roll-ups against a direct count."""
    checked = 0
    with engine.connect() as conn:
        week = read_windows(conn, now, windows=("7d",))["7d"]
        start = window_start("7d", now)
        for idx in range(0, n_ips, max(1, n_ips // 20)):
            ip = f"10.1.{idx // 256}.{idx % 256}"
            for dest in DESTINATIONS[:1]:
                direct = conn.execute(text("SELECT COUNT(*) FROM sender_delivery_log WHERE lane = :l AND at >= :s "
                                           "AND outcome = 'delivered'"), {"l": f"{ip}|{dest}", "s": start}).scalar()
                rolled = week.get(("ip", ip), {}).get(dest)
                got = rolled.delivered if rolled is not None else 0
                if got != direct:
                    raise SystemExit(f"roll-up mismatch for {ip}|{dest}: {got} != {direct}")
                checked += 1
    return checked


# --- latency ---------------------------------------------------------------------------------------

class Sink:
    """An aiosmtpd relay that accepts everything and notes who sent when."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.arrivals.append((time.time(), session.peer[0] if session.peer else ""))
        return "250 2.0.0 ok"

    def from_ip(self, ip: str) -> list[float]:
        with self.lock:
            return [t for t, peer in self.arrivals if peer == ip]

    def stop(self) -> None:
        self.controller.stop()


def store_listing(engine, ip: str) -> float:
    """What the blocklist job writes when an IP becomes listed; returns the commit time."""
    with engine.begin() as conn:
        now = utcnow()
        conn.execute(DnsblState.__table__.insert(), {  # type: ignore[attr-defined]
            "target": ip, "zone": "zen.spamhaus.org", "target_kind": "ip", "state": "listed", "codes": ["127.0.0.2"],
            "reason": "SBL", "last_error": "", "last_known": "listed", "changed_at": now, "checked_at": now})
        conn.execute(SignalEvent.__table__.insert(), {  # type: ignore[attr-defined]
            "occurred_at": now, "source": "dnsbl", "kind": "listed", "subject": ip, "zone": "zen.spamhaus.org",
            "codes": ["127.0.0.2"], "reason": "SBL", "initial": False, "details": {"current": "listed"}})
    return time.time()


async def latency(url: str, engine, workdir: Path, trials: int, domains: list[str]) -> list[tuple[float, int]]:
    sink = Sink()
    ips = [f"127.0.0.{31 + i}" for i in range(trials)]
    cfg = parse_config({
        "database": {"url": url},
        "sender": {"mail_from": "bounces@d0.example", "relay": {"host": "127.0.0.1", "port": sink.port,
                                                                 "connections": 2, "rate": "50/s"},
                   "ips": [{"address": ip, "ehlo_name": f"s{ip.rsplit('.', 1)[1]}.example", "pool": f"p{ip}"}
                           for ip in ips]},
        "health": {"domains": domains, "interval_s": 0.25},
    })
    template = workdir / "t.eml"
    template.write_bytes(b"From: News <news@d0.example>\r\nTo: {{email}}\r\nSubject: hi\r\n\r\nHello.\r\n")
    # Queued in turns, so every routing batch of the sender holds mail for every IP (the sender
    # stops routing altogether when the only lane of its last batch is paused: reported to its owner).
    for turn in range(30):
        for ip in ips:
            csv = workdir / f"{ip}.csv"
            csv.write_text("email\n" + "\n".join(f"u{turn}.{i}.{ip}@lat.example" for i in range(50)) + "\n")
            inject(engine, cfg.sender, template, csv, campaign=f"lat-{ip}", pool=f"p{ip}")
    loop_engine = make_engine(url)
    health = HealthLoop(cfg, loop_engine)
    health.tick(full=False)
    stopping = threading.Event()

    ticks: list[float] = []

    def run_health() -> None:
        while not stopping.is_set():
            t = time.perf_counter()
            health.tick()
            ticks.append(time.perf_counter() - t)
            stopping.wait(cfg.health.interval_s)

    worker = threading.Thread(target=run_health, name="health", daemon=True)
    worker.start()
    sender = Sender(cfg.sender, engine)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop=stop))
    results: list[tuple[float, int]] = []
    try:
        for ip in ips:
            deadline = time.monotonic() + 30
            while len(sink.from_ip(ip)) < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stored = await asyncio.to_thread(store_listing, engine, ip)
            lane = sender.lanes.get(f"{ip}|relay")
            while lane is None or lane.blocked() is None:
                if time.time() - stored > 10:
                    raise SystemExit(f"lane {ip}|relay did not stop within 10 s")
                await asyncio.sleep(0.002)
                lane = sender.lanes.get(f"{ip}|relay")
            stopped = time.time()
            await asyncio.sleep(0.5)
            late = sum(1 for t in sink.from_ip(ip) if t > stopped + 0.05)  # transactions begun after the stop
            results.append((stopped - stored, late))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        stopping.set()
        worker.join(10)
        if ticks:
            ticks.sort()
            print(f"health ticks: {len(ticks)}, median {statistics.median(ticks) * 1000:.0f} ms, "
                  f"p90 {ticks[int(len(ticks) * 0.9)] * 1000:.0f} ms, max {ticks[-1] * 1000:.0f} ms", file=sys.stderr)
        loop_engine.dispose()
        sink.stop()
    return results


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the policy acting on the generated history is not news here
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--ips", type=int, default=1000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="repmon-bench-health-"))
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the 10-million-event database is gigabytes


def run(args: argparse.Namespace, workdir: Path) -> int:
    path = workdir / "health.db"
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    now = time.time()
    t = time.perf_counter()
    made = generate(path, args.events, args.ips, args.domains, now)
    gen_s = time.perf_counter() - t
    print(f"generated {args.events:,} events ({made}) in {gen_s:.1f} s", file=sys.stderr)
    engine = make_engine(url)
    domains = [f"d{i}.example" for i in range(args.domains)]
    config = parse_config({"database": {"url": url}, "health": {"domains": domains}})
    service = health_service(config, engine)
    rollup = Rollup(engine, mapper=service.mapper, own_ips=service.own_ips)
    t = time.perf_counter()
    rolled = rollup.run(now, max_rows=10 ** 12)
    rollup_s = time.perf_counter() - t
    n_rolled = sum(rolled.rows.values())
    print(f"rolled up {n_rolled:,} rows in {rollup_s:.1f} s", file=sys.stderr)
    checked = check_counts(engine, now, args.ips)

    times = []
    subjects = 0
    for run in range(3):
        if run == 1:
            tracemalloc.start()
        t = time.perf_counter()
        with engine.connect() as conn:
            assessments = service.assess(conn, now, Wanted())
        times.append(time.perf_counter() - t)
        if run == 1:
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        subjects = len(assessments)
        del assessments
    recompute_s = statistics.median(times)
    with engine.connect() as conn:
        buckets = conn.execute(text("SELECT COUNT(*) FROM health_counts")).scalar()
    naive_s = naive_rescan(engine, now)
    print(f"recompute {recompute_s:.2f} s for {subjects} subjects; naive rescan {naive_s:.2f} s", file=sys.stderr)

    lat = asyncio.run(latency(url, engine, workdir, args.trials, domains))
    engine.dispose()
    delays = sorted(d for d, _late in lat)
    late = sum(n for _d, n in lat)
    p50, worst = statistics.median(delays), delays[-1]

    print("| measurement | repmon | reference (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| health recompute, {args.ips:,} IPs x {args.domains} domains ({subjects:,} subjects incl. lanes), "
          f"{args.events:,} stored events, SQLite | {recompute_s:.2f} s from {buckets:,} roll-up rows, "
          f"peak {peak / 2**20:.0f} MB Python memory | naive GROUP BY rescan of the raw tables, 3 windows: "
          f"{naive_s:.2f} s | {naive_s / recompute_s:.1f}x faster | <= 5 s |")
    print(f"| incremental roll-up: the whole history read once ({n_rolled:,} rows; {checked} lanes checked against a "
          f"direct count) | {n_rolled / rollup_s:,.0f} events/s | SQLite writing the same rows in bulk: "
          f"{args.events / gen_s:,.0f} rows/s | {n_rolled / rollup_s / (args.events / gen_s):.2f} | far above "
          f"arrival (10 M/day = 116/s) |")
    print(f"| listing stored -> running sender's lane stopped ({len(delays)} IPs, relay sink, health loop every "
          f"{0.25:g} s) | median {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms, {late} transactions after the stop "
          f"| 1 s budget | {worst:.2f} of budget | <= 1 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
