"""Does an SPF record authorise a sending IP (or a whole sending range)?

checkdmarc parses the record and resolves its `a`, `mx` and `include`
mechanisms into a tree; this module walks that tree the way RFC 7208's
check_host() walks the record: mechanisms in order, first match wins, then
`redirect`, then `all`. What cannot be decided without the actual message
(`exists`, `ptr`, macros) or because a lookup failed gives "unknown" - never
a verdict we cannot back up.

For a CIDR range the answer is "pass" only when the whole range lies inside
authorised networks, "partial" when only part of it does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Verdict = Literal["pass", "fail", "softfail", "neutral", "unknown", "partial"]
Resolve = Callable[[str], list[str] | None]  # host -> addresses, None when the lookup failed

MAX_DEPTH = 10
_MX_TERM = re.compile(r"(?:^|\s)[+\-~?]?mx(?::(?P<domain>[^\s/]+))?(?:/(?P<v4>\d+))?(?://(?P<v6>\d+))?(?=\s|$)", re.I)


def evaluate(parsed: dict[str, Any] | None, record: str | None, domain: str, network: Network,
             resolve: Resolve, depth: int = 0) -> tuple[Verdict, str]:
    """The SPF result for mail from `network`, and the mechanism that decided it."""
    if parsed is None:
        return "unknown", f"record of {domain} could not be parsed"
    if depth > MAX_DEPTH:
        return "unknown", "include/redirect nesting too deep"
    mx_prefixes = _mx_prefixes(record or "", domain)
    for mechanism in parsed.get("mechanisms", []):
        kind = mechanism.get("mechanism")
        value = str(mechanism.get("value", ""))
        action = mechanism.get("action", "pass")
        label = f"{_qualifier(action)}{kind}:{value}" if value else f"{_qualifier(action)}{kind}"
        if "%" in value or kind in ("exists", "ptr"):
            return "unknown", f"{label} depends on the message (macro, exists or ptr)"
        if kind in ("ip4", "ip6"):
            match = _match(network, [value])
        elif kind == "a":
            match = _match(network, mechanism.get("addresses", []))
        elif kind == "mx":
            match = _match_mx(network, mechanism, mx_prefixes, resolve)
        elif kind == "include":
            verdict, why = evaluate(mechanism.get("parsed"), mechanism.get("record"), value, network, resolve,
                                    depth + 1)
            if verdict in ("unknown", "partial"):
                return verdict, f"include:{value}: {why}"
            match = "yes" if verdict == "pass" else "no"
        else:
            return "unknown", f"mechanism {kind} not understood"
        if match == "yes":
            return action, label
        if match in ("unknown", "partial"):
            return match, label  # type: ignore[return-value]
    redirect = parsed.get("redirect")
    if redirect:
        verdict, why = evaluate(redirect.get("parsed"), redirect.get("record"), redirect.get("domain", ""),
                                network, resolve, depth + 1)
        return verdict, f"redirect={redirect.get('domain')}: {why}"
    verdict = parsed.get("all") or "neutral"
    return verdict, f"{_qualifier(verdict)}all" if parsed.get("all") else "no match (default neutral)"


def _qualifier(action: str) -> str:
    return {"pass": "", "fail": "-", "softfail": "~", "neutral": "?"}.get(action, "")


def _match(network: Network, entries: list[str]) -> str:
    """yes: inside one entry; partial: overlaps but not inside; no: disjoint from all."""
    partial = False
    for entry in entries:
        try:
            allowed = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if allowed.version != network.version:
            continue
        if network.subnet_of(allowed):  # type: ignore[arg-type]
            return "yes"
        if network.overlaps(allowed):
            partial = True
    return "partial" if partial else "no"


def _match_mx(network: Network, mechanism: dict[str, Any], prefixes: dict[str, tuple[int | None, int | None]],
              resolve: Resolve) -> str:
    v4, v6 = prefixes.get(str(mechanism.get("value", "")).lower(), (None, None))
    entries: list[str] = []
    for host in mechanism.get("hosts", []):
        addresses = resolve(host["hostname"])
        if addresses is None:
            return "unknown"
        for address in addresses:
            prefix = v6 if ":" in address else v4
            entries.append(f"{address}/{prefix}" if prefix is not None else address)
    return _match(network, entries)


def _mx_prefixes(record: str, domain: str) -> dict[str, tuple[int | None, int | None]]:
    """checkdmarc keeps an mx term's domain but not its CIDR suffix: read it from the record text."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for match in _MX_TERM.finditer(record):
        target = (match.group("domain") or domain).lower().rstrip(".")
        v4 = int(match.group("v4")) if match.group("v4") else None
        v6 = int(match.group("v6")) if match.group("v6") else None
        out[target] = (v4, v6)
    return out
