"""The sending domains' own DNS authentication: SPF, DMARC, DKIM keys, MTA-STS, TLS-RPT.

checkdmarc does the parsing; it is blocking and has no overall deadline, so
each domain's check runs in a worker thread with a deadline (`AuthChecker`),
pointed at the configured resolver. Every component ends in one status:

- ok       the record is there and valid
- invalid  the record is there and broken (syntax, too many lookups, revoked key)
- missing  the DNS said, definitely, that there is no such record
- error    we could not find out (timeouts, SERVFAIL, a resolver that is down)

"error" is never compared against as if it were a result: a dead resolver
must not look like "DMARC removed". checkdmarc keeps a process-wide DNS cache
and, when a lookup inside an SPF record times out, drops that mechanism with
only a warning - so the cache is cleared before each run and DNS-failure
warnings turn the component into "error".
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.nameserver
import dns.resolver
from checkdmarc import utils as checkdmarc_utils
from checkdmarc.dmarc import check_dmarc
from checkdmarc.mta_sts import (
    MTASTSError,
    MTASTSRecordNotFound,
    download_mta_sts_policy,
    parse_mta_sts_policy,
    parse_mta_sts_record,
    query_mta_sts_record,
)
from checkdmarc.smtp_tls_reporting import check_smtp_tls_reporting
from checkdmarc.spf import check_spf
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from monitor.signals import spf_eval

log = logging.getLogger("repmon.signals.dns_auth")

DNS_FAILURE = re.compile(
    r"timed out|timeout|lifetime expired|servfail|no ?nameservers|failed to answer|connection refused|"
    r"network is unreachable|all nameservers failed|operation timed", re.I)
NOT_FOUND = re.compile(r"does not exist|does not have|not found|no .*record|missing", re.I)
MAX_SPF_LOOKUPS = 10
MAX_SPF_VOID_LOOKUPS = 2
POLICY_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}
STS_MODE_STRENGTH = {"none": 0, "testing": 1, "enforce": 2}


@dataclass(frozen=True, slots=True)
class AuthTarget:
    domain: str
    ips: tuple[str, ...] = ()  # addresses / ranges SPF must authorise
    dkim_selectors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsSettings:
    host: str
    port: int
    timeout_s: float = 3.0  # one lookup
    fetch_mta_sts_policy: bool = False


# --- one domain, blocking ------------------------------------------------------------

def check_domain(target: AuthTarget, settings: DnsSettings) -> dict[str, Any]:
    """All components of one domain; never raises."""
    checkdmarc_utils.DNS_CACHE.clear()  # see the module docstring: stale answers hide changes and outages
    nameservers = [dns.nameserver.Do53Nameserver(settings.host, settings.port)]
    resolver = _resolver(settings)
    result: dict[str, Any] = {"domain": target.domain}
    parts = {
        "spf": lambda: _spf(target, nameservers, resolver, settings),
        "dmarc": lambda: _dmarc(target.domain, nameservers, settings),
        "dkim": lambda: {s: _dkim(target.domain, s, resolver) for s in target.dkim_selectors},
        "mta_sts": lambda: _mta_sts(target.domain, nameservers, settings),
        "tls_rpt": lambda: _tls_rpt(target.domain, nameservers, settings),
    }
    for name, run in parts.items():
        try:
            result[name] = run()
        except Exception as exc:  # noqa: BLE001 - a checkdmarc bug must not end the daemon's job
            log.exception("checking %s of %s failed", name, target.domain)
            result[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return result


def _resolver(settings: DnsSettings) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(settings.host, settings.port)]
    resolver.timeout = settings.timeout_s
    resolver.lifetime = settings.timeout_s
    resolver.cache = None
    return resolver


def _dns_failure(*texts: Any) -> str | None:
    for text in texts:
        for item in (text if isinstance(text, list) else [text]):
            if item and DNS_FAILURE.search(str(item)):
                return str(item)
    return None


def _unusable(raw: dict[str, Any], warnings: list[str] | None = None) -> dict[str, str] | None:
    """Status and error of a checkdmarc result that is not a usable record, else None."""
    failure = _dns_failure(raw.get("error"), warnings or [])
    if failure:
        return {"status": "error", "error": f"DNS lookup failed: {failure}"}
    if raw.get("valid"):
        return None
    error = str(raw.get("error") or "invalid")
    status = "missing" if raw.get("record") is None and NOT_FOUND.search(error) else "invalid"
    return {"status": status, "error": error}


def _spf(target: AuthTarget, nameservers, resolver, settings: DnsSettings) -> dict[str, Any]:
    raw = check_spf(target.domain, nameservers=nameservers, timeout=settings.timeout_s, retries=0)
    warnings = list(raw.get("warnings") or [])
    out: dict[str, Any] = {"record": raw.get("record"), "lookups": raw.get("dns_lookups"),
                           "void_lookups": raw.get("void_dns_lookups"), "warnings": warnings[:20]}
    failed = _unusable(raw, warnings)
    if failed:
        return {**out, **failed}
    lookups, voids = raw.get("dns_lookups") or 0, raw.get("void_dns_lookups") or 0
    if lookups > MAX_SPF_LOOKUPS:
        out.update(status="invalid", error=f"{lookups} DNS lookups, more than the {MAX_SPF_LOOKUPS} RFC 7208 allows")
    elif voids > MAX_SPF_VOID_LOOKUPS:
        out.update(status="invalid",
                   error=f"{voids} void lookups, more than the {MAX_SPF_VOID_LOOKUPS} RFC 7208 allows")
    else:
        out["status"] = "ok"
    resolve = functools.partial(_addresses, resolver)
    coverage = {}
    for entry in target.ips:
        network = ipaddress.ip_network(entry, strict=False)
        verdict, why = spf_eval.evaluate(raw.get("parsed"), raw.get("record"), target.domain, network, resolve)
        coverage[entry] = {"result": verdict, "by": why}
    out["coverage"] = coverage
    return out


def _addresses(resolver: dns.resolver.Resolver, host: str) -> list[str] | None:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            found += [r.address for r in resolver.resolve(host, rdtype, raise_on_no_answer=False)]
        except dns.resolver.NXDOMAIN:
            return found
        except dns.exception.DNSException:
            return None
    return found


def _dmarc(domain: str, nameservers, settings: DnsSettings) -> dict[str, Any]:
    raw = check_dmarc(domain, nameservers=nameservers, timeout=settings.timeout_s, retries=0)
    out: dict[str, Any] = {"record": raw.get("record"), "location": raw.get("location"),
                           "warnings": list(raw.get("warnings") or [])[:20]}
    failed = _unusable(raw)
    if failed:
        return {**out, **failed}
    tags = raw.get("tags") or {}

    def tag(name: str, default: Any = None) -> Any:
        return (tags.get(name) or {}).get("value", default)

    policy = tag("p")
    out.update(
        status="ok", policy=policy, subdomain_policy=tag("sp", policy), pct=int(tag("pct", 100) or 100),
        adkim=tag("adkim", "r"), aspf=tag("aspf", "r"),
        rua=[_uri(u) for u in tag("rua", []) or []], ruf=[_uri(u) for u in tag("ruf", []) or []],
    )
    return out


def _uri(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('scheme', 'mailto')}:{value.get('address', '')}"
    return str(value)


def _dkim(domain: str, selector: str, resolver: dns.resolver.Resolver) -> dict[str, Any]:
    """A DKIM key record (RFC 6376 section 3.6.1): present, parseable, not revoked."""
    name = f"{selector}._domainkey.{domain}"
    try:
        answer = resolver.resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return {"status": "missing", "name": name, "error": "no such name"}
    except dns.resolver.NoAnswer:
        return {"status": "missing", "name": name, "error": "no TXT record"}
    except dns.exception.DNSException as exc:
        return {"status": "error", "name": name, "error": f"DNS lookup failed: {exc}"}
    records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    keys = [r for r in records if "p=" in r.replace(" ", "")]
    if not keys:
        return {"status": "missing", "name": name, "error": "no DKIM key record among the TXT records"}
    if len(keys) > 1:
        return {"status": "invalid", "name": name, "error": "more than one DKIM key record"}
    return {"name": name, **parse_dkim_key(keys[0])}


def parse_dkim_key(record: str) -> dict[str, Any]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        if "=" in part:
            key, _, value = part.partition("=")
            tags[key.strip().lower()] = "".join(value.split())
    out: dict[str, Any] = {"record": record[:500], "key_type": tags.get("k", "rsa")}
    if tags.get("v", "DKIM1") != "DKIM1":
        return {**out, "status": "invalid", "error": f"v={tags['v']} is not DKIM1"}
    if "p" not in tags:
        return {**out, "status": "invalid", "error": "no p= tag"}
    if tags["p"] == "":
        return {**out, "status": "invalid", "revoked": True, "error": "key revoked (empty p=)"}
    try:
        der = base64.b64decode(tags["p"], validate=True)
    except ValueError:
        return {**out, "status": "invalid", "error": "p= is not valid base64"}
    key_type = out["key_type"].lower()
    if key_type == "ed25519":
        if len(der) != 32:
            return {**out, "status": "invalid", "error": f"Ed25519 key of {len(der)} bytes, not 32"}
        return {**out, "status": "ok", "key_bits": 256}
    if key_type != "rsa":
        return {**out, "status": "invalid", "error": f"unknown key type k={key_type}"}

    try:
        public_key = load_der_public_key(der)
    except ValueError as exc:
        return {**out, "status": "invalid", "error": f"p= is not an RSA public key: {exc}"}
    if not isinstance(public_key, rsa.RSAPublicKey):
        return {**out, "status": "invalid", "error": "p= is not an RSA key"}
    bits = public_key.key_size
    if bits < 1024:
        return {**out, "status": "invalid", "key_bits": bits, "error": f"RSA key of {bits} bits (below 1024)"}
    return {**out, "status": "ok", "key_bits": bits}


def _mta_sts(domain: str, nameservers, settings: DnsSettings) -> dict[str, Any]:

    try:
        query = query_mta_sts_record(domain, nameservers=nameservers, timeout=settings.timeout_s, retries=0)
        record = parse_mta_sts_record(query["record"])
    except MTASTSRecordNotFound as exc:
        status = "error" if _dns_failure(str(exc)) else "missing"
        return {"status": status, "error": str(exc)}
    except MTASTSError as exc:
        return {"status": "error" if _dns_failure(str(exc)) else "invalid", "error": str(exc)}
    out: dict[str, Any] = {"status": "ok", "record": query["record"], "id": record["tags"].get("id")}
    if settings.fetch_mta_sts_policy:
        try:
            policy = parse_mta_sts_policy(download_mta_sts_policy(domain)["policy"])["policy"]
        except MTASTSError as exc:
            return {**out, "status": "invalid", "error": f"policy: {exc}"}
        out.update(mode=policy.get("mode"), mx=policy.get("mx"), max_age=policy.get("max_age"))
    return out


def _tls_rpt(domain: str, nameservers, settings: DnsSettings) -> dict[str, Any]:

    raw = check_smtp_tls_reporting(domain, nameservers=nameservers, timeout=settings.timeout_s, retries=0)
    if raw.get("valid"):
        tags = raw.get("tags") or {}
        return {"status": "ok", "rua": list((tags.get("rua") or {}).get("value", []))}
    error = str(raw.get("error") or "invalid")
    if _dns_failure(error):
        return {"status": "error", "error": error}
    return {"status": "missing" if NOT_FOUND.search(error) else "invalid", "error": error}


# --- off the event loop, with a deadline ----------------------------------------------

class AuthChecker:
    """Runs `check_domain` in a small thread pool with an overall deadline.

    A thread cannot be killed, so a check that misses its deadline keeps its
    thread until its own DNS timeouts end; meanwhile the same domain is not
    started again (no pile-up when the resolver is down).
    """

    def __init__(self, max_workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="repmon-dnsauth")
        self._running: set[str] = set()

    async def check(self, target: AuthTarget, settings: DnsSettings, deadline_s: float) -> dict[str, Any]:
        if target.domain in self._running:
            return failed(target.domain, "the previous check of this domain is still running (resolver slow or down?)")
        loop = asyncio.get_running_loop()
        self._running.add(target.domain)
        future = loop.run_in_executor(self._pool, check_domain, target, settings)
        future.add_done_callback(lambda _: self._running.discard(target.domain))
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline_s)
        except TimeoutError:
            return failed(target.domain, f"no result within {deadline_s:g} s (resolver slow or down?)")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def failed(domain: str, reason: str) -> dict[str, Any]:
    error = {"status": "error", "error": reason}
    return {"domain": domain, "spf": dict(error), "dmarc": dict(error), "dkim": {}, "mta_sts": dict(error),
            "tls_rpt": dict(error), "error": reason}


# --- regressions ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    reason: str
    details: dict[str, Any]
    initial: bool = False  # found at the first check, not a change


def baseline(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per component (and per DKIM selector, per SPF address) the newest known result.

    `history` is newest first. Components that ended in "error" are skipped:
    they say nothing about the records.
    """
    base: dict[str, Any] = {}
    for snapshot in history:
        for name in ("spf", "dmarc", "mta_sts", "tls_rpt"):
            part = snapshot.get(name) or {}
            if name not in base and part.get("status") not in (None, "error"):
                base[name] = part
        for selector, part in (snapshot.get("dkim") or {}).items():
            if part.get("status") != "error":
                base.setdefault("dkim", {}).setdefault(selector, part)
        spf = snapshot.get("spf") or {}
        if spf.get("status") not in (None, "error"):
            for ip, cover in (spf.get("coverage") or {}).items():
                if cover.get("result") not in ("unknown", "partial"):
                    base.setdefault("coverage", {}).setdefault(ip, cover)
    return base


