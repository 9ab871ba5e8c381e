"""Blocklist checks against a real rbldnsd, directly and through a real resolver
that forwards to it (and that can lie, fail, stall or be down)."""

from __future__ import annotations

import json

import pytest

from monitor.cli import main
from monitor.config import parse_config
from monitor.signals.dnsbl import check, zone_health
from monitor.signals.dnsclient import DnsClient, parse_resolver
from monitor.signals.targets import Target, expand_ips
from monitor.signals.zones import ZoneSpec, build_zones
from tests.fixtures.dns_server import dead_resolver_address


def ip_zone(name: str, **codes: str) -> ZoneSpec:
    listed = {"127.0.0.2": "spam", "127.0.0.4": "exploited"} if not codes else dict(codes)
    return ZoneSpec(name=name, kind="ip", listed_codes=listed,
                    error_codes={"127.255.255.254": "public resolver", "127.0.1.255": "IP queries not allowed"},
                    test_listed="127.0.0.2", test_unlisted="127.0.0.1", ipv6=True, delist_url=f"https://{name}/delist")


def catalog_zone(name: str) -> ZoneSpec:
    config = parse_config({"dnsbl": {"dqs_key": "badkey", "zones": [{"name": name}]}})
    return build_zones(config.dnsbl)[0]


def client(resolver: str, timeout: float = 2.0) -> DnsClient:
    host, port = parse_resolver(resolver)
    return DnsClient(host, port, timeout=timeout, attempts=2)


IPS = [Target("192.0.2.10", "ip"), Target("192.0.2.11", "ip"), Target("192.0.2.12", "ip"),
       Target("192.0.2.20", "ip"), Target("192.0.2.99", "ip"), Target("2001:db8::10", "ip")]


def by_key(result):
    return {(o.target, o.zone): o for o in result.observations}


async def test_listings_codes_txt_and_delisting_url(rbldnsd):
    zones = [ip_zone("good.bl.test"), catalog_zone("zen.spamhaus.org")]
    async with client(rbldnsd.resolver) as dns:
        result = await check(dns, zones, IPS)
    seen = by_key(result)
    assert result.health["good.bl.test"].ok and result.health["zen.spamhaus.org"].ok
    listed = seen[("192.0.2.10", "good.bl.test")]
    assert listed.status == "listed" and listed.codes == ("127.0.0.2",)
    assert listed.txt == "Listed in good.bl.test, see https://good.bl.test/lookup?ip=192.0.2.10"
    assert listed.delist_url == "https://good.bl.test/delist"
    assert seen[("192.0.2.11", "good.bl.test")].codes == ("127.0.0.4",)
    zen = seen[("192.0.2.20", "zen.spamhaus.org")]
    assert zen.status == "listed" and zen.codes == ("127.0.0.2", "127.0.0.4")
    assert zen.meanings[0].startswith("SBL") and zen.meanings[1].startswith("XBL")
    assert seen[("192.0.2.99", "good.bl.test")].status == "clean"
    assert seen[("2001:db8::10", "good.bl.test")].status == "listed"  # IPv6 nibble query
    # undocumented code 127.0.0.9 on good.bl.test: an error, never a listing
    odd = seen[("192.0.2.12", "good.bl.test")]
    assert odd.status == "error" and odd.codes == ("127.0.0.9",) and "undocumented" in odd.reason


async def test_error_code_zones_produce_zero_listings(rbldnsd):
    """Zones answering Spamhaus' public-resolver code, the DBL IP-query code, a DQS bad-key
    code or addresses outside 127/8 for every query: not one target may come out listed."""
    zones = [ip_zone("public-resolver.bl.test"), ip_zone("iperror.bl.test"), ip_zone("outside.bl.test"),
             catalog_zone("badkey.zen.dq.spamhaus.net")]
    targets = list(expand_ips(["192.0.2.0/26"]))
    async with client(rbldnsd.resolver) as dns:
        result = await check(dns, zones, targets)
    assert len(result.observations) == 4 * 64
    assert [o for o in result.observations if o.status != "error"] == []
    for zone in zones:
        assert result.health[zone.display].status == "error", zone.display
    assert "public resolver" in result.health["public-resolver.bl.test"].detail
    assert "outside 127.0.0.0/8" in result.health["outside.bl.test"].detail
    assert "DQS key" in result.health["<key>.zen.dq.spamhaus.net"].detail
    # Even asked directly (no canary), the answers stay errors.
    async with client(rbldnsd.resolver) as dns:
        direct = await check(dns, zones, targets, test_zones=False)
    assert {o.status for o in direct.observations} == {"error"}


