#!/usr/bin/env python3
"""Benchmark: a large DMARC aggregate report through the command line, repmon against parsedmarc.

Generates one aggregate report (100,000 records from 5,000 distinct source IPs
by default) with the shared generator (../shared/tools/gen_big_aggregate.py
next to the repository, or --generator), packs it as the case asks, then runs,
in the same run and one after the other, two fresh processes on the same file:

  (a) `repmon parse --json FILE` (python -m monitor.cli), source lookups on
      (country, AS, service: the default), output to a file;
  (b) parsedmarc 11's own CLI, `parsedmarc --offline --no-prettify-json FILE`,
      time zone UTC, output to a file (no DNS, no downloads: the bundled IP
      database and service map), or with --reference api its
      parse_report_file(path, ParserConfig(offline=True, always_use_local_files=True))
      in a child process.

Each is timed end to end from process start (interpreter start and imports
included) to exit, and its peak resident set size is taken from wait4()'s
rusage of that one child. Both outputs must hold the same number of records.
Prints a markdown table with the ratios against parsedmarc; targets: repmon at
least 5x faster and at most 1/4 of parsedmarc's peak memory.

Cases (--case, repeatable; default xml): xml (67 MB file), xml.gz, zip, and
eml-zip / eml-gz (a report mail with the zipped or gzipped report attached).

With --ingest, the same file is also ingested (a local folder source holding
it, `FolderReader.run_once`: parse, source lookups, one transaction with the
ledger row, the report and its records streamed to the database in batches)
into SQLite and PostgreSQL, each in a fresh process timed the same way (from
process start to exit, the schema upgraded beforehand as the daemon does at
start-up), with the parse pool (the default) and with parsing in a thread
(`[ingest] workers = 0`). Target: at most 2x the `repmon parse --json` time
of the same run. --memory-records N adds a run of N records (1,000,000) into
SQLite to compare peak memory against the default size (issue 14 item 6).

    .venv/bin/python bench/bench_dmarc.py                          # 100,000 records, plain XML
    .venv/bin/python bench/bench_dmarc.py --case xml --case eml-zip --case eml-gz
    .venv/bin/python bench/bench_dmarc.py --records 20000 --skip-parsedmarc
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GENERATOR = REPO.parent / "shared" / "tools" / "gen_big_aggregate.py"
SPEEDUP_TARGET = 5.0
MEMORY_TARGET = 0.25
CASES = ("xml", "xml.gz", "zip", "eml-zip", "eml-gz")
INGEST_ROWS: list[str] = []
REPORT_NAME = "loadtest.example.org!example.com!1711929600!1712015999"

# parsedmarc's library entry point in a child (--reference api): argv[1] is the report path.
_CHILD_PARSEDMARC_API = """
import json, sys
from parsedmarc import parse_report_file
from parsedmarc.config import ParserConfig
result = parse_report_file(sys.argv[1], config=ParserConfig(offline=True, always_use_local_files=True))
json.dump({"aggregate_reports": [result["report"]] if result.get("report_type") == "aggregate" else []}, sys.stdout)
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_kib: int
    records: int


# Measures one command from a fresh, small process: Linux carries the peak RSS of the
# process that forks over exec into the child's ru_maxrss, so a child spawned by this
# script after it held a 67 MB report would report this script's peak, not its own.
# argv[1] is the output file, the rest the command; prints {"seconds", "peak_rss_kib", "status"}.
_LAUNCHER = """
import json, os, subprocess, sys, time
with open(sys.argv[1], "wb") as out:
    started = time.perf_counter()
    proc = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
sys.stderr.write(stderr.decode("utf-8", "replace")[-3000:])
print(json.dumps({"seconds": seconds, "peak_rss_kib": usage.ru_maxrss, "status": proc.returncode}))
"""


def run_measured(command: list[str], output: Path) -> Run:
    """Run a command with stdout to `output`: wall time from its spawn to its exit
    and its own peak RSS (wait4 rusage), taken by a fresh launcher process."""
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, str(output), *command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3600, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {"status": done.returncode}
    if result["status"] != 0:
        raise SystemExit(f"{command[:4]} failed ({result['status']}):\n{done.stderr[-3000:]}")
    return Run(result["seconds"], result["peak_rss_kib"], 0)


