"""How much a blocklist listing weighs, and which receivers it affects.

Our own encoding of the weighting hints in the research notes
(../shared/reference/monitoring-anchors.md, "weighting hints" and the proposed
health score): lists that real receivers block on (Spamhaus SBL/CSS/XBL,
Barracuda, SpamCop, Spamhaus DBL) are *major*: a listing makes the subject
`blocked`. Policy lists (PBL), neighbourhood lists (UCEPROTECT 2/3) and
reputation scores weigh little. The big consumer mailbox providers filter on
their own reputation data rather than on Barracuda or SpamCop, so those two
affect the other destinations only; Spamhaus affects every destination
(Gmail's own delivery-error reasons include "IP in RBL").

[[health.zones]] entries in the config come first and override this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONSUMER_PROVIDERS = ("google", "microsoft", "yahoo", "apple")


@dataclass(frozen=True, slots=True)
class ZoneWeight:
    zone: str
    weight: float
    major: bool = False
    codes: frozenset[str] = frozenset()  # empty: any listing code of the zone
    used_by: tuple[str, ...] = ("*",)
    not_used_by: tuple[str, ...] = ()

    def matches(self, zone: str, codes: list[str] | tuple[str, ...]) -> bool:
        if _base(zone) != _base(self.zone):
            return False
        return not self.codes or bool(self.codes & set(codes))

    def affects(self, destination: str) -> bool:
        if destination in self.not_used_by:
            return False
        return "*" in self.used_by or destination in self.used_by


SBL = frozenset({"127.0.0.2", "127.0.0.3", "127.0.0.9", "127.0.0.30"})
XBL = frozenset({"127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"})
PBL = frozenset({"127.0.0.10", "127.0.0.11"})

DEFAULT_WEIGHTS: tuple[ZoneWeight, ...] = (
    ZoneWeight("zen.spamhaus.org", 40, True, SBL),
    ZoneWeight("zen.spamhaus.org", 30, True, XBL),
    ZoneWeight("zen.spamhaus.org", 10, False, PBL),
    ZoneWeight("sbl.spamhaus.org", 40, True),
    ZoneWeight("xbl.spamhaus.org", 30, True),
    ZoneWeight("pbl.spamhaus.org", 10, False),
    ZoneWeight("cbl.abuseat.org", 30, True),
    ZoneWeight("authbl.dq.spamhaus.net", 30, True),
    ZoneWeight("dbl.spamhaus.org", 40, True),
    ZoneWeight("zrd.dq.spamhaus.net", 15, False),
    ZoneWeight("b.barracudacentral.org", 25, True, not_used_by=CONSUMER_PROVIDERS),
    ZoneWeight("bl.spamcop.net", 20, True, not_used_by=CONSUMER_PROVIDERS),
    ZoneWeight("bl.mailspike.net", 15, False, frozenset({"127.0.0.2", "127.0.0.10"})),
    ZoneWeight("bl.mailspike.net", 10, False, frozenset({"127.0.0.11"})),
    ZoneWeight("bl.mailspike.net", 5, False, frozenset({"127.0.0.12"})),
    ZoneWeight("z.mailspike.net", 15, False),
    ZoneWeight("rep.mailspike.net", 5, False),
    ZoneWeight("dnsbl-1.uceprotect.net", 10, False),
    ZoneWeight("dnsbl-2.uceprotect.net", 2, False),
    ZoneWeight("dnsbl-3.uceprotect.net", 2, False),
    ZoneWeight("psbl.surriel.com", 5, False),
    ZoneWeight("bl.score.senderscore.com", 10, False),
    ZoneWeight("multi.surbl.org", 25, False),
    ZoneWeight("multi.uribl.com", 25, False, frozenset({"127.0.0.2", "127.0.0.10", "127.0.0.14"})),
    ZoneWeight("multi.uribl.com", 5, False),
)
UNKNOWN_ZONE_WEIGHT = 10.0


def _base(zone: str) -> str:
    """zone name without a DQS key: KEY.zen.dq.spamhaus.net -> zen.dq.spamhaus.net."""
    zone = zone.lower().rstrip(".")
    for suffix in (".dq.spamhaus.net", ".mail.abusix.zone"):
        if zone.endswith(suffix) and zone.count(".") > suffix.count("."):
            return zone.split(".", 1)[1]
    return zone.removeprefix("<key>.")


@dataclass
class ZoneTable:
    weights: list[ZoneWeight] = field(default_factory=lambda: list(DEFAULT_WEIGHTS))

    @classmethod
    def from_config(cls, configured) -> ZoneTable:  # configured: list[ZoneWeightConfig]
        own = [ZoneWeight(z.zone.lower().rstrip("."), z.weight, z.major, frozenset(z.codes), tuple(z.used_by),
                          tuple(z.not_used_by)) for z in configured]
        return cls(own + list(DEFAULT_WEIGHTS))

    def lookup(self, zone: str, codes: list[str] | tuple[str, ...]) -> ZoneWeight:
        """The first entry for this zone and one of its answer codes. DQS
        zones use their public twin's weights (zen.dq.spamhaus.net = zen)."""
        for name in (zone, _dqs_twin(zone)):
            if name is None:
                continue
            for weight in self.weights:
                if weight.matches(name, codes):
                    return weight
        return ZoneWeight(zone, UNKNOWN_ZONE_WEIGHT, False)


def _dqs_twin(zone: str) -> str | None:
    base = _base(zone)
    if base.endswith(".dq.spamhaus.net"):
        return base.removesuffix(".dq.spamhaus.net") + ".spamhaus.org"
    return None
