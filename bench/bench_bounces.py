"""Bounce parsing speed: repmon's parsers.parse_bytes against Sisimai (the
reference bounce classifier, Debian's libsisimai-perl) over the same email
files, in the same run.

    .venv/bin/python bench/bench_bounces.py [--corpus DIR] [--rounds 5]

Both sides read every file into memory first and are timed inside their own
interpreter, so start-up, module loading and file I/O are excluded:
Sisimai->make(\\$text, delivered => 1) per message in Perl (Time::HiRes),
parse_bytes(data) per message in Python (time.perf_counter). The median of
the rounds is reported, as messages per second and as a ratio (the median of
the per-round ratios: the rounds alternate between the two sides, so a busy
shared machine slows both alike), in one markdown table row for the README.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "bounces" / "emails"

# Reads the file names from stdin, slurps each file, then times rounds of
# Sisimai->make over the in-memory texts; prints one elapsed time per round.
SISIMAI_SCRIPT = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(time);
my $rounds = shift @ARGV;
my @texts;
while (my $path = <STDIN>) {
    chomp $path;
    open(my $fh, '<:raw', $path) or die "$path: $!";
    local $/; push @texts, scalar <$fh>; close $fh;
}
{ no warnings; Sisimai->make(\$texts[0], delivered => 1); }  # load the lazily required modules
for my $round (1 .. $rounds) {
    my $start = time;
    for my $text (@texts) { no warnings; my $copy = $text; Sisimai->make(\$copy, delivered => 1); }
    printf "%.6f\n", time - $start;
}
"""


def files_of(corpus: Path) -> list[Path]:
    files = sorted(p for p in corpus.iterdir() if p.is_file() and p.suffix == ".eml")
    if not files:
        raise SystemExit(f"no .eml files in {corpus}")
    return files


def time_ours(files: list[Path], rounds: int) -> list[float]:
    from parsers import parse_bytes

    payloads = [p.read_bytes() for p in files]
    parse_bytes(payloads[0])  # import the parser modules outside the timed rounds
    elapsed = []
    for _ in range(rounds):
        start = time.perf_counter()
        for data in payloads:
            parse_bytes(data)
        elapsed.append(time.perf_counter() - start)
    return elapsed


def time_sisimai(files: list[Path], rounds: int) -> list[float]:
    if shutil.which("perl") is None:
        raise SystemExit("perl is not installed (apt-get install perl libsisimai-perl)")
    check = subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"Sisimai is not installed (apt-get install libsisimai-perl): {check.stderr.strip()}")
    result = subprocess.run(
        ["perl", "-e", SISIMAI_SCRIPT, str(rounds)],
        input="\n".join(str(p) for p in files) + "\n",
        capture_output=True, text=True, timeout=1800, check=True,
    )
    return [float(line) for line in result.stdout.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .eml files")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    files = files_of(args.corpus)
    # rounds alternate between the two sides, so that load from other processes on a
    # shared machine falls on both alike; the ratio is the median of the rounds' ratios
    ours_times: list[float] = []
    their_times: list[float] = []
    for _ in range(args.rounds):
        ours_times.extend(time_ours(files, 1))
        their_times.extend(time_sisimai(files, 1))
    ours = len(files) / statistics.median(ours_times)
    theirs = len(files) / statistics.median(their_times)
    ratio = statistics.median(theirs_s / ours_s for ours_s, theirs_s in zip(ours_times, their_times, strict=True))
    print("| benchmark | repmon msg/s | Sisimai 4.25 msg/s | ratio |")
    print("|---|---|---|---|")
    print(f"| bounce parsing, {len(files)} corpus emails, median of {args.rounds} alternating rounds, one core "
          f"| {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
