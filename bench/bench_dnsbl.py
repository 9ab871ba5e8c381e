"""Blocklist polling speed: 1,000 sending IPs x 10 zones (10,000 lookups)
against a local rbldnsd, with references measured in the same run.

    .venv/bin/python bench/bench_dnsbl.py [--ips 1000] [--rounds 3] [--sample 500]

Needs the `rbldnsd` binary (Debian package rbldnsd). The zones are generated:
seven well-behaved lists (a few hundred listings each, several codes, some
undocumented ones) and three that answer error codes for a third of the
addresses (Spamhaus' 127.255.255.254, DBL's 127.0.1.255 and an address
outside 127/8), all with valid RFC 5782 test points so every lookup is made.

Measured:
- repmon: `monitor.signals.dnsbl.check` (canaries + bounded fan-out over our
  shared-socket client), TXT fetching off as in a first pass; median of rounds.
- reference A: the same 10,000 lookups with dnspython's asyncio resolver and
  the same concurrency (`dns.asyncresolver`, semaphore fan-out).
- reference B: a plain sequential dnspython loop over a sample, extrapolated.
- memory: peak RSS growth over the first run and over the later runs (a leak
  would show as growth between runs).
- correctness: every verdict against the generated ground truth; false
  listings (an error code or clean address reported listed) must be 0.
Prints one markdown table row for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dns.asyncresolver  # noqa: E402
import dns.resolver  # noqa: E402

from monitor.signals.dnsbl import check  # noqa: E402
from monitor.signals.dnsclient import DnsClient  # noqa: E402
from monitor.signals.targets import Target, query_name  # noqa: E402
from monitor.signals.zones import ZoneSpec, classify  # noqa: E402
from tests.fixtures.rbldnsd import Rbldnsd  # noqa: E402

LISTING_CODES = {"127.0.0.2": "spam", "127.0.0.3": "snowshoe", "127.0.0.4": "exploited", "127.0.0.10": "policy"}
ERROR_CODES = {"127.255.255.254": "public resolver", "127.255.255.255": "too many queries",
               "127.0.1.255": "IP queries not allowed"}
CONCURRENCY = 200


def build_world(n_ips: int, seed: int = 5782):
    """Zone data for rbldnsd and the truth: (ip, zone) -> 'listed' | 'error' (absent = clean)."""
    rng = random.Random(seed)
    base = int(ipaddress.ip_address("10.64.0.0"))
    ips = [str(ipaddress.ip_address(base + i)) for i in range(n_ips)]
    zones: dict[str, list] = {}
    truth: dict[tuple[str, str], str] = {}
    for z in range(7):
        name = f"list{z}.bench.test"
        lines = [":127.0.0.2:Listed by " + name + ": $", "127.0.0.2"]
        for ip in rng.sample(ips, n_ips // 4):
            code = rng.choice(list(LISTING_CODES) + ["127.0.0.77"])  # some undocumented answers
            lines.append(f"{ip} :{code}:Listed by {name}: $")
            truth[(ip, name)] = "listed" if code in LISTING_CODES else "error"
        zones[name] = [("ip4set", lines)]
    for z, answer in enumerate(["127.255.255.254", "127.0.1.255", "10.99.99.99"]):
        name = f"errors{z}.bench.test"
        lines = [":127.0.0.2:test point", "127.0.0.2"]
        for ip in rng.sample(ips, n_ips // 3):
            lines.append(f"{ip} :{answer}:error answer")
            truth[(ip, name)] = "error"
        zones[name] = [("ip4set", lines)]
    specs = [ZoneSpec(name=n, kind="ip", listed_codes=LISTING_CODES, error_codes=ERROR_CODES,
                      test_listed="127.0.0.2", test_unlisted="127.0.0.1") for n in zones]
    return [Target(ip, "ip") for ip in ips], specs, zones, truth


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_ours(host: str, port: int, targets, zones) -> tuple[float, list]:
    async with DnsClient(host, port, timeout=3.0, attempts=2) as client:
        started = time.perf_counter()
        result = await check(client, zones, targets, concurrency=CONCURRENCY, fetch_txt=False)
        return time.perf_counter() - started, result.observations


async def run_dnspython_async(host: str, port: int, targets, zones) -> tuple[float, int]:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = 3.0
    semaphore = asyncio.Semaphore(CONCURRENCY)
    answered = 0

    async def one(name: str) -> None:
        nonlocal answered
        async with semaphore:
            try:
                await resolver.resolve(name, "A")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                pass
            answered += 1

    names = [query_name(z, t) for t in targets for z in zones]
    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in names))
    return time.perf_counter() - started, answered


def run_sequential_sample(host: str, port: int, targets, zones, sample: int) -> float:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = 3.0
    names = [query_name(z, t) for t in targets for z in zones]
    chosen = random.Random(1).sample(names, min(sample, len(names)))
    started = time.perf_counter()
    for name in chosen:
        try:
            resolver.resolve(name, "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
    return (time.perf_counter() - started) / len(chosen)


def score(observations, truth) -> tuple[int, int]:
    """(false listings, other mismatches) against the generated truth."""
    false_listings = mismatches = 0
    for o in observations:
        expected = truth.get((o.target, o.zone), "clean")
        if o.status == "listed" and expected != "listed":
            false_listings += 1
        elif o.status != expected:
            mismatches += 1
    return false_listings, mismatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ips", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=500, help="lookups timed for the sequential reference")
    args = parser.parse_args()

    targets, zones, zone_data, truth = build_world(args.ips)
    queries = len(targets) * len(zones)
    assert classify(zones[0], ["127.255.255.254"]).status == "error"
    workdir = tempfile.TemporaryDirectory(prefix="repmon-bench-dnsbl-")
    server = Rbldnsd(Path(workdir.name), zone_data)
    server.start()
    try:
        host, port = "127.0.0.1", server.port
        rss_start = rss_mb()
        times, false_listings, mismatches = [], 0, 0
        rss_after_first = rss_start
        for round_number in range(args.rounds):
            elapsed, observations = asyncio.run(run_ours(host, port, targets, zones))
            assert len(observations) == queries, (len(observations), queries)
            fl, mm = score(observations, truth)
            false_listings += fl
            mismatches += mm
            times.append(elapsed)
            del observations
            if round_number == 0:
                rss_after_first = rss_mb()
        rss_end = rss_mb()
        ours = statistics.median(times)

        async_times = []
        for _ in range(args.rounds):
            elapsed, answered = asyncio.run(run_dnspython_async(host, port, targets, zones))
            assert answered == queries
            async_times.append(elapsed)
        reference_async = statistics.median(async_times)
        per_query = run_sequential_sample(host, port, targets, zones, args.sample)
        reference_sequential = per_query * queries
    finally:
        server.stop()
        workdir.cleanup()

    print(f"# {queries:,} lookups ({len(targets):,} IPs x {len(zones)} zones), rounds={args.rounds}, "
          f"concurrency={CONCURRENCY}", file=sys.stderr)
    print(f"# repmon runs: {', '.join(f'{t:.2f}' for t in times)} s; dnspython asyncio: "
          f"{', '.join(f'{t:.2f}' for t in async_times)} s; sequential: {per_query * 1e3:.3f} ms/lookup",
          file=sys.stderr)
    print(f"# mismatches against ground truth other than false listings: {mismatches}", file=sys.stderr)
    print("| benchmark | lookups | repmon (s) | target | dnspython asyncio resolver (s) | ratio | "
          "sequential dnspython, extrapolated (s) | ratio | peak RSS growth, 1st run / later runs (MB) | "
          "false listings |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| DNSBL {len(targets):,} IPs x {len(zones)} zones, local rbldnsd | {queries:,} | {ours:.2f} | <= 3 s "
          f"{'met' if ours <= 3 else 'MISSED'} | {reference_async:.2f} | {reference_async / ours:.1f}x | "
          f"{reference_sequential:.1f} | {reference_sequential / ours:.1f}x | "
          f"{rss_after_first - rss_start:.1f} / {rss_end - rss_after_first:.1f} | {false_listings} |")


if __name__ == "__main__":
    main()