async def test_list_the_world_zone_is_marked_broken_and_ignored(rbldnsd):
    async with client(rbldnsd.resolver) as dns:
        health = await zone_health(dns, ip_zone("world.bl.test"))
        result = await check(dns, [ip_zone("world.bl.test")], IPS[:3])
    assert health.status == "broken" and "lists the world" in health.detail
    assert {o.status for o in result.observations} == {"error"}
    assert all("zone broken" in o.reason for o in result.observations)


async def test_zone_without_its_test_point_is_dead_not_clean(rbldnsd):
    async with client(rbldnsd.resolver) as dns:
        result = await check(dns, [ip_zone("dead.bl.test")], IPS[:2])
    assert result.health["dead.bl.test"].status == "dead"
    assert {o.status for o in result.observations} == {"error"}


async def test_domain_lists(rbldnsd):
    dbl = catalog_zone("dbl.spamhaus.org")
    uribl = catalog_zone("multi.uribl.com")
    refused = ZoneSpec(name="refused.uribl.test", kind="domain", listed_codes={}, listed_bits={2: "black"},
                       error_bits={1: "query refused"}, test_listed=None, test_unlisted="invalid")
    targets = [Target("spammy-domain.test", "domain"), Target("phish-domain.test", "domain"),
               Target("clean-domain.test", "domain"), Target("black-domain.test", "domain"),
               Target("grey-domain.test", "domain"), Target("odd-domain.test", "domain"), Target("192.0.2.10", "ip")]
    async with client(rbldnsd.resolver) as dns:
        result = await check(dns, [dbl, uribl, refused], targets)
    seen = by_key(result)
    assert result.health["dbl.spamhaus.org"].ok and result.health["multi.uribl.com"].ok
    assert seen[("spammy-domain.test", "dbl.spamhaus.org")].codes == ("127.0.1.2",)
    assert seen[("phish-domain.test", "dbl.spamhaus.org")].meanings == ("DBL: phishing domain",)
    assert seen[("clean-domain.test", "dbl.spamhaus.org")].status == "clean"
    assert seen[("black-domain.test", "multi.uribl.com")].meanings == ("URIBL black",)
    assert seen[("grey-domain.test", "multi.uribl.com")].meanings == ("URIBL grey",)
    assert seen[("odd-domain.test", "multi.uribl.com")].status == "error"
    # IPs are never sent to domain lists
    assert not any(o.target == "192.0.2.10" for o in result.observations)
    # a URIBL refusing us (127.0.0.1 for everything): refused zone, no listing
    assert result.health["refused.uribl.test"].status == "error"
    assert {o.status for o in result.observations if o.zone == "refused.uribl.test"} == {"error"}


# --- through a resolver ---------------------------------------------------------------------

@pytest.fixture
def resolver(rbldnsd, dns_server_factory):
    return dns_server_factory(forward_zones=("bl.test", "spamhaus.org"), upstream=rbldnsd.resolver)


async def test_through_a_forwarding_resolver(resolver):
    async with client(resolver.resolver) as dns:
        result = await check(dns, [ip_zone("good.bl.test")], IPS[:2])
    assert [o.status for o in result.observations] == ["listed", "listed"]


@pytest.mark.parametrize("lie, expected_health", [("198.51.100.77", "error"), ("127.0.0.2", "broken")])
async def test_lying_resolver_never_produces_listings_or_cleans(resolver, lie, expected_health):
    resolver.mode = "lying"
    resolver.lie_address = lie
    async with client(resolver.resolver) as dns:
        result = await check(dns, [ip_zone("good.bl.test")], IPS)
    assert result.health["good.bl.test"].status == expected_health
    assert {o.status for o in result.observations} == {"error"}
    # without the canary the outside-127/8 lie is still an error per answer
    if lie == "198.51.100.77":
        async with client(resolver.resolver) as dns:
            direct = await check(dns, [ip_zone("good.bl.test")], IPS, test_zones=False)
        assert {o.status for o in direct.observations} == {"error"}


