"""Check targets against blocklist zones: canaries first, then a bounded fan-out.

A cycle first asks every zone about its RFC 5782 test points. A zone that
lists the address that must never be listed is "broken" (lists the world:
AHBL since 2015, spamcop.net's lapsed domain in 2021); one that does not list
the address that must be listed is "dead" (emptied, retired, or a resolver
that answers NXDOMAIN to everything); one whose test queries fail or come
back with error codes is in "error". Only zones that pass are asked about
targets; for the others every target is an error observation naming why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal, TypeVar

from monitor.signals.dnsclient import DnsClient, DnsReply
from monitor.signals.targets import Target, applies, query_name, test_point_name
from monitor.signals.zones import Status, ZoneSpec, classify

T = TypeVar("T")
HealthStatus = Literal["ok", "broken", "dead", "error"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one zone said about one target in one cycle."""

    target: str
    zone: str  # display name (never a DQS key)
    status: Status
    codes: tuple[str, ...] = ()
    meanings: tuple[str, ...] = ()
    reason: str = ""
    txt: str | None = None  # the zone's own TXT explanation, when it gave one
    delist_url: str | None = None
    target_kind: str = "ip"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["codes"] = list(self.codes)
        out["meanings"] = list(self.meanings)
        return out


@dataclass(frozen=True, slots=True)
class ZoneHealth:
    zone: str
    status: HealthStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(slots=True)
class CheckResult:
    observations: list[Observation]
    health: dict[str, ZoneHealth]


async def zone_health(client: DnsClient, zone: ZoneSpec) -> ZoneHealth:
    """Ask the zone about its RFC 5782 test points (negative first: it is the one that catches list-the-world)."""
    if zone.test_unlisted:
        reply = await client.query(test_point_name(zone, zone.test_unlisted))
        if not reply.ok:
            return ZoneHealth(zone.display, "error", f"test query for {zone.test_unlisted} failed: {reply.describe()}")
        verdict = classify(zone, reply.addresses)
        if verdict.status == "listed":
            return ZoneHealth(zone.display, "broken",
                              f"lists {zone.test_unlisted}, which must never be listed ({verdict.reason}): "
                              "the zone lists the world, its answers are ignored")
        if verdict.status == "error":
            return ZoneHealth(zone.display, "error", f"test point {zone.test_unlisted}: {verdict.reason}")
    if zone.test_listed:
        reply = await client.query(test_point_name(zone, zone.test_listed))
        if not reply.ok:
            return ZoneHealth(zone.display, "error", f"test query for {zone.test_listed} failed: {reply.describe()}")
        verdict = classify(zone, reply.addresses)
        if verdict.status == "error":
            return ZoneHealth(zone.display, "error", f"test point {zone.test_listed}: {verdict.reason}")
        if verdict.status != "listed":
            return ZoneHealth(zone.display, "dead",
                              f"does not list its test point {zone.test_listed}: zone empty, retired, "
                              "or the resolver hides its answers; 'not listed' cannot be trusted")
    return ZoneHealth(zone.display, "ok")


async def lookup(client: DnsClient, zone: ZoneSpec, target: Target, *, fetch_txt: bool = True) -> Observation:
    name = query_name(zone, target)
    reply = await client.query(name, "A")
    if not reply.ok:
        return _error(zone, target, f"lookup failed: {reply.describe()}")
    verdict = classify(zone, reply.addresses)
    txt = None
    if fetch_txt and reply.addresses:
        # Listings and error codes usually carry a human explanation in TXT.
        txt = _join_txt(await client.query(name, "TXT"))
    return Observation(target=target.value, zone=zone.display, status=verdict.status, codes=verdict.codes,
                       meanings=verdict.meanings, reason=verdict.reason, txt=txt,
                       delist_url=zone.delist_url if verdict.status == "listed" else None,
                       target_kind=target.kind)


def _error(zone: ZoneSpec, target: Target, reason: str) -> Observation:
    return Observation(target=target.value, zone=zone.display, status="error", reason=reason, target_kind=target.kind)


def _join_txt(reply: DnsReply) -> str | None:
    if reply.outcome != "answer" or not reply.texts:
        return None
    return " | ".join(reply.texts)[:1000]


async def check(client: DnsClient, zones: Sequence[ZoneSpec], targets: Sequence[Target], *,
                concurrency: int = 256, fetch_txt: bool = True, test_zones: bool = True) -> CheckResult:
    """One cycle: zone canaries, then every applicable (target, zone) pair."""
    if test_zones:
        healths = await bounded_map([partial(zone_health, client, z) for z in zones], concurrency)
    else:
        healths = [ZoneHealth(z.display, "ok", "not tested") for z in zones]
    health = {h.zone: h for h in healths}

    def jobs() -> Iterator[Callable[[], Awaitable[Observation]]]:
        for target in targets:
            for zone in zones:
                if not applies(zone, target):
                    continue
                zone_state = health[zone.display]
                if zone_state.ok:
                    yield partial(lookup, client, zone, target, fetch_txt=fetch_txt)
                else:
                    yield partial(_skipped, zone, target, zone_state)

    observations = await bounded_map(jobs(), concurrency)
    return CheckResult(observations, health)


async def _skipped(zone: ZoneSpec, target: Target, health: ZoneHealth) -> Observation:
    return _error(zone, target, f"zone {health.status}: {health.detail}")


async def bounded_map(jobs: Iterable[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run jobs with at most `concurrency` in flight, results in job order.

    A fixed pool of workers pulls from one iterator, so memory stays flat
    however many jobs there are (no task per job created up front).
    """
    iterator = enumerate(jobs)
    results: dict[int, T] = {}

    async def worker() -> None:
        for index, job in iterator:
            results[index] = await job()

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return [results[i] for i in range(len(results))]