def repmon_records(output: Path) -> int:
    """Records of the aggregate reports in `repmon parse --json` output."""
    total = 0
    with output.open(encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            if event["kind"] == "dmarc_aggregate":
                total += len(event["records"])
            elif event["kind"] == "unparseable":
                raise SystemExit(f"repmon could not parse the report: {event['error']}")
    return total


def parsedmarc_records(output: Path) -> int:
    text = output.read_text(encoding="utf-8")
    document = json.loads(text[text.index("{"):])  # the CLI may print a banner line first
    return sum(len(report["records"]) for report in document.get("aggregate_reports", []))


def generate(generator: Path, records: int, distinct_ips: int, directory: Path) -> Path:
    if not generator.is_file():
        raise SystemExit(f"generator {generator} not found (pass --generator)")
    path = directory / f"{REPORT_NAME}.xml"
    command = [sys.executable, str(generator), "-n", str(records), "--distinct-ips", str(distinct_ips), "-o", str(path)]
    subprocess.run(command, check=True, timeout=1800)
    return path


def pack(xml: Path, case: str, directory: Path) -> Path:
    """The report file a case reads: the XML, compressed, or mailed."""
    data = xml.read_bytes()
    if case == "xml":
        return xml
    if case == "xml.gz":
        path = directory / f"{REPORT_NAME}.xml.gz"
        path.write_bytes(gzip.compress(data, compresslevel=6))
        return path
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{REPORT_NAME}.xml", data)
    zipped = buffer.getvalue()
    if case == "zip":
        path = directory / f"{REPORT_NAME}.zip"
        path.write_bytes(zipped)
        return path
    return write_report_mail(zipped if case == "eml-zip" else gzip.compress(data), case, directory)


def write_report_mail(attachment: bytes, case: str, directory: Path) -> Path:
    msg = MIMEMultipart("mixed")
    msg["From"] = "noreply-dmarc@loadtest.example.org"
    msg["To"] = "dmarc@example.com"
    msg["Subject"] = f"Report Domain: example.com Submitter: loadtest.example.org Report-ID: <{REPORT_NAME}>"
    msg["Date"] = "Tue, 02 Apr 2024 06:00:00 +0000"
    msg["Message-ID"] = "<bench-dmarc@loadtest.example.org>"
    msg.attach(MIMEText("This is a DMARC aggregate report for example.com."))
    subtype, suffix = ("zip", "zip") if case == "eml-zip" else ("gzip", "xml.gz")
    part = MIMEApplication(attachment, subtype)
    part.add_header("Content-Disposition", "attachment", filename=f"{REPORT_NAME}.{suffix}")
    msg.attach(part)
    path = directory / f"report-{case}.eml"
    path.write_bytes(msg.as_bytes())
    return path


INGEST_TARGET = 2.0

# Ingests the one file in a folder: argv[1] database URL, argv[2] folder, argv[3] parse workers.
_CHILD_INGEST = """
import asyncio, json, sys
from monitor.config import parse_config
from monitor.core.db import make_engine
from monitor.core.runtime import Runtime
from monitor.ingest.folder import FolderReader
from monitor.ingest.pool import ParsePool
from monitor.ingest.settings import ParsingConfig
url, folder, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
budget = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
config = parse_config({"database": {"url": url}, "folders": [{"path": folder, "name": "bench"}]}, base_dir=folder)
engine = make_engine(url)
pool = ParsePool(ParsingConfig(workers=workers, parse_timeout_s=budget), config.dmarc)
try:
    result = asyncio.run(FolderReader(Runtime(engine), config.folders[0], suppression=config.suppression,
                                      dmarc=config.dmarc, pool=pool).run_once())
finally:
    pool.close()
    engine.dispose()
if result.stored + result.quarantined != 1:
    raise SystemExit(f"not ingested: {result}")
"""


def stored_records(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM dmarc_records")).scalar_one())
    finally:
        engine.dispose()


def quarantine_reason(url: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT reason FROM quarantined_messages")).scalar()
    finally:
        engine.dispose()


def fresh_database(kind: str, tmp: Path, name: str, postgres: Any) -> str:
    sys.path.insert(0, str(REPO))
    from monitor.parts import upgrade_schema

    if kind == "SQLite":
        url = f"sqlite:///{tmp / (name + '.db')}"
    else:
        url = postgres.url(postgres.create_database())
    upgrade_schema(url)
    return url


def measure_ingest(path: Path, kind: str, workers: int, tmp: Path, postgres: Any, name: str,
                   budget: float = 30.0) -> tuple[Run, str | None]:
    """Ingest one report file in a fresh process (schema upgraded beforehand):
    the run and, when it was quarantined instead, why."""
    folder = tmp / f"ingest-{name}"
    folder.mkdir()
    (folder / path.name).symlink_to(path)
    url = fresh_database(kind, tmp, name, postgres)
    run = run_measured([sys.executable, "-c", _CHILD_INGEST, url, str(folder), str(workers), str(budget)],
                       tmp / f"{name}.out")
    return Run(run.seconds, run.peak_rss_kib, stored_records(url)), quarantine_reason(url)


def ingest_rows(case: str, path: Path, parse_run: Run, tmp: Path, args: argparse.Namespace,
                postgres: Any) -> tuple[list[str], bool]:
    rows: list[str] = []
    ok = True
    kinds = ["SQLite"] + ([] if postgres is None else ["PostgreSQL"])
    for kind in kinds:
        for workers, how in ((2, "parse pool"), (0, "parse in a thread")):
            run, _ = measure_ingest(path, kind, workers, tmp, postgres, f"{case}-{kind}-{workers}".replace(".", "_"))
            ratio = run.seconds / parse_run.seconds
            met = ratio <= INGEST_TARGET and run.records == args.records
            ok = ok and met
            rows.append(f"| {args.records:,} records, {case}: ingest into {kind} ({how}) | {run.seconds:.2f} s, "
                        f"peak RSS {mib(run.peak_rss_kib):.0f} MiB, {run.records:,} rows | repmon parse --json "
                        f"{parse_run.seconds:.2f} s, {mib(parse_run.peak_rss_kib):.0f} MiB | {ratio:.2f}x "
                        f"| <= {INGEST_TARGET:.0f}x {'met' if met else 'NOT met'} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows, ok


def memory_rows(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Peak RSS of ingesting reports of each size (args.records and
    args.memory_records), gzipped as reporters send large ones, into SQLite."""
    rows = []
    for records in (args.records, *args.memory_records):
        folder = tmp / f"memory-{records}"
        folder.mkdir()
        xml = generate(args.generator, records, args.distinct_ips, folder)
        xml_mb = xml.stat().st_size / 1e6
        packed = pack(xml, "xml.gz", folder)
        xml.unlink()
        parse = run_measured(repmon_command(packed, args.entry), tmp / f"memory-parse-{records}.jsonl")
        for workers in (2, 0):
            run, reason = measure_ingest(packed, "SQLite", workers, tmp, None, f"memory-{records}-{workers}",
                                         budget=3600.0)
            outcome = f"{run.records:,} rows" if reason is None else f"quarantined: {reason[:120]}"
            rows.append(f"| {records:,} records ({xml_mb:.0f} MB XML, {packed.stat().st_size / 1e6:.0f} MB .xml.gz), "
                        f"SQLite, {'parse pool' if workers else 'parse in a thread'} | {run.seconds:.2f} s, "
                        f"peak RSS {mib(run.peak_rss_kib):.0f} MiB, {outcome} | repmon parse --json "
                        f"{parse.seconds:.2f} s, {mib(parse.peak_rss_kib):.0f} MiB |")
            print(rows[-1], file=sys.stderr, flush=True)
        packed.unlink()
    return rows


def repmon_command(path: Path, entry: str) -> list[str]:
    if entry == "command":  # the parse command alone, without monitor.cli loading every other command
        return [sys.executable, "-m", "monitor.commands.parse", "--json", str(path)]
    return [sys.executable, "-m", "monitor.cli", "parse", "--json", str(path)]


def parsedmarc_command(path: Path, reference: str) -> list[str]:
    if reference == "api":
        return [sys.executable, "-c", _CHILD_PARSEDMARC_API, str(path)]
    cli = Path(sys.executable).with_name("parsedmarc")
    return [str(cli), "--offline", "--no-prettify-json", str(path)]


def startup_cost(tmp: Path, entry: str) -> Run:
    """repmon on a tiny mail: interpreter start and imports, what every run pays."""
    mail = tmp / "one.eml"
    mail.write_bytes(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    return run_measured(repmon_command(mail, entry), tmp / "startup.jsonl")


def mib(kib: int) -> float:
    return kib / 1024


def measure_case(case: str, xml: Path, tmp: Path, args: argparse.Namespace,
                 postgres: Any = None) -> tuple[str, bool]:
    path = pack(xml, case, tmp)
    size = path.stat().st_size
    ours = run_measured(repmon_command(path, args.entry), tmp / "repmon.jsonl")
    ours = Run(ours.seconds, ours.peak_rss_kib, repmon_records(tmp / "repmon.jsonl"))
    if args.ingest:
        rows, ingest_ok = ingest_rows(case, path, ours, tmp, args, postgres)
        INGEST_ROWS.extend(rows)
        if not ingest_ok:
            INGEST_ROWS.append(f"| ({case}: ingestion target not met) | | | | |")
    label = f"{args.records:,} records, {case} ({size / 1e6:.1f} MB)"
    if args.skip_parsedmarc:
        return (f"| {label} | - | - | {ours.seconds:.2f} | {mib(ours.peak_rss_kib):.0f} | - | - |",
                ours.records == args.records)
    theirs = run_measured(parsedmarc_command(path, args.reference), tmp / "parsedmarc.json")
    theirs = Run(theirs.seconds, theirs.peak_rss_kib, parsedmarc_records(tmp / "parsedmarc.json"))
    speedup = theirs.seconds / ours.seconds
    memory = ours.peak_rss_kib / theirs.peak_rss_kib
    met = speedup >= SPEEDUP_TARGET and memory <= MEMORY_TARGET
    if ours.records != theirs.records:
        print(f"{case}: record counts differ: repmon {ours.records:,}, parsedmarc {theirs.records:,}", file=sys.stderr)
    row = (f"| {label} | {theirs.seconds:.2f} | {mib(theirs.peak_rss_kib):.0f} | {ours.seconds:.2f} "
           f"| {mib(ours.peak_rss_kib):.0f} | {speedup:.1f}x | {memory:.2f} | {'met' if met else 'NOT met'} |")
    return row, met and ours.records == theirs.records == args.records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--distinct-ips", type=int, default=5_000)
    ap.add_argument("--case", action="append", choices=CASES, help="what to feed the CLIs (repeatable; default xml)")
    ap.add_argument("--reference", choices=("cli", "api"), default="cli",
                    help="parsedmarc's CLI (default) or its parse_report_file in a child process")
    ap.add_argument("--entry", choices=("cli", "command"), default="cli",
                    help="repmon through `python -m monitor.cli parse` (default, what `repmon parse` runs) or "
                         "`python -m monitor.commands.parse` (the command without the CLI's other commands)")
    ap.add_argument("--skip-parsedmarc", action="store_true", help="measure repmon only (no ratios)")
    ap.add_argument("--ingest", action="store_true",
                    help="also ingest the file into SQLite and PostgreSQL (target: <= 2x repmon parse --json)")
    ap.add_argument("--skip-postgres", action="store_true", help="--ingest into SQLite only")
    ap.add_argument("--memory-records", type=int, action="append", default=[],
                    help="also ingest a report of this many records (repeatable) into SQLite and compare peak "
                         "memory with --records")
    args = ap.parse_args(argv)

    rows: list[str] = []
    ok = True
    postgres = None
    if args.ingest and not args.skip_postgres:
        sys.path.insert(0, str(REPO))
        from tests.fixtures.databases import find_or_start_postgres

        postgres = find_or_start_postgres()
    with tempfile.TemporaryDirectory(prefix="bench_dmarc_") as directory:
        tmp = Path(directory)
        xml = generate(args.generator, args.records, args.distinct_ips, tmp)
        startup = startup_cost(tmp, args.entry)
        try:
            for case in args.case or ["xml"]:
                row, met = measure_case(case, xml, tmp, args, postgres)
                rows.append(row)
                ok = ok and met
            memory = memory_rows(args, tmp) if args.memory_records else []
        finally:
            if postgres is not None:
                postgres.stop()
    reference = "parsedmarc 11 CLI --offline" if args.reference == "cli" else "parsedmarc 11 parse_report_file"
    print(f"| report | {reference} s | its peak RSS MiB | repmon parse --json s | its peak RSS MiB "
          "| speed-up | memory (repmon/parsedmarc) | targets |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row)
    print()
    print(f"end to end per process (start, imports, parse, source lookups, JSON out); targets: >= {SPEEDUP_TARGET:.0f}x "
          f"faster, <= {MEMORY_TARGET:.2f} of parsedmarc's peak RSS")
    print(f"repmon's fixed cost ({' '.join(repmon_command(Path('one.eml'), args.entry)[1:])} on a one-line mail): "
          f"{startup.seconds:.2f} s, peak RSS {mib(startup.peak_rss_kib):.0f} MiB")
    if INGEST_ROWS:
        print()
        print("| ingestion | repmon | repmon parse --json, same run | ratio | target |")
        print("| --- | --- | --- | --- | --- |")
        for row in INGEST_ROWS:
            print(row)
    if memory:
        print()
        print("| peak memory of ingestion (one report) | ingest | parse --json |")
        print("| --- | --- | --- |")
        for row in memory:
            print(row)
    return 0 if ok or args.skip_parsedmarc else 1


if __name__ == "__main__":
    sys.exit(main())
