"""SPF / DMARC / DKIM / MTA-STS / TLS-RPT checks (checkdmarc) against a real DNS
server, regressions as stored events, and a dead resolver never passing for a
removed record."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from monitor.config import RepmonConfig, parse_config
from monitor.core.db import session_scope
from monitor.signals.auth_cycle import DomainReport, auth_targets, run_auth_cycle
from monitor.signals.dns_auth import AuthChecker, AuthTarget, DnsSettings, check_domain, parse_dkim_key
from monitor.signals.models import DnsAuthCheck, SignalEvent, SignalFetchState
from monitor.signals.spf_eval import evaluate


async def cycle(config: RepmonConfig, engine: Engine, checker: AuthChecker) -> list[DomainReport]:
    """One DNS-authentication cycle over the configured domains."""
    return await run_auth_cycle(config.dns, config.dns_auth, auth_targets(config.dns_auth, config.dnsbl), engine,
                                checker)


def rsa_key_b64(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


KEY = rsa_key_b64()
GOOD = {
    "auth.test": {"TXT": ["v=spf1 ip4:192.0.2.0/28 mx/24 include:_spf.esp.test -all", "google-site-verification=x"],
                  "MX": ["10 mx.auth.test"]},
    "mx.auth.test": {"A": ["203.0.113.25"]},
    "_spf.esp.test": {"TXT": ["v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 ~all"]},
    "_dmarc.auth.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@auth.test; adkim=s; aspf=s"]},
    "s1._domainkey.auth.test": {"TXT": [f"v=DKIM1; k=rsa; p={KEY}"]},
    "s2._domainkey.auth.test": {"CNAME": ["s2.dkim.esp.test"]},
    "s2.dkim.esp.test": {"TXT": [f"v=DKIM1; p={KEY}"]},
    "_mta-sts.auth.test": {"TXT": ["v=STSv1; id=20240101T000000"]},
    "_smtp._tls.auth.test": {"TXT": ["v=TLSRPTv1; rua=mailto:tlsrpt@auth.test"]},
}
IPS = ("192.0.2.5", "198.51.100.7", "203.0.113.99", "203.0.113.0/25", "2001:db8::25")


@pytest.fixture
def auth_dns(dns_server_factory):
    return dns_server_factory({k: dict(v) for k, v in GOOD.items()})


def settings(server, timeout: float = 1.0) -> DnsSettings:
    host, port = server.resolver.split(":")
    return DnsSettings(host, int(port), timeout_s=timeout)


def test_every_component(auth_dns):
    snap = check_domain(AuthTarget("auth.test", IPS, ("s1", "s2", "s3")), settings(auth_dns))
    spf = snap["spf"]
    assert spf["status"] == "ok" and spf["lookups"] == 2
    assert {ip: c["result"] for ip, c in spf["coverage"].items()} == {ip: "pass" for ip in IPS}
    assert spf["coverage"]["203.0.113.99"]["by"] == "mx:auth.test"  # via mx/24
    dmarc = snap["dmarc"]
    assert (dmarc["status"], dmarc["policy"], dmarc["subdomain_policy"], dmarc["adkim"]) == ("ok", "reject",
                                                                                             "quarantine", "s")
    assert dmarc["rua"] == ["mailto:dmarc@auth.test"]
    assert snap["dkim"]["s1"]["status"] == "ok" and snap["dkim"]["s1"]["key_bits"] == 2048
    assert snap["dkim"]["s2"]["status"] == "ok"  # through a CNAME to the ESP
    assert snap["dkim"]["s3"]["status"] == "missing"
    assert snap["mta_sts"] == {"status": "ok", "record": "v=STSv1; id=20240101T000000", "id": "20240101T000000"}
    assert snap["tls_rpt"] == {"status": "ok", "rua": ["mailto:tlsrpt@auth.test"]}


def test_domain_without_records_is_missing_not_error(auth_dns):
    auth_dns.set_records("bare.test", "A", ["192.0.2.1"])
    snap = check_domain(AuthTarget("bare.test", ("192.0.2.1",)), settings(auth_dns))
    assert {k: snap[k]["status"] for k in ("spf", "dmarc", "mta_sts", "tls_rpt")} == dict.fromkeys(
        ("spf", "dmarc", "mta_sts", "tls_rpt"), "missing")


def test_a_timeout_inside_spf_is_an_error_not_a_lost_ip(auth_dns):
    # checkdmarc drops a mechanism whose lookup timed out (with a warning): the IP it
    # covered must not come out "not covered".
    auth_dns.drop("mx.auth.test")
    snap = check_domain(AuthTarget("auth.test", IPS), settings(auth_dns, timeout=0.5))
    assert snap["spf"]["status"] == "error"
    assert "DNS lookup failed" in snap["spf"]["error"]


def test_resolver_down_is_error_everywhere():
    from tests.fixtures.dns_server import dead_resolver_address

    host, port = dead_resolver_address().split(":")
    snap = check_domain(AuthTarget("auth.test", IPS, ("s1",)), DnsSettings(host, int(port), timeout_s=0.5))
    for name in ("spf", "dmarc", "mta_sts", "tls_rpt"):
        assert snap[name]["status"] == "error", (name, snap[name])
    assert snap["dkim"]["s1"]["status"] == "error"


# --- stored checks and regressions ----------------------------------------------------------

def auth_config(server, **extra):
    return parse_config({
        "dns": {"resolver": server.resolver, "timeout_s": 0.5, "attempts": 1},
        "dnsbl": {"ips": ["192.0.2.5", "198.51.100.7", "203.0.113.99"], "domains": ["auth.test"]},
        "dns_auth": {"dkim_selectors": {"auth.test": ["s1", "s2"]}, "timeout_s": 20, "fetch_mta_sts_policy": False,
                     **extra},
    })


def kinds(engine) -> list[str]:
    with session_scope(engine) as session:
        return [e.kind for e in session.execute(select(SignalEvent).order_by(col(SignalEvent.id))).scalars()]


async def test_regressions_become_events(engine, auth_dns):
    config = auth_config(auth_dns)
    assert auth_targets(config.dns_auth, config.dnsbl) == [
        AuthTarget("auth.test", ("192.0.2.5", "198.51.100.7", "203.0.113.99"), ("s1", "s2"))]
    checker = AuthChecker()
    try:
        first = await cycle(config, engine, checker)
        assert first[0].status == "ok" and first[0].findings == []
        assert kinds(engine) == []

        auth_dns.set_records("auth.test", "TXT", ["v=spf1 ip4:192.0.2.0/28 include:_spf.esp.test -all"])  # mx gone
        auth_dns.set_records("_dmarc.auth.test", "TXT", ["v=DMARC1; p=none; adkim=r; aspf=s"])
        auth_dns.set_records("s1._domainkey.auth.test", "TXT", ["v=DKIM1; k=rsa; p="])
        auth_dns.set_records("s2._domainkey.auth.test", "CNAME", None)
        auth_dns.set_records("_mta-sts.auth.test", "TXT", None)
        auth_dns.set_records("_smtp._tls.auth.test", "TXT", None)
        second = await cycle(config, engine, checker)
    finally:
        checker.close()
    found = {f.kind: f for f in second[0].findings}
    assert set(found) == {"spf_ip_not_covered", "dmarc_weakened", "dmarc_rua_removed", "dkim_key_revoked",
                          "dkim_key_removed", "mta_sts_removed", "tls_rpt_removed"}
    assert found["spf_ip_not_covered"].details["ip"] == "203.0.113.99"
    assert found["spf_ip_not_covered"].details["result"] == "fail"
    assert "p=reject -> none" in found["dmarc_weakened"].reason and "adkim=s -> r" in found["dmarc_weakened"].reason
    assert sorted(kinds(engine)) == sorted(found)
    with session_scope(engine) as session:
        checks = session.execute(select(DnsAuthCheck).order_by(DnsAuthCheck.id)).scalars().all()
        assert len(checks) == 2 and checks[1].dmarc["policy"] == "none"
        assert checks[1].spf["coverage"]["203.0.113.99"]["result"] == "fail"


async def test_dead_resolver_is_not_a_regression(engine, auth_dns):
    config = auth_config(auth_dns)
    checker = AuthChecker()
    try:
        await cycle(config, engine, checker)
        auth_dns.mode = "servfail"
        report = await cycle(config, engine, checker)
        assert report[0].status == "error" and report[0].findings == []
        await cycle(config, engine, checker)  # still failing: no second event
        assert kinds(engine) == ["check_failed"]
        with session_scope(engine) as session:
            state = session.get(SignalFetchState, "dns_auth:auth.test")
            assert state.status == "error" and state.consecutive_failures == 2

        auth_dns.mode = "normal"
        auth_dns.set_records("_dmarc.auth.test", "TXT", None)  # now really removed
        report = await cycle(config, engine, checker)
    finally:
        checker.close()
    # compared with the last good check, not with the failed ones
    assert [f.kind for f in report[0].findings] == ["dmarc_removed"]
    assert kinds(engine) == ["check_failed", "dmarc_removed", "check_recovered"]


async def test_first_check_reports_what_is_wrong_as_initial(engine, auth_dns):
    auth_dns.set_records("auth.test", "TXT", ["v=spf1 ip4:192.0.2.0/28 ~all"])
    auth_dns.set_records("_dmarc.auth.test", "TXT", None)
    checker = AuthChecker()
    try:
        config = auth_config(auth_dns)
        report = await cycle(config, engine, checker)
    finally:
        checker.close()
    found = {(f.kind, f.details.get("ip")): f.initial for f in report[0].findings}
    assert found == {("spf_ip_not_covered", "198.51.100.7"): True, ("spf_ip_not_covered", "203.0.113.99"): True,
                     ("dmarc_missing", None): True}


# --- SPF evaluation and DKIM keys, pure ---------------------------------------------------------------

def _ip4(value: str, action: str = "pass") -> dict:
    return {"mechanism": "ip4", "value": value, "action": action}


def _net(text: str):
    return ipaddress.ip_network(text)


def no_lookup(host: str):
    raise AssertionError("no lookup expected")


@pytest.mark.parametrize("parsed, ip, expected", [
    ({"mechanisms": [_ip4("192.0.2.0/24")], "all": "fail"}, "192.0.2.9/32", "pass"),
    ({"mechanisms": [_ip4("192.0.2.0/24")], "all": "fail"}, "198.51.100.1/32", "fail"),
    ({"mechanisms": [_ip4("192.0.2.0/24")], "all": "softfail"}, "198.51.100.1/32", "softfail"),
    ({"mechanisms": [_ip4("192.0.2.9", "fail"), _ip4("192.0.2.0/24")], "all": "neutral"}, "192.0.2.9/32", "fail"),
    ({"mechanisms": [_ip4("192.0.2.0/25")], "all": "fail"}, "192.0.2.0/24", "partial"),
    ({"mechanisms": [{"mechanism": "exists", "value": "%{i}.x.test", "action": "pass"}], "all": "fail"},
     "192.0.2.1/32", "unknown"),
    ({"mechanisms": [], "redirect": {"domain": "r.test", "parsed": {"mechanisms": [_ip4("192.0.2.0/24")],
                                                                     "all": "fail"}}}, "192.0.2.1/32", "pass"),
    ({"mechanisms": [{"mechanism": "include", "value": "i.test", "action": "pass", "parsed": None}], "all": "fail"},
     "192.0.2.1/32", "unknown"),
    ({"mechanisms": [], "all": None}, "192.0.2.1/32", "neutral"),
])
def test_spf_evaluation(parsed, ip, expected):
    verdict, _ = evaluate(parsed, "", "d.test", _net(ip), no_lookup)
    assert verdict == expected


def test_spf_mx_lookup_failure_is_unknown():
    parsed = {"mechanisms": [{"mechanism": "mx", "value": "d.test", "action": "pass",
                              "hosts": [{"hostname": "mx.d.test", "preference": 10}]}], "all": "fail"}
    assert evaluate(parsed, "v=spf1 mx -all", "d.test", _net("192.0.2.1/32"), lambda h: None)[0] == "unknown"
    assert evaluate(parsed, "v=spf1 mx -all", "d.test", _net("192.0.2.1/32"), lambda h: ["192.0.2.1"])[0] == "pass"
    assert evaluate(parsed, "v=spf1 mx/24 -all", "d.test", _net("192.0.2.77/32"), lambda h: ["192.0.2.1"])[0] == "pass"
    assert evaluate(parsed, "v=spf1 mx -all", "d.test", _net("192.0.2.77/32"), lambda h: ["192.0.2.1"])[0] == "fail"


def test_dkim_keys():
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert parse_dkim_key(f"v=DKIM1; k=ed25519; p={base64.b64encode(ed).decode()}")["status"] == "ok"
    assert parse_dkim_key("v=DKIM1; p=")["revoked"] is True
    assert parse_dkim_key("v=DKIM1; p=!!!")["error"] == "p= is not valid base64"
    weak = rsa.RSAPublicNumbers(65537, (1 << 511) + 2 * 12345 + 1).public_key()  # cryptography will not generate one
    weak_b64 = base64.b64encode(weak.public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    assert "below 1024" in parse_dkim_key(f"v=DKIM1; p={weak_b64}")["error"]
    assert parse_dkim_key("v=DKIM2; p=abc")["status"] == "invalid"
    assert parse_dkim_key(f"v=DKIM1; k=rsa; t=s; p={KEY[:40]} {KEY[40:]}")["status"] == "ok"  # spaces in p=
