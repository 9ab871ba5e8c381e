"""Sender benchmarks, printed as markdown table rows for the README.

    .venv/bin/python bench/bench_sender.py [--messages 20000] [--rate-seconds 60] [--skip-rate]

1. Throughput: 2 KB messages to one local Postfix smtp-sink through
   [sender.relay], rates unlimited, queue on SQLite. "end to end" is from the
   start of injection (personalise + enqueue) to the last message marked
   delivered in the queue; "delivery" is the sender alone on a full queue.
   Without and with DKIM signing (RSA-2048; Ed25519 too). References measured
   in the same run against the same sink: Postfix's C `smtp-source` and a
   naive aiosmtplib loop (10 reused connections, one sendmail per message,
   no queue).
2. Rate accuracy: 20 lanes (20 source IPs 127.0.0.2-21 through the relay),
   each limited to 10 messages/s, for --rate-seconds, measured from the
   receiver's side (arrival times per source IP at an aiosmtpd server): each
   lane's rate, and the most messages seen in any window compared with what
   rate x window + burst allows.
3. Pause latency in the same process: a lane sending at 200/s is paused with
   Sender.set_directive; the time from the call to the last MAIL FROM the
   receiver sees from that IP. And through the database (another process's
   `repmon lanes pause`): from the commit to the lane reporting blocked.

Needs: postfix (smtp-sink, smtp-source) and the dev extras (aiosmtpd).
Numbers on a shared 2-core machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from monitor.config import parse_config  # noqa: E402
from monitor.core.db import make_engine  # noqa: E402
from monitor.parts import upgrade_schema  # noqa: E402
from sender import control  # noqa: E402
from sender.campaign import inject  # noqa: E402
from sender.coordinator import Sender  # noqa: E402
from tests.fixtures.smtp_receivers import SMTP_SOURCE, ScriptedSmtp, SmtpSink  # noqa: E402

PARAGRAPH = ("Our spring collection is here: new colours, lighter fabrics and the same care for detail. "
             "Read the story behind each piece on our site, and tell us what you think.\n")


def write_campaign(folder: Path, count: int, lanes: int = 1) -> tuple[Path, Path]:
    template = folder / "news.eml"
    body = PARAGRAPH * 11  # with the headers: about 2 KB on the wire
    template.write_text("From: Example News <news@example.com>\nSubject: Hello {{name}}, spring is here\n"
                        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
                        f"Dear {{{{name}}}},\n\n{body}\nUnsubscribe: https://example.com/u\n")
    recipients = folder / "list.csv"
    with recipients.open("w") as fh:
        fh.write("email,name\n")
        for i in range(count):
            fh.write(f"reader{i}@example{i % 50}.org,Reader {i}\n")
    return template, recipients


def config_for(folder: Path, port: int, *, dkim: str | None = None, ips: int = 1, rate: str | None = None,
               connections: int = 20):
    sender: dict = {
        "mail_from": "bounces@bounce.example.com",
        "relay": {"host": "127.0.0.1", "port": port, "connections": connections, **({"rate": rate} if rate else {})},
        "ips": [{"address": f"127.0.0.{2 + i}", "ehlo_name": f"mta{i}.example.com"} for i in range(ips)],
    }
    if dkim:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if dkim == "rsa" \
            else ed25519.Ed25519PrivateKey.generate()
        path = folder / f"dkim-{dkim}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        sender["dkim"] = [{"domain": "example.com", "selector": "s1", "key_file": str(path),
                           "algorithm": "rsa-sha256" if dkim == "rsa" else "ed25519-sha256"}]
    return parse_config({"database": {"url": f"sqlite:///{folder / 'queue.db'}"}, "sender": sender}, base_dir=folder)


def bench_repmon(count: int, dkim: str | None) -> tuple[float, float]:
    """(end to end, delivery only) in messages/s. End to end is what `repmon
    send --wait` does: personalise and enqueue the campaign, then deliver
    until the queue is empty; timed from the start of injection to the last
    message marked delivered. Delivery only: the sender alone on the full queue."""
    folder = Path(tempfile.mkdtemp(prefix="repmon-bench-"))
    try:
        with SmtpSink(dump=False) as sink:
            config = config_for(folder, sink.port, dkim=dkim)
            engine = make_engine(config.database_url)
            upgrade_schema(engine)
            template, recipients = write_campaign(folder, count)
            started = time.perf_counter()
            result = inject(engine, config.sender, template, recipients, campaign="bench", pool="default")
            injected = time.perf_counter()
            stats = asyncio.run(Sender(config.sender, engine).run(until_idle=True))
            done = time.perf_counter()
            engine.dispose()
        assert result.queued == count and stats.delivered == count, (result, stats)
        return count / (done - started), count / (done - injected)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_smtp_source(count: int) -> float:
    with SmtpSink(dump=False) as sink:
        started = time.perf_counter()
        subprocess.run([SMTP_SOURCE, "-d", "-s", "20", "-l", "2048", "-m", str(count), "-f", "bounces@example.com",
                        "-t", "reader@example.org", f"{sink.host}:{sink.port}"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        return count / (time.perf_counter() - started)


def bench_naive_aiosmtplib(count: int, connections: int) -> float:
    message = (b"From: news@example.com\r\nTo: reader@example.org\r\nSubject: naive\r\n\r\n"
               + (PARAGRAPH * 11).replace("\n", "\r\n").encode())

    async def worker(port: int, n: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for i in range(n):
            await client.sendmail("bounces@example.com", [f"reader{i}@example.org"], message)
        await client.quit()

    with SmtpSink(dump=False) as sink:
        started = time.perf_counter()
        per = count // connections

        async def main() -> None:
            await asyncio.gather(*(worker(sink.port, per) for _ in range(connections)))

        asyncio.run(main())
        return per * connections / (time.perf_counter() - started)


def bench_rate_accuracy(seconds: float) -> list[str]:
    lanes, rate, burst = 20, 10.0, 10
    folder = Path(tempfile.mkdtemp(prefix="repmon-bench-rate-"))
    server = ScriptedSmtp()
    try:
        config = config_for(folder, server.port, ips=lanes, rate=f"{rate:g}/s", connections=2)
        engine = make_engine(config.database_url)
        upgrade_schema(engine)
        per_lane = int(rate * (seconds + 10))
        template, recipients = write_campaign(folder, per_lane * lanes)
        inject(engine, config.sender, template, recipients, campaign="rate", pool="default")

        async def run() -> None:
            stop = asyncio.Event()
            sender = Sender(config.sender, engine)
            task = asyncio.create_task(sender.run(stop=stop))
            await asyncio.sleep(seconds + 3)
            stop.set()
            await task

        asyncio.run(run())
        engine.dispose()
        with server.lock:
            times: dict[str, list[float]] = {}
            for received in server.received:
                times.setdefault(received.peer, []).append(received.at)
        worst_rate_error = 0.0
        worst_excess = -1e9
        for _peer, ts in times.items():
            ts.sort()
            start = ts[0] + 1.0  # the steady state: after the first second's burst
            window = [t for t in ts if start <= t < start + seconds]
            measured = len(window) / seconds
            worst_rate_error = max(worst_rate_error, abs(measured - rate) / rate)
            total_span = (ts[-1] - ts[0]) or 1.0
            worst_rate_error = max(worst_rate_error, abs((len(ts) - burst) / total_span - rate) / rate)
            for span in (0.1, 0.5, 1.0, 5.0):
                j = 0
                for i in range(len(ts)):
                    while ts[i] - ts[j] > span:
                        j += 1
                    allowed = rate * span + burst
                    worst_excess = max(worst_excess, (i - j + 1) - allowed)
        ok = worst_rate_error <= 0.03 and worst_excess <= 0
        return [f"| rate accuracy: {len(times)} lanes x {rate:g}/s for {seconds:g} s (receiver side) | "
                f"worst lane off by {worst_rate_error * 100:.2f} % (limit 3 %); busiest window "
                f"{'never above' if worst_excess <= 0 else f'{worst_excess:.0f} over'} rate x window + burst "
                f"({burst}) | {'pass' if ok else 'FAIL'} |"]
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def bench_pause_latency(repeats: int = 5) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="repmon-bench-pause-"))
    server = ScriptedSmtp()
    rows = []
    try:
        config = config_for(folder, server.port, ips=1, rate="200/s", connections=4)
        engine = make_engine(config.database_url)
        upgrade_schema(engine)
        template, recipients = write_campaign(folder, 200 * 4 * repeats)
        inject(engine, config.sender, template, recipients, campaign="pause", pool="default")

        async def run() -> tuple[list[float], list[float], list[int]]:
            stop = asyncio.Event()
            sender = Sender(config.sender, engine)
            task = asyncio.create_task(sender.run(stop=stop))
            in_process, via_db = [], []
            late_mails: list[int] = []
            for _ in range(repeats):
                await asyncio.sleep(1.0)
                called = time.time()
                await sender.set_directive("pause", "127.0.0.2", "relay", reason="bench")
                await asyncio.sleep(0.5)
                with server.lock:
                    late = [t for _, t in server.mail_times if t > called]
                in_process.append(max(late, default=called) - called)
                late_mails.append(len(late))
                await sender.set_directive("resume", "127.0.0.2", "relay")
                await asyncio.sleep(1.0)
                lane = sender.lanes["127.0.0.2|relay"]

                def pause_elsewhere() -> float:
                    with engine.begin() as conn:
                        control.add_directive(conn, "pause", "127.0.0.2", "relay", reason="other process")
                    return time.time()

                committed = await asyncio.get_running_loop().run_in_executor(None, pause_elsewhere)
                while lane.blocked() is None:
                    await asyncio.sleep(0.002)
                via_db.append(time.time() - committed)
                await sender.set_directive("resume", "127.0.0.2", "relay")
            stop.set()
            await task
            return in_process, via_db, late_mails

        in_process, via_db, late_mails = asyncio.run(run())
        engine.dispose()
        rows.append(f"| pause, same process (call -> last MAIL FROM the receiver sees), {repeats} runs at 200/s, "
                    f"4 connections | {sum(late_mails)} MAIL FROM after the calls (already on the wire), latest "
                    f"{max(in_process) * 1000:.1f} ms after a call (limit 100 ms) | "
                    f"{'pass' if max(in_process) <= 0.1 else 'FAIL'} |")
        rows.append(f"| pause through the database (commit -> lane blocked), {repeats} runs | "
                    f"max {max(via_db) * 1000:.0f} ms (limit 1 s) | {'pass' if max(via_db) <= 1.0 else 'FAIL'} |")
        return rows
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    parser.add_argument("--skip-rate", action="store_true", help="skip the rate-accuracy and pause runs")
    args = parser.parse_args()
    if not os.path.exists(SMTP_SOURCE):
        print("smtp-source / smtp-sink missing: apt-get install postfix", file=sys.stderr)
        return 2
    n = args.messages
    source = bench_smtp_source(n)
    naive = bench_naive_aiosmtplib(min(n, 5_000), 1)
    naive10 = bench_naive_aiosmtplib(min(n, 10_000), 10)
    plain_e2e, plain_delivery = bench_repmon(n, None)
    rsa_e2e, rsa_delivery = bench_repmon(n, "rsa")
    ed_e2e, ed_delivery = bench_repmon(n, "ed25519")
    print(f"\nSender throughput: {n} messages of ~2 KB to one local smtp-sink, relay, no rate limit, SQLite queue")
    print("| run | messages/s | vs smtp-source | vs naive aiosmtplib | target |")
    print("|---|---:|---:|---:|---|")

    def row(name: str, rate: float, target: float | None) -> None:
        verdict = "" if target is None else (f">= {target:,.0f}/s: {'pass' if rate >= target else 'FAIL'}")
        print(f"| {name} | {rate:,.0f} | {rate / source:.2f}x | {rate / naive:.1f}x | {verdict} |")

    row("Postfix smtp-source (C, 20 reused sessions, no queue)", source, None)
    row("naive aiosmtplib loop (1 connection, sendmail per message, no queue)", naive, None)
    row("aiosmtplib, 10 concurrent connections (no queue)", naive10, None)
    row("repmon end to end (inject + deliver), no DKIM", plain_e2e, 5000)
    row("repmon delivery only, no DKIM", plain_delivery, None)
    row("repmon end to end, DKIM rsa-sha256 (2048)", rsa_e2e, 1500)
    row("repmon delivery only, DKIM rsa-sha256 (2048)", rsa_delivery, None)
    row("repmon end to end, DKIM ed25519-sha256", ed_e2e, 1500)
    row("repmon delivery only, DKIM ed25519-sha256", ed_delivery, None)
    if not args.skip_rate:
        print("\n| check | measured | verdict |")
        print("|---|---|---|")
        for line in bench_rate_accuracy(args.rate_seconds) + bench_pause_latency():
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