def compare(base: dict[str, Any], current: dict[str, Any]) -> list[Finding]:
    """What got worse since `base` (or what is wrong, at the first check)."""
    findings: list[Finding] = []
    findings += _compare_spf(base, current.get("spf") or {})
    findings += _compare_dmarc(base.get("dmarc"), current.get("dmarc") or {})
    for selector, part in (current.get("dkim") or {}).items():
        findings += _compare_dkim(selector, (base.get("dkim") or {}).get(selector), part)
    findings += _compare_sts(base.get("mta_sts"), current.get("mta_sts") or {})
    findings += _compare_simple("tls_rpt", base.get("tls_rpt"), current.get("tls_rpt") or {}, initial_missing=False)
    return findings


def _compare_simple(name: str, before: dict | None, now: dict, *, initial_missing: bool) -> list[Finding]:
    status = now.get("status")
    if status in (None, "error", "ok"):
        return []
    was = (before or {}).get("status")
    if before is None:
        if status == "missing" and not initial_missing:
            return []
        return [Finding(f"{name}_{status}", f"{name}: {now.get('error', status)}", {"error": now.get("error")}, True)]
    if was == status:
        return []
    kind = f"{name}_removed" if status == "missing" else f"{name}_invalid"
    return [Finding(kind, f"{name} was {was}, now {status}: {now.get('error', '')}",
                    {"previous": was, "error": now.get("error"), "record": now.get("record"),
                     "previous_record": before.get("record")})]