@pytest.mark.parametrize("mode, outcome", [("servfail", "servfail"), ("refused", "refused"), ("drop", "timeout")])
async def test_failing_resolver_gives_errors(resolver, mode, outcome):
    resolver.mode = mode
    async with client(resolver.resolver, timeout=0.6) as dns:
        result = await check(dns, [ip_zone("good.bl.test")], IPS[:3], test_zones=False)
    assert {o.status for o in result.observations} == {"error"}
    assert all(outcome in o.reason for o in result.observations)


async def test_truncated_reply_is_retried_over_tcp(dns_server_factory):
    long_reason = "Listed for sending spam to our traps; see https://bl.example/lookup " + "x" * 600
    server = dns_server_factory({"10.2.0.192.tcp.bl.test": {"A": ["127.0.0.2"], "TXT": [long_reason]},
                                 "2.0.0.127.tcp.bl.test": {"A": ["127.0.0.2"]}}, udp_limit=512)
    async with client(server.resolver) as dns:
        result = await check(dns, [ip_zone("tcp.bl.test")], [Target("192.0.2.10", "ip")])
    (observation,) = result.observations
    assert observation.status == "listed" and observation.txt == long_reason


async def test_resolver_down_gives_errors_quickly():
    async with client(dead_resolver_address(), timeout=1.0) as dns:
        result = await check(dns, [ip_zone("good.bl.test")], IPS[:3])
    assert result.health["good.bl.test"].status == "error"
    assert {o.status for o in result.observations} == {"error"}


async def test_many_targets_bounded_concurrency(rbldnsd):
    """2,000 lookups with 50 in flight: every answer accounted for, none mixed up."""
    targets = list(expand_ips(["192.0.2.0/24"])) + list(expand_ips(["198.51.100.0/24"]))
    zones = [ip_zone("good.bl.test"), catalog_zone("zen.spamhaus.org"), ip_zone("public-resolver.bl.test"),
             ip_zone("dead.bl.test")]
    async with client(rbldnsd.resolver) as dns:
        result = await check(dns, zones, targets, concurrency=50, fetch_txt=False)
    assert len(result.observations) == len(targets) * len(zones)
    listed = {(o.target, o.zone) for o in result.observations if o.status == "listed"}
    assert listed == {("192.0.2.10", "good.bl.test"), ("192.0.2.11", "good.bl.test"),
                      ("192.0.2.20", "zen.spamhaus.org"), ("192.0.2.21", "zen.spamhaus.org")}


# --- the command -----------------------------------------------------------------------

def test_cli_check_json(rbldnsd, tmp_path, capsys):
    config = tmp_path / "repmon.toml"
    config.write_text(f"""
[dns]
resolver = "{rbldnsd.resolver}"
timeout_s = 1.0

[[dnsbl.zones]]
name = "zen.spamhaus.org"

[[dnsbl.zones]]
name = "public-resolver.bl.test"
kind = "ip"
listed_codes = {{ "127.0.0.2" = "spam" }}
error_codes = {{ "127.255.255.254" = "queried through a public resolver" }}
""")
    status = main(["dnsbl", "check", "--json", "--config", str(config), "192.0.2.20", "192.0.2.99"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1  # something is listed
    assert [(r["target"], r["zone"], r["status"]) for r in lines] == [
        ("192.0.2.20", "zen.spamhaus.org", "listed"), ("192.0.2.20", "public-resolver.bl.test", "error"),
        ("192.0.2.99", "zen.spamhaus.org", "clean"), ("192.0.2.99", "public-resolver.bl.test", "error")]
    assert lines[0]["codes"] == ["127.0.0.2", "127.0.0.4"] and lines[0]["reason"].startswith("SBL")
    assert "127.0.0" not in lines[0]["reason"]  # the codes are their own field
    assert "public resolver" in lines[1]["reason"]


def test_cli_table_and_exit_status(rbldnsd, capsys):
    status = main(["dnsbl", "check", "--resolver", rbldnsd.resolver, "--zone", "zen.spamhaus.org", "192.0.2.99"])
    out = capsys.readouterr().out
    assert status == 0
    assert "192.0.2.99" in out and "clean" in out and "1 checks: 0 listed, 0 error, 1 clean" in out


def test_cli_bad_target_is_a_clear_error(capsys):
    status = main(["dnsbl", "check", "--resolver", "127.0.0.1:5300", "not a target"])
    assert status == 2
    assert "not a domain name" in capsys.readouterr().err
