"""Run every benchmark one after the other (they must not share the 2 cores)
and collect the markdown table rows they print, for the README's performance
table. Each script measures its own reference in the same run.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--out bench/results/latest.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "bounces": ["bench_bounces.py"],
    "dmarc": ["bench_dmarc.py"],
    "ingest": ["bench_ingest.py"],
    "dnsbl": ["bench_dnsbl.py"],
    "sender": ["bench_sender.py"],
    "health": ["bench_health.py"],
}


def run_one(name: str, argv: list[str]) -> tuple[int, list[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], cwd=HERE.parent,
                          capture_output=True, text=True)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    if proc.returncode != 0:
        sys.stderr.write(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}\n")
    return proc.returncode, rows, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    names = args.only or list(BENCHES)
    lines: list[str] = []
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        code, rows, seconds = run_one(name, BENCHES[name])
        failed += code != 0
        print("\n".join(rows) or "(no rows)", flush=True)
        print(f"   ({seconds:.0f} s)", flush=True)
        lines += [f"## {name}", *rows, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"rows written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