def _compare_spf(base: dict[str, Any], now: dict[str, Any]) -> list[Finding]:
    findings = _compare_simple("spf", base.get("spf"), now, initial_missing=True)
    if now.get("status") not in ("ok", "invalid"):
        return findings
    previous_cover = base.get("coverage") or {}
    first = base.get("spf") is None
    for ip, cover in (now.get("coverage") or {}).items():
        result = cover.get("result")
        before = (previous_cover.get(ip) or {}).get("result")
        if result in ("unknown", "partial"):
            if first or before == "pass":
                findings.append(Finding("spf_ip_unverifiable",
                                        f"cannot verify that SPF authorises {ip}: {cover.get('by')}",
                                        {"ip": ip, "result": result, "by": cover.get("by")}, first))
            continue
        if result != "pass" and (before == "pass" or (before is None)):
            findings.append(Finding(
                "spf_ip_not_covered",
                f"SPF of the domain does not authorise {ip} (result {result} by {cover.get('by')})",
                {"ip": ip, "result": result, "by": cover.get("by"), "previous": before, "record": now.get("record")},
                initial=before is None))
        elif result == "pass" and before not in (None, "pass"):
            findings.append(Finding("spf_ip_covered", f"SPF authorises {ip} again",
                                    {"ip": ip, "by": cover.get("by"), "previous": before}))
    return findings


