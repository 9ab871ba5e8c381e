#!/usr/bin/env python3
"""Benchmark: a large DMARC aggregate report, repmon against parsedmarc.

Generates one aggregate report (100,000 records by default) with the shared
generator (../shared/tools/gen_big_aggregate.py next to the repository, or
--generator), then parses the same file in two fresh subprocesses:

  (a) parsedmarc.parse_report_file(path, config=ParserConfig(offline=True,
      always_use_local_files=True)), time zone UTC: no DNS, no downloads;
  (b) repmon's parsers.reports.parse_report_bytes(open(path).read()).

Each child reports the wall time of read + parse and its own peak resident
set size (resource.getrusage(RUSAGE_SELF).ru_maxrss, which includes the
interpreter and imports). Both must find the same number of records. The
result is printed as a markdown table row for the README, with the ratios
against parsedmarc measured in the same run. Targets: repmon at least 5x
faster and at most 1/4 of parsedmarc's peak memory.

    .venv/bin/python bench/bench_dmarc.py                 # 100,000 records, plain XML
    .venv/bin/python bench/bench_dmarc.py --gzip          # the same, .xml.gz
    .venv/bin/python bench/bench_dmarc.py --records 20000 --skip-parsedmarc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GENERATOR = REPO.parent / "shared" / "tools" / "gen_big_aggregate.py"
SPEEDUP_TARGET = 5.0
MEMORY_TARGET = 0.25

# Child programs: argv[1] is the report path; print one JSON line.
_CHILD_PARSEDMARC = """
import json, resource, sys, time
start = time.perf_counter()
from parsedmarc import parse_report_file
from parsedmarc.config import ParserConfig
imported = time.perf_counter()
result = parse_report_file(sys.argv[1], config=ParserConfig(offline=True, always_use_local_files=True))
done = time.perf_counter()
records = len(result["report"]["records"]) if result.get("report_type") == "aggregate" else -1
print(json.dumps({"parse_seconds": done - imported, "import_seconds": imported - start, "records": records,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_CHILD_REPMON = """
import json, resource, sys, time
start = time.perf_counter()
from parsers.events import DmarcAggregateEvent
from parsers.reports import parse_report_bytes
imported = time.perf_counter()
with open(sys.argv[1], "rb") as handle:
    events = parse_report_bytes(handle.read())
done = time.perf_counter()
reports = [e for e in events if isinstance(e, DmarcAggregateEvent)]
records = len(reports[0].records) if len(reports) == 1 else -1
if records < 0:
    print([e.to_dict() for e in events][:1], file=sys.stderr)
print(json.dumps({"parse_seconds": done - imported, "import_seconds": imported - start, "records": records,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_child(program: str, path: Path) -> dict:
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(REPO))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", program, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def generate(generator: Path, records: int, gzip: bool, directory: Path) -> Path:
    if not generator.is_file():
        raise SystemExit(f"generator {generator} not found (pass --generator)")
    path = directory / ("big.xml.gz" if gzip else "big.xml")
    command = [sys.executable, str(generator), "-n", str(records), "-o", str(path)]
    if gzip:
        command.append("--gzip")
    subprocess.run(command, check=True, timeout=1800)
    return path


def mib(kib: int) -> float:
    return kib / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--gzip", action="store_true", help="benchmark the gzip-compressed report")
    ap.add_argument("--skip-parsedmarc", action="store_true", help="measure repmon only (no ratios)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_dmarc_") as tmp:
        path = generate(args.generator, args.records, args.gzip, Path(tmp))
        size = path.stat().st_size
        ours = run_child(_CHILD_REPMON, path)
        theirs = None if args.skip_parsedmarc else run_child(_CHILD_PARSEDMARC, path)

    label = f"{args.records:,} records, {'xml.gz' if args.gzip else 'xml'} ({size / 1e6:.1f} MB)"
    print("| report | parsedmarc 11 parse s | parsedmarc peak RSS MiB | repmon parse s | repmon peak RSS MiB "
          "| speed-up | memory (repmon/parsedmarc) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    if theirs is None:
        print(f"| {label} | - | - | {ours['parse_seconds']:.2f} | {mib(ours['peak_rss_kib']):.0f} | - | - |")
        return 0 if ours["records"] == args.records else 1
    speedup = theirs["parse_seconds"] / ours["parse_seconds"]
    memory = ours["peak_rss_kib"] / theirs["peak_rss_kib"]
    print(f"| {label} | {theirs['parse_seconds']:.2f} | {mib(theirs['peak_rss_kib']):.0f} "
          f"| {ours['parse_seconds']:.2f} | {mib(ours['peak_rss_kib']):.0f} | {speedup:.1f}x | {memory:.2f} |")
    print()
    print(f"records found: parsedmarc {theirs['records']:,}, repmon {ours['records']:,}; "
          f"process wall time incl. imports: parsedmarc {theirs['process_seconds']:.1f} s, "
          f"repmon {ours['process_seconds']:.1f} s")
    met = speedup >= SPEEDUP_TARGET and memory <= MEMORY_TARGET
    print(f"targets (>= {SPEEDUP_TARGET:.0f}x faster, <= {MEMORY_TARGET:.2f} of the memory): {'met' if met else 'NOT met'}")
    if ours["records"] != theirs["records"]:
        print("record counts differ: the two parsers disagree on this report", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
