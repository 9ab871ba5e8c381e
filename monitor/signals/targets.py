"""What we ask blocklists about: sending IPs (single addresses and CIDR
ranges, IPv4 and IPv6) and domains, and the query names for them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from monitor.signals.zones import ZoneSpec

TargetKind = Literal["ip", "domain"]


@dataclass(frozen=True, slots=True)
class Target:
    value: str  # normalised: compressed IP text or lower-case ASCII domain
    kind: TargetKind

    @property
    def is_ipv6(self) -> bool:
        return self.kind == "ip" and ":" in self.value


class TargetError(ValueError):
    pass


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a CIDR range; host bits set is a mistake worth naming."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise TargetError(f"{text!r} is not an IP address or CIDR range: {exc}") from None


def range_size(text: str) -> int:
    return parse_network(text).num_addresses


def normalize_domain(text: str) -> str:
    """Lower-case ASCII (IDNA) form; rejects IPs and names that cannot be queried."""
    name = text.strip().rstrip(".").lower()
    if not name or "." not in name:
        raise TargetError(f"{text!r} is not a domain name")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise TargetError(f"{text!r} is an IP address, not a domain")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise TargetError(f"{text!r} is not a valid domain name: {exc}") from None
    if len(ascii_name) > 253 or any(not 0 < len(label) <= 63 for label in ascii_name.split(".")):
        raise TargetError(f"{text!r} is not a valid domain name")
    return ascii_name


def expand_ips(entries: Iterable[str]) -> Iterator[Target]:
    """Every address of every configured range, each once, in order."""
    seen: set[str] = set()
    for entry in entries:
        network = parse_network(entry)
        addresses = [network.network_address] if network.num_addresses == 1 else network
        for address in addresses:
            text = str(address)
            if text not in seen:
                seen.add(text)
                yield Target(text, "ip")


def domain_targets(entries: Iterable[str]) -> Iterator[Target]:
    seen: set[str] = set()
    for entry in entries:
        name = normalize_domain(entry)
        if name not in seen:
            seen.add(name)
            yield Target(name, "domain")


def parse_target(text: str) -> Target:
    """A single target given on the command line."""
    try:
        return Target(str(ipaddress.ip_address(text.strip())), "ip")
    except ValueError:
        return Target(normalize_domain(text), "domain")


def reversed_ip(address: str) -> str:
    """1.2.3.4 -> 4.3.2.1; IPv6 -> 32 reversed nibbles (RFC 5782 section 2.4)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return ".".join(reversed(address.split(".")))
    return ".".join(reversed(ip.exploded.replace(":", "")))


def applies(zone: ZoneSpec, target: Target) -> bool:
    """IPs go to IP lists (IPv6 only where the zone serves it), domains to domain lists.

    Never an IP to a domain list: DBL answers such a query with a code that
    careless monitors read as a listing.
    """
    if zone.kind != target.kind:
        return False
    return not target.is_ipv6 or zone.ipv6


def query_name(zone: ZoneSpec, target: Target) -> str:
    if target.kind == "ip":
        return f"{reversed_ip(target.value)}.{zone.name}"
    return f"{target.value}.{zone.name}"


def test_point_name(zone: ZoneSpec, point: str) -> str:
    """Query name of an RFC 5782 test point (an IP for IP lists, a name for domain lists)."""
    if zone.kind == "ip":
        return f"{reversed_ip(point)}.{zone.name}"
    return f"{point}.{zone.name}"