def _compare_dmarc(before: dict | None, now: dict[str, Any]) -> list[Finding]:
    findings = _compare_simple("dmarc", before, now, initial_missing=True)
    if now.get("status") != "ok":
        return findings
    if before is None:
        if now.get("policy") == "none":
            findings.append(Finding("dmarc_policy_none", "DMARC policy is p=none (monitoring only)",
                                    {"record": now.get("record")}, True))
        return findings
    if before.get("status") != "ok":
        return findings
    weaker = []
    for key in ("policy", "subdomain_policy"):
        if POLICY_STRENGTH.get(now.get(key) or "", 0) < POLICY_STRENGTH.get(before.get(key) or "", 0):
            weaker.append(f"{'p' if key == 'policy' else 'sp'}={before.get(key)} -> {now.get(key)}")
    if (now.get("pct") or 100) < (before.get("pct") or 100):
        weaker.append(f"pct={before.get('pct')} -> {now.get('pct')}")
    for key in ("adkim", "aspf"):
        if before.get(key) == "s" and now.get(key) == "r":
            weaker.append(f"{key}=s -> r")
    if weaker:
        findings.append(Finding("dmarc_weakened", "DMARC weakened: " + ", ".join(weaker),
                                {"changes": weaker, "record": now.get("record"),
                                 "previous_record": before.get("record")}))
    if before.get("rua") and not now.get("rua"):
        findings.append(Finding("dmarc_rua_removed", "DMARC no longer asks for aggregate reports (rua removed)",
                                {"previous_rua": before.get("rua"), "record": now.get("record")}))
    return findings


