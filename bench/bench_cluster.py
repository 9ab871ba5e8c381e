"""Several `repmon run` nodes on one PostgreSQL database, printed as markdown
table rows for the README.

    .venv/bin/python bench/bench_cluster.py [--rate-messages 600] [--throughput-messages 10000]

1. Rate accuracy: one relay lane limited to 20/s, burst 5; 1, 2 and 4 nodes
   (real `repmon run` processes, process start included) deliver the same
   queued campaign to an aiosmtpd receiver that records arrival times. The
   steady rate seen by the receiver (after the burst) against the configured
   20/s, and the most messages in any 10 s window against rate x 10 s + burst
   (+ rate x 0.2 s: a granted time may be used up to 0.2 s late).
2. Throughput: the same lane unlimited, 2 KB messages to Postfix's smtp-sink;
   2 nodes against 1 node, each measured from the nodes' start to the last
   message arriving. Reference in the same run: the single node.

Needs PostgreSQL (the running server or a throwaway cluster) and postfix.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from monitor.core.db import make_engine  # noqa: E402
from tests.fixtures._cli import repmon_command  # noqa: E402
from tests.fixtures._configs import relay_sender, write_config  # noqa: E402
from tests.fixtures._rates import max_in_window  # noqa: E402
from tests.fixtures.databases import find_or_start_postgres  # noqa: E402
from tests.fixtures.smtp_receivers import ScriptedSmtp, SmtpSink  # noqa: E402

RATE = 20.0
BURST = 5




def queue(folder: Path, url: str, port: int, count: int, rate: str | None) -> Path:
    settings = relay_sender(url, port)
    relay = settings["sender"]["relay"]
    relay.update({"connections": 8} if rate is None else {"rate": rate, "burst": BURST, "connections": 4})
    settings["cluster"] = {"heartbeat_s": 0.5, "lease_ttl_s": 2.0}
    config = write_config(folder, settings)
    template = folder / "news.eml"
    template.write_text("From: News <news@example.com>\nSubject: Hello\n\n" + "Our spring collection.\n" * 90)
    recipients = folder / "list.csv"
    recipients.write_text("email\n" + "".join(f"user{i}@example.org\n" for i in range(count)))
    done = subprocess.run([*repmon_command(), "send", "--config", str(config), "--template", str(template),
                           "--recipients", str(recipients), "--json"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or json.loads(done.stdout)["queued"] != count:
        raise SystemExit(f"queueing failed: {done.stderr[-2000:]}")
    return config


def run_nodes(config: Path, count: int, arrived: Callable[[], int], total: int, timeout: float) -> float:
    """Start `count` nodes; seconds from their start until `total` messages arrived."""
    started = time.monotonic()
    procs = [subprocess.Popen([*repmon_command(), "run", "--config", str(config)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        while arrived() < total:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"timed out: {arrived()} of {total} arrived")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def rate_accuracy(server_pg: Any, messages: int) -> list[str]:
    rows = []
    for nodes in (1, 2, 4):
        name = server_pg.create_database()
        try:
            with tempfile.TemporaryDirectory() as tmp, ScriptedSmtp() as receiver:
                config = queue(Path(tmp), server_pg.url(name), receiver.port, messages, f"{RATE:g}/s")
                run_nodes(config, nodes, receiver.count, messages, timeout=messages / RATE * 3 + 60)
                times = sorted(r.at for r in receiver.received)
        finally:
            server_pg.drop_database(name)
        steady = times[BURST:]
        rate = (len(steady) - 1) / (steady[-1] - steady[0])
        worst = max_in_window(times, 10.0)
        rows.append(f"| lane rate, {nodes} node(s), 20/s lane, {messages} messages (bench_cluster.py) | "
                    f"{rate:.2f}/s ({(rate / RATE - 1) * 100:+.1f}%); most in 10 s: {worst} "
                    f"(bound {RATE * 10.2 + BURST:.0f}) | configured 20/s | |")
    return rows


def throughput(server_pg: Any, messages: int) -> list[str]:
    seconds = {}
    for nodes in (1, 2):
        name = server_pg.create_database()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                sink = SmtpSink(dump=False)
                try:
                    config = queue(Path(tmp), server_pg.url(name), sink.port, messages, None)
                    delivered = delivered_counter(server_pg.url(name))
                    seconds[nodes] = run_nodes(config, nodes, delivered, messages, timeout=600)
                finally:
                    sink.stop()
        finally:
            server_pg.drop_database(name)
    one, two = messages / seconds[1], messages / seconds[2]
    return [f"| throughput, unlimited lane to smtp-sink, {messages} x 2 KB, PostgreSQL queue, process start "
            f"included (bench_cluster.py) | 2 nodes {two:,.0f} msg/s | 1 node {one:,.0f} msg/s | {two / one:.2f}x |"]


def delivered_counter(url: str) -> Callable[[], int]:
    engine = make_engine(url)

    def count() -> int:
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM sender_message WHERE state = 'delivered'"))
                           .scalar() or 0)
        except Exception:
            return 0
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-messages", type=int, default=600)
    parser.add_argument("--throughput-messages", type=int, default=10000)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    server_pg = find_or_start_postgres()
    try:
        for row in [*rate_accuracy(server_pg, args.rate_messages), *throughput(server_pg, args.throughput_messages)]:
            print(row, flush=True)
    finally:
        server_pg.stop()


if __name__ == "__main__":
    main()
