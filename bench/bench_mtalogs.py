"""Delivery-log reading speed: a generated Postfix log of 1,000,000 lines through
repmon's reader, with `wc -l` and `grep -c status=` over the same file as the
references measured in the same run.

    .venv/bin/python bench/bench_mtalogs.py [--lines 1000000] [--db sqlite|URL]

The log is what a busy Postfix writes per message: smtpd connect / client /
disconnect, cleanup message-id, qmgr from= and removed, and one smtp line per
recipient (85 % sent, 10 % deferred, 5 % bounced, over four syslog names =
four sending IPs and a dozen destinations). Measured:
- parse: parsers.mtalogs' Postfix reader over the lines, no database;
- end to end: monitor.mtalogs' SourceReader (read, parse, store outcome rows,
  bounce events and suppressions, checkpoint per 5,000-line transaction) into
  a fresh SQLite database (or the given URL);
- references: `wc -l` and `grep -c status=` on the same file (C, no parsing).
Prints one markdown table row for the README.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.core import db  # noqa: E402
from monitor.mtalogs.ingest import SourceReader  # noqa: E402
from monitor.mtalogs.settings import DeliveryLogConfig  # noqa: E402
from parsers.mtalogs import reader_for  # noqa: E402

MIGRATION_DIRS = (ROOT / "monitor" / "storage" / "migrations", ROOT / "monitor" / "mtalogs" / "migrations")
RELAYS = ["gmail-smtp-in.l.google.com[142.250.1.27]:25", "mta7.am0.yahoodns.net[67.195.204.72]:25",
          "example-com.mail.protection.outlook.com[52.101.1.1]:25", "mx01.mail.icloud.com[17.57.154.6]:25",
          "mx.orange.fr[193.252.22.1]:25", "mx00.gmx.net[212.227.15.9]:25", "mx1.smallco.example[192.0.2.9]:25",
          "mx.example.net[198.51.100.7]:25", "in1-smtp.messagingengine.com[66.111.4.71]:25",
          "mx.yandex.net[77.88.21.249]:25", "mxa-001.pphosted.com[148.163.1.1]:25", "mail.protonmail.ch[185.70.42.1]:25"]
PROGRAMS = ["postfix/smtp", "postfix-ip2/smtp", "postfix-ip3/smtp", "postfix-ip4/smtp"]


def generate(path: Path, n_lines: int, seed: int = 25) -> int:
    """Write about n_lines lines; returns the number of delivery lines."""
    rng = random.Random(seed)
    written = deliveries = 0
    with path.open("w") as out:
        qid = 0x10000000
        while written < n_lines:
            qid += rng.randint(1, 50)
            q = f"{qid:X}"
            second = written % 60
            stamp = f"Dec  2 16:{(written // 60_000) % 60:02d}:{second:02d} mx1"
            rcpts = rng.choice((1, 1, 1, 2, 3))
            lines = [f"{stamp} postfix/smtpd[2001]: connect from app1.internal[10.0.0.5]",
                     f"{stamp} postfix/smtpd[2001]: {q}: client=app1.internal[10.0.0.5]",
                     f"{stamp} postfix/cleanup[2002]: {q}: message-id=<{q}@news.example.org>",
                     f"{stamp} postfix/qmgr[99]: {q}: from=<bounces+{q}@news.example.org>, size=14321, nrcpt={rcpts} "
                     "(queue active)"]
            program = rng.choice(PROGRAMS)
            for r in range(rcpts):
                relay = rng.choice(RELAYS)
                roll = rng.random()
                if roll < 0.85:
                    tail = "dsn=2.0.0, status=sent (250 2.0.0 OK  1764688000 x1si123 - gsmtp)"
                elif roll < 0.95:
                    tail = (f"dsn=4.7.28, status=deferred (host {relay.split(':')[0]} said: 421-4.7.28 Our system has "
                            "detected an unusual rate of unsolicited mail (in reply to end of DATA command))")
                else:
                    tail = (f"dsn=5.1.1, status=bounced (host {relay.split(':')[0]} said: 550 5.1.1 <u{q}{r}@"
                            "example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command))")
                lines.append(f"{stamp} {program}[3{r}00]: {q}: to=<u{q}{r}@example.com>, relay={relay}, delay=0.4, "
                             f"delays=0.01/0/0.2/0.19, {tail}")
                deliveries += 1
            lines += [f"{stamp} postfix/qmgr[99]: {q}: removed",
                      f"{stamp} postfix/smtpd[2001]: disconnect from app1.internal[10.0.0.5] ehlo=1 mail=1 rcpt=1 "
                      "data=1 quit=1 commands=5"]
            out.write("\n".join(lines) + "\n")
            written += len(lines)
    return deliveries


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repmon-bench-mtalogs-") as tmp:
        log = Path(tmp) / "mail.log"
        deliveries = generate(log, args.lines)
        n_lines = sum(1 for _ in log.open("rb"))
        size_mb = log.stat().st_size / 1e6
        with log.open("rb") as handle:  # warm the page cache
            while handle.read(1 << 20):
                pass
        wc_s, wc_out = timed(["wc", "-l", str(log)])
        grep_s, grep_out = timed(["grep", "-c", "status=", str(log)])

        reader = reader_for("postfix")
        started = time.perf_counter()
        parsed = 0
        with log.open(encoding="utf-8") as handle:
            for line in handle:
                parsed += len(reader(line))
        parse_s = time.perf_counter() - started

        url = f"sqlite:///{tmp}/bench.db" if args.db == "sqlite" else args.db
        db.upgrade_schema(url, MIGRATION_DIRS)
        engine = db.make_engine(url)
        section = DeliveryLogConfig(name="bench", kind="postfix", path=log, source_ip="192.0.2.10",
                                    source_ips={"postfix-ip2/smtp": "192.0.2.11", "postfix-ip3/smtp": "192.0.2.12",
                                                "postfix-ip4/smtp": "192.0.2.13"},
                                    max_batches_per_pass=10_000)
        started = time.perf_counter()
        result = SourceReader(engine, section).run_pass()
        end_s = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        engine.dispose()

    assert parsed == deliveries == result.stored.deliveries, (parsed, deliveries, result.stored)
    assert result.lines == n_lines and int(wc_out.split()[0]) == n_lines and int(grep_out) == deliveries
    print(f"lines {n_lines:,} ({size_mb:.0f} MB), delivery lines {deliveries:,}, events {result.stored.events:,}, "
          f"suppressions {result.stored.suppressions:,}")
    print(f"wc -l: {wc_s:.2f} s ({n_lines / wc_s:,.0f} lines/s); grep -c status=: {grep_s:.2f} s "
          f"({n_lines / grep_s:,.0f} lines/s)")
    print(f"parse only: {parse_s:.2f} s ({n_lines / parse_s:,.0f} lines/s)")
    print(f"end to end ({'SQLite' if args.db == 'sqlite' else 'database'}): {end_s:.2f} s ({n_lines / end_s:,.0f} lines/s, "
          f"{deliveries / end_s:,.0f} outcomes/s), peak RSS of the process {peak_rss_mb:.0f} MB")
    print()
    print(f"| Postfix log, {n_lines / 1e6:.1f}M lines / {deliveries:,} outcomes, SQLite (`bench_mtalogs.py`) "
          f"| parse {n_lines / parse_s:,.0f} lines/s; end to end {n_lines / end_s:,.0f} lines/s "
          f"({deliveries / end_s:,.0f} outcomes/s), peak RSS {peak_rss_mb:.0f} MB "
          f"| `grep -c status=`: {n_lines / grep_s:,.0f} lines/s; "
          f"`wc -l`: {n_lines / wc_s:,.0f} lines/s | {(n_lines / end_s) / (n_lines / grep_s):.3f} of grep | |")


if __name__ == "__main__":
    main()
