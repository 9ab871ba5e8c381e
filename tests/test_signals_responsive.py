"""With the resolver slow (2 s per answer) or down, the daemon's event loop keeps
running: blocklist lookups are async, checkdmarc runs in a worker thread with
a deadline. A probe task measures how late the loop wakes it up; a blocking
call of even one DNS answer would show up as a 2 s lag."""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor.config import parse_config
from monitor.signals.auth_cycle import auth_targets, run_auth_cycle
from monitor.signals.blocklists import run_cycle
from monitor.signals.dns_auth import AuthChecker
from tests.fixtures.dns_server import dead_resolver_address

# A generous bound: far below the 2 s a single blocking lookup would cost, far above scheduler noise.
MAX_LAG_S = 0.5


class LagProbe:
    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.max_lag = 0.0
        self.ticks = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.period_s)
            self.max_lag = max(self.max_lag, loop.time() - started - self.period_s)
            self.ticks += 1

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def config_for(resolver: str):
    return parse_config({
        "dns": {"resolver": resolver, "timeout_s": 1.0, "attempts": 2},
        "dnsbl": {"ips": ["192.0.2.0/29"], "domains": ["auth.test"], "unknown_after_errors": 1, "zones": [
            {"name": "good.bl.test", "kind": "ip", "listed_codes": {"127.0.0.2": "spam"}},
            {"name": "dbl.spamhaus.org"}]},
        "dns_auth": {"dkim_selectors": {"auth.test": ["s1"]}, "timeout_s": 3.0, "fetch_mta_sts_policy": False},
    })


@pytest.fixture
def slow_resolver(rbldnsd, dns_server_factory):
    server = dns_server_factory({"auth.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
                                 "_dmarc.auth.test": {"TXT": ["v=DMARC1; p=reject"]}},
                                forward_zones=("bl.test", "spamhaus.org"), upstream=rbldnsd.resolver)
    server.mode = "slow"
    server.delay_s = 2.0
    return server


@pytest.mark.parametrize("which", ["slow", "down"])
async def test_loop_stays_responsive_while_resolver_is_slow_or_down(engine, slow_resolver, which):
    resolver = slow_resolver.resolver if which == "slow" else dead_resolver_address()
    config = config_for(resolver)
    checker = AuthChecker()
    try:
        async with LagProbe() as probe:
            started = time.monotonic()
            dnsbl_report, auth_reports = await asyncio.gather(
                run_cycle(config.dns, config.dnsbl, engine),
                run_auth_cycle(config.dns, config.dns_auth, auth_targets(config.dns_auth, config.dnsbl), engine,
                               checker))
            elapsed = time.monotonic() - started
    finally:
        checker.close()
    # Nothing was reported listed or clean that was not: every lookup is an error.
    assert dnsbl_report.observations["error"] == dnsbl_report.checked == 8 + 1
    assert dict(dnsbl_report.states) == {"unknown": 9}
    assert all(t.kind != "listed" for t in dnsbl_report.transitions)
    assert auth_reports[0].status == "error" and auth_reports[0].findings == []
    # The loop kept ticking the whole time.
    assert probe.ticks > elapsed / 0.02 * 0.5
    assert probe.max_lag < MAX_LAG_S, f"event loop blocked for {probe.max_lag:.2f} s"
