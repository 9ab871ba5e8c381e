#!/usr/bin/env python3
"""Benchmark: IMAP ingestion end to end, and IDLE latency.

Starts its own Dovecot (tests/fixtures/dovecot.py: generated config, loopback,
a free high port) and uses PostgreSQL on 127.0.0.1:5432 or a throwaway
cluster (tests/fixtures/databases.py).

1. Backlog: N generated feedback messages (bounces, complaints, opt-outs,
   auto-replies, broken reports; tests/fixtures/feedback_messages.py) in a
   fresh mailbox; repmon ingests them end to end (fetch, parse, one
   transaction per batch with events + suppressions, move to the processed
   folder) - once on SQLite, once on PostgreSQL.
   Reference, same run, same backlog: a plain imaplib client fetching every
   message (UID FETCH BODY.PEEK[] in batches) - the raw IMAP transfer rate.
2. IDLE latency: repmon's watcher idles on a mailbox; a message is APPENDed
   and the time until its ledger row is committed is measured, M times (p50,
   p95). Reference: a bare imaplib client in IDLE on the same server, time
   from APPEND to the EXISTS notification.

3. Parse pool: the same backlog ingested once with parsing in a thread of
   the one process (`[ingest] workers = 0`, the single-process rate) and once
   with the parse pool (2 worker processes parse the next batch while the
   daemon commits the current one), on both databases, in the same run;
   target: the pool >= 1.6x the single-process rate.

Targets: >= 500 messages/s on both databases, IDLE p95 <= 2 s, pool >= 1.6x
single process. Prints markdown table rows for the README.

    .venv/bin/python bench/bench_ingest.py                # 10,000 messages, 50 IDLE samples
    .venv/bin/python bench/bench_ingest.py --messages 2000 --idle-samples 20 --skip-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402
from sqlmodel import col  # noqa: E402

from monitor.core.db import make_engine, session_scope  # noqa: E402
from monitor.core.runtime import Runtime  # noqa: E402
from monitor.ingest.imap import FolderWatcher  # noqa: E402
from monitor.ingest.pool import ParsePool  # noqa: E402
from monitor.ingest.settings import ParsingConfig  # noqa: E402
from monitor.parts import upgrade_schema  # noqa: E402
from monitor.storage.models import ProcessedMessage  # noqa: E402
from tests.fixtures.databases import find_or_start_postgres  # noqa: E402
from tests.fixtures.dovecot import DovecotServer  # noqa: E402
from tests.fixtures.feedback_messages import arf_report, mixed_batch  # noqa: E402
from tests.ingest_helpers import mailbox_section, make_config  # noqa: E402

RATE_TARGET = 500.0
POOL_SPEEDUP_TARGET = 1.6
POOL_WORKERS = 2
IDLE_P95_TARGET = 2.0
FETCH_BATCH = 500


def reference_fetch_rate(account, count: int) -> float:
    """Plain imaplib: fetch every message of the INBOX, no parsing, no storage."""
    imap = account.connect()
    try:
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", None, "ALL")
        uids = data[0].split()
        assert len(uids) == count, (len(uids), count)
        start = time.perf_counter()
        fetched = 0
        for i in range(0, len(uids), FETCH_BATCH):
            chunk = uids[i:i + FETCH_BATCH]
            _, parts = imap.uid("FETCH", b"%s:%s" % (chunk[0], chunk[-1]), "(BODY.PEEK[])")
            fetched += sum(1 for p in parts if isinstance(p, tuple))
        elapsed = time.perf_counter() - start
    finally:
        imap.logout()
    assert fetched == count, (fetched, count)
    return count / elapsed


def repmon_ingest_rate(server, db_url: str, messages: list[bytes], workdir: Path, workers: int = POOL_WORKERS) -> float:
    """Messages/s of one pass over the backlog. `workers` = 0: parsed in a thread
    of this process (single process); else the parse pool, started beforehand
    (as the daemon starts it), so process start-up is not in the figure."""
    account = server.add_user()
    account.deliver(messages)
    upgrade_schema(db_url)
    engine = make_engine(db_url)
    config = make_config(db_url, workdir, [mailbox_section(account, batch_size=500, timeout_s=120)])
    pool = ParsePool(ParsingConfig(workers=workers), config.dmarc)
    pool.start()
    try:
        watcher = FolderWatcher(Runtime(engine), config.mailboxes[0], "INBOX", suppression=config.suppression,
                                pool=pool)
        start = time.perf_counter()
        result = asyncio.run(watcher.run_once())
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
        engine.dispose()
    assert result.stored + result.quarantined == len(messages), result
    assert account.count("INBOX") == 0
    return len(messages) / elapsed


def idle_latency(server, db_url: str, samples: int, workdir: Path) -> list[float]:
    account = server.add_user()
    upgrade_schema(db_url)
    engine = make_engine(db_url)
    config = make_config(db_url, workdir, [mailbox_section(account, poll_interval_s=600)])
    latencies: list[float] = []

    def stored(sha: str) -> bool:
        with session_scope(engine) as session:
            found = session.execute(select(col(ProcessedMessage.id)).where(col(ProcessedMessage.content_sha256) == sha))
            return found.first() is not None

    async def main() -> None:
        runtime = Runtime(engine)
        watcher = FolderWatcher(runtime, config.mailboxes[0], "INBOX", suppression=config.suppression)
        service = asyncio.create_task(watcher.serve())
        await asyncio.sleep(1.0)
        appender = account.connect()
        try:
            for i in range(samples):
                raw = arf_report(f"latency{i}@example.org", serial=f"{time.time_ns()}-")
                sha = hashlib.sha256(raw).hexdigest()
                start = time.perf_counter()
                await asyncio.to_thread(appender.append, "INBOX", None, None, raw)
                while not await asyncio.to_thread(stored, sha):
                    if time.perf_counter() - start > 30:
                        raise RuntimeError("message not stored within 30 s")
                    await asyncio.sleep(0.005)
                latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)
        finally:
            appender.logout()
            runtime.stopping.set()
            await asyncio.wait_for(service, 30)

    try:
        asyncio.run(main())
    finally:
        engine.dispose()
    return latencies


def reference_idle_latency(server, samples: int) -> list[float]:
    """A bare imaplib client in IDLE: APPEND -> EXISTS seen."""
    account = server.add_user()
    watcher = account.connect()
    appender = account.connect()
    latencies: list[float] = []
    try:
        watcher.select("INBOX")
        for i in range(samples):
            tag = watcher._new_tag()
            watcher.send(tag + b" IDLE\r\n")
            assert watcher.readline().startswith(b"+")
            seen = threading.Event()

            def wait_exists(seen: threading.Event = seen) -> None:
                while True:
                    line = watcher.readline()
                    if b"EXISTS" in line:
                        seen.set()
                        return

            reader = threading.Thread(target=wait_exists)
            reader.start()
            start = time.perf_counter()
            appender.append("INBOX", None, None, arf_report(f"ref{i}@example.org", serial=f"{i}-"))
            seen.wait(30)
            latencies.append(time.perf_counter() - start)
            reader.join()
            watcher.send(b"DONE\r\n")
            while not watcher.readline().startswith(tag):
                pass
    finally:
        watcher.logout()
        appender.logout()
    return latencies


class _Done(Exception):
    pass


def _fresh(url: str, root: Path, name: str, postgres) -> str:
    """An empty database of the same kind for each measured run."""
    if url.startswith("sqlite"):
        return f"sqlite:///{root / (name + '.db')}"
    return postgres.url(postgres.create_database())


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--idle-samples", type=int, default=50)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--pool-only", action="store_true", help="only the pool vs single-process comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="repmon-bench-ingest-"))
    root.chmod(0o755)  # Dovecot's auth process must reach its passwd file
    server = DovecotServer(root / "dovecot")
    server.root.mkdir()
    server.setup()
    server.start()
    postgres = None
    pg_database = None
    rows: list[str] = []
    ok = True
    try:
        messages = mixed_batch(args.messages, prefix="bench", seed=1, broken_every=500)
        mb = sum(map(len, messages)) / 1e6
        reference_account = server.add_user()
        reference_account.deliver(messages)
        reference = reference_fetch_rate(reference_account, len(messages))
        print(f"reference: imaplib FETCH of {len(messages)} messages ({mb:.1f} MB): {reference:,.0f} msg/s",
              file=sys.stderr)

        databases = [("SQLite", f"sqlite:///{root / 'bench.db'}")]
        if not args.skip_postgres:
            postgres = find_or_start_postgres()
            pg_database = postgres.create_database()
            databases.append(("PostgreSQL", postgres.url(pg_database)))
        for index, (label, url) in enumerate(databases):
            # single process first, then the pool, each on a fresh database
            single_url = url if label == "SQLite" else url
            single = repmon_ingest_rate(server, _fresh(single_url, root, f"single{index}", postgres), messages,
                                        root, workers=0)
            rate = repmon_ingest_rate(server, _fresh(url, root, f"pool{index}", postgres), messages, root)
            met = rate >= RATE_TARGET and rate / single >= POOL_SPEEDUP_TARGET
            ok &= met
            print(f"repmon on {label}: {rate:,.0f} msg/s with the parse pool, {single:,.0f} msg/s single process",
                  file=sys.stderr)
            if not args.pool_only:
                rows.append(f"| IMAP backlog {len(messages):,} msgs, {label} | {rate:,.0f} msg/s | imaplib FETCH only "
                            f"{reference:,.0f} msg/s | {rate / reference:.2f} | >= {RATE_TARGET:.0f} msg/s "
                            f"{'met' if rate >= RATE_TARGET else 'MISSED'} |")
            rows.append(f"| IMAP backlog {len(messages):,} msgs, {label}, parse pool ({POOL_WORKERS} workers) "
                        f"| {rate:,.0f} msg/s | single process (parse in a thread): {single:,.0f} msg/s "
                        f"| {rate / single:.2f}x | >= {POOL_SPEEDUP_TARGET}x "
                        f"{'met' if rate / single >= POOL_SPEEDUP_TARGET else 'MISSED'} |")

        if args.skip_idle or args.pool_only:
            raise _Done
        ref_latency = reference_idle_latency(server, args.idle_samples)
        latency = idle_latency(server, databases[0][1].replace("bench.db", "idle.db"), args.idle_samples, root)
        met = p95(latency) <= IDLE_P95_TARGET
        ok &= met
        rows.append(f"| IDLE: APPEND to stored, {args.idle_samples} msgs, SQLite "
                    f"| p50 {statistics.median(latency) * 1000:.0f} ms, "
                    f"p95 {p95(latency) * 1000:.0f} ms | bare IDLE client sees EXISTS: p95 {p95(ref_latency) * 1000:.0f} ms | "
                    f"{p95(latency) / p95(ref_latency):.1f} | p95 <= {IDLE_P95_TARGET:.0f} s {'met' if met else 'MISSED'} |")
    except _Done:
        pass
    finally:
        server.stop()
        if postgres is not None:
            if pg_database is not None:
                postgres.drop_database(pg_database)
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    print("| benchmark | repmon | reference (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