def _compare_dkim(selector: str, before: dict | None, now: dict[str, Any]) -> list[Finding]:
    status = now.get("status")
    if status in (None, "error", "ok"):
        return []
    details = {"selector": selector, "name": now.get("name"), "error": now.get("error")}
    if before is None:
        return [Finding(f"dkim_key_{status}", f"DKIM key {selector}: {now.get('error', status)}", details, True)]
    if before.get("status") == status and before.get("revoked") == now.get("revoked"):
        return []
    if status == "missing":
        kind = "dkim_key_removed"
    elif now.get("revoked"):
        kind = "dkim_key_revoked"
    else:
        kind = "dkim_key_invalid"
    return [Finding(kind, f"DKIM key {selector} was {before.get('status')}, now: {now.get('error', status)}",
                    {**details, "previous": before.get("status")})]


def _compare_sts(before: dict | None, now: dict[str, Any]) -> list[Finding]:
    findings = _compare_simple("mta_sts", before, now, initial_missing=False)
    if now.get("status") == "ok" and before and before.get("status") == "ok" and now.get("mode") and before.get("mode"):
        if STS_MODE_STRENGTH.get(now["mode"], 0) < STS_MODE_STRENGTH.get(before["mode"], 0):
            findings.append(Finding("mta_sts_weakened", f"MTA-STS mode {before['mode']} -> {now['mode']}",
                                    {"previous": before["mode"], "mode": now["mode"]}))
    return findings


def overall_status(snapshot: dict[str, Any]) -> str:
    statuses = [(snapshot.get(n) or {}).get("status") for n in ("spf", "dmarc", "mta_sts", "tls_rpt")]
    statuses += [p.get("status") for p in (snapshot.get("dkim") or {}).values()]
    if all(s == "error" for s in statuses if s):
        return "error"
    return "partial" if any(s == "error" for s in statuses) else "ok"
