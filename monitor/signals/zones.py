"""DNS blocklist zones: what their answers mean, and how to read one answer.

The catalog below is our own encoding of the operators' documentation (the
research notes in ../shared/reference/dnsbl-zones.tsv list the sources; a test
reads that file and checks this module agrees with it). Each zone says which
A answers mean *listed*; every other answer - a documented error code, an
address outside 127.0.0.0/8, a code nobody documented - is an error. That is
the one rule that keeps a monitor from crying "listed" when the blocklist was
really saying "you queried me wrongly".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

ZoneKind = Literal["ip", "domain"]
Status = Literal["listed", "clean", "error"]

DQS_KEY_PLACEHOLDER = "<key>"
SPAMHAUS_DELIST = "https://check.spamhaus.org/"

# RFC 5782 section 5: test points every DNSxL must (not) contain.
IP_TEST_LISTED = "127.0.0.2"
IP_TEST_UNLISTED = "127.0.0.1"
DOMAIN_TEST_LISTED = "test"
DOMAIN_TEST_UNLISTED = "invalid"

LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """One blocklist zone ready to query.

    `name` is the query suffix (with a DQS key already substituted);
    `display` is what logs, events and the CLI show - never the key.
    """

    name: str
    kind: ZoneKind
    listed_codes: Mapping[str, str]
    error_codes: Mapping[str, str] = field(default_factory=dict)
    # Answers that mean "known, and not listed" (reputation-scale zones).
    clean_codes: Mapping[str, str] = field(default_factory=dict)
    # Bitmask zones (SURBL, URIBL): last-octet bit -> meaning.
    listed_bits: Mapping[int, str] = field(default_factory=dict)
    error_bits: Mapping[int, str] = field(default_factory=dict)
    # RFC 5782 test points; None = the zone publishes no such entry.
    test_listed: str | None = None
    test_unlisted: str | None = None
    ipv6: bool = False
    delist_url: str | None = None
    display: str = ""

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", self.name)

    @property
    def is_bitmask(self) -> bool:
        return bool(self.listed_bits)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one DNS answer from one zone means."""

    status: Status
    codes: tuple[str, ...] = ()
    meanings: tuple[str, ...] = ()
    reason: str = ""


def classify(zone: ZoneSpec, answers: Iterable[str]) -> Verdict:
    """Read the A records of a successful (NOERROR/NXDOMAIN) lookup.

    No A record means not listed. Every A record must be one of the zone's
    listing (or clean) codes; a single unexplained record makes the whole
    answer an error, because a resolver that rewrites or a zone that refuses
    us can mix real-looking codes with junk.
    """
    codes = tuple(sorted(set(answers), key=_sort_key))
    if not codes:
        return Verdict("clean", reason="not listed")
    listed: list[tuple[str, tuple[str, ...]]] = []
    errors: list[str] = []
    for code in codes:
        kind, meanings = _read_code(zone, code)
        if kind == "listed":
            listed.append((code, meanings))
        elif kind == "error":
            errors.append(f"{code}: {'; '.join(meanings)}")
    if errors:
        return Verdict("error", codes, reason="; ".join(errors))
    if listed:
        # The reason is the meanings only, in the order of the codes: the codes
        # are a field of their own, and every reader that shows both ("127.0.0.2:
        # SBL") printed the code twice when the reason repeated it.
        return Verdict("listed", tuple(c for c, _ in listed), tuple(m for _, ms in listed for m in ms),
                       reason="; ".join(" + ".join(ms) for _, ms in listed))
    return Verdict("clean", codes, tuple(zone.clean_codes[c] for c in codes),
                   reason="; ".join(f"{c} {zone.clean_codes[c]}" for c in codes))


def _read_code(zone: ZoneSpec, code: str) -> tuple[str, tuple[str, ...]]:
    try:
        address = ipaddress.ip_address(code)
    except ValueError:
        return "error", ("not an IPv4 address",)
    if address.version != 4 or address not in LOOPBACK_V4:
        # Typically a resolver rewriting NXDOMAIN to an ad or portal page.
        return "error", ("answer outside 127.0.0.0/8 (resolver rewriting answers?)",)
    if code in zone.error_codes:
        return "error", (zone.error_codes[code],)
    if code in zone.listed_codes:
        return "listed", (zone.listed_codes[code],)
    if code in zone.clean_codes:
        return "clean", (zone.clean_codes[code],)
    if zone.is_bitmask:
        return _read_bits(zone, code)
    return "error", (f"undocumented answer for {zone.display}",)


def _read_bits(zone: ZoneSpec, code: str) -> tuple[str, tuple[str, ...]]:
    last = int(code.rsplit(".", 1)[1])
    for bit, meaning in zone.error_bits.items():
        if last & bit:
            return "error", (meaning,)
    known = 0
    for bit in zone.listed_bits:
        known |= bit
    if last == 0 or last & ~known:
        return "error", (f"undocumented bits in answer for {zone.display}",)
    return "listed", tuple(meaning for bit, meaning in sorted(zone.listed_bits.items()) if last & bit)


def _sort_key(code: str) -> tuple[int, ...] | tuple[int, str]:
    try:
        return tuple(int(x) for x in code.split("."))
    except ValueError:
        return (999, code)


# --- the catalog -----------------------------------------------------------------

CatalogStatus = Literal["active", "retired", "no_endpoint", "score", "unverified"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A zone as the catalog knows it; `name` may hold the <key> placeholder."""

    name: str
    kind: ZoneKind
    status: CatalogStatus
    listed_codes: Mapping[str, str] = field(default_factory=dict)
    error_codes: Mapping[str, str] = field(default_factory=dict)
    clean_codes: Mapping[str, str] = field(default_factory=dict)
    listed_bits: Mapping[int, str] = field(default_factory=dict)
    error_bits: Mapping[int, str] = field(default_factory=dict)
    test_listed: str | None = None
    test_unlisted: str | None = None
    ipv6: bool = False
    delist_url: str | None = None
    note: str = ""  # why a zone cannot be used, shown in config errors
    default: bool = False  # part of the shipped default set
    default_with_key: bool = False  # part of the default set when a DQS key is configured

    @property
    def needs_key(self) -> bool:
        return DQS_KEY_PLACEHOLDER in self.name


def _codes(prefix: str, numbers: Iterable[int], meaning: str) -> dict[str, str]:
    return {f"{prefix}.{n}": meaning for n in numbers}


# Spamhaus's error range: never a reputation answer.
SPAMHAUS_ERRORS = {
    "127.255.255.252": "typo in the DNSBL name (Spamhaus error code)",
    "127.255.255.254": ("query through a public/open resolver or a resolver without attributable rDNS "
                        "(Spamhaus error code)"),
    "127.255.255.255": "excessive number of queries (Spamhaus error code)",
}
DQS_ERRORS = {
    **SPAMHAUS_ERRORS,
    "127.255.255.250": "DQS key disabled or invalid (Spamhaus error code)",
    "127.255.255.251": "DQS key rejected (Spamhaus error code)",
}
ZEN_CODES = {
    "127.0.0.2": "SBL: direct spam source or operation",
    "127.0.0.3": "SBL-CSS: automated snowshoe detection",
    "127.0.0.4": "XBL: exploited or compromised host",
    "127.0.0.5": "XBL",
    "127.0.0.6": "XBL",
    "127.0.0.7": "XBL",
    "127.0.0.9": "SBL DROP/EDROP: hijacked or criminal netblock",
    "127.0.0.10": "PBL (ISP maintained): range should not send direct-to-MX",
    "127.0.0.11": "PBL (Spamhaus maintained): range should not send direct-to-MX",
    "127.0.0.30": "BCL: botnet controller",
}
SBL_CODES = {k: ZEN_CODES[k] for k in ("127.0.0.2", "127.0.0.3", "127.0.0.9", "127.0.0.30")}
XBL_CODES = {k: ZEN_CODES[k] for k in ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")}
PBL_CODES = {k: ZEN_CODES[k] for k in ("127.0.0.10", "127.0.0.11")}
DBL_CODES = {
    "127.0.1.2": "DBL: spam or low-reputation domain",
    "127.0.1.4": "DBL: phishing domain",
    "127.0.1.5": "DBL: malware domain",
    "127.0.1.6": "DBL: botnet command-and-control domain",
    "127.0.1.102": "DBL: abused legitimate domain (spam)",
    "127.0.1.103": "DBL: abused redirector or URL shortener",
    "127.0.1.104": "DBL: abused legitimate domain (phishing)",
    "127.0.1.105": "DBL: abused legitimate domain (malware)",
    "127.0.1.106": "DBL: abused legitimate domain (botnet C&C)",
}
DBL_ERRORS = {"127.0.1.255": "IP queries not allowed on a domain list"}
ZRD_CODES = {f"127.0.2.{n}": f"ZRD: domain first seen {n - 1}-{n} hours ago" for n in range(3, 25)}
ZRD_CODES["127.0.2.2"] = "ZRD: domain first seen 0-2 hours ago"
ZRD_ERRORS = {"127.0.2.255": "IP queries not allowed on a domain list"}
MAILSPIKE_BL = {
    "127.0.0.2": "Mailspike Z: part of an active spam wave",
    "127.0.0.10": "Mailspike L5: worst reputation",
    "127.0.0.11": "Mailspike L4: very bad reputation",
    "127.0.0.12": "Mailspike L3: bad reputation",
}
MAILSPIKE_REP_CLEAN = {
    "127.0.0.13": "Mailspike L2: neutral",
    "127.0.0.14": "Mailspike L1: neutral",
    "127.0.0.15": "Mailspike H0: neutral",
    "127.0.0.16": "Mailspike H1: neutral",
    "127.0.0.17": "Mailspike H2: possibly good",
    "127.0.0.18": "Mailspike H3: good",
    "127.0.0.19": "Mailspike H4: very good",
    "127.0.0.20": "Mailspike H5: excellent",
}
RETIRED = "zone retired"


def _ip(name: str, listed: Mapping[str, str], errors: Mapping[str, str] | None = None, *,
        delist: str | None = None, ipv6: bool = False, test_listed: str | None = IP_TEST_LISTED,
        default: bool = False, default_with_key: bool = False, clean: Mapping[str, str] | None = None,
        status: CatalogStatus = "active", note: str = "") -> CatalogEntry:
    return CatalogEntry(name=name, kind="ip", status=status, listed_codes=dict(listed),
                        error_codes=dict(errors or {}), clean_codes=dict(clean or {}),
                        test_listed=test_listed, test_unlisted=IP_TEST_UNLISTED, ipv6=ipv6,
                        delist_url=delist, default=default, default_with_key=default_with_key, note=note)


def _domain(name: str, listed: Mapping[str, str], errors: Mapping[str, str] | None = None, *,
            delist: str | None = None, test_listed: str | None = DOMAIN_TEST_LISTED,
            default: bool = False, default_with_key: bool = False, listed_bits: Mapping[int, str] | None = None,
            error_bits: Mapping[int, str] | None = None, status: CatalogStatus = "active",
            note: str = "") -> CatalogEntry:
    return CatalogEntry(name=name, kind="domain", status=status, listed_codes=dict(listed),
                        error_codes=dict(errors or {}), listed_bits=dict(listed_bits or {}),
                        error_bits=dict(error_bits or {}), test_listed=test_listed,
                        test_unlisted=DOMAIN_TEST_UNLISTED, delist_url=delist, default=default,
                        default_with_key=default_with_key, note=note)


_CATALOG: list[CatalogEntry] = [
    # Spamhaus public mirrors: free only for small non-commercial use, and
    # only through an own recursive resolver (public resolvers get .254).
    _ip("zen.spamhaus.org", ZEN_CODES, SPAMHAUS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True, default=True),
    _ip("sbl.spamhaus.org", SBL_CODES, SPAMHAUS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True),
    # The 127.0.0.2 test point answers with each list's own code (.4 on XBL, .10 on PBL).
    _ip("xbl.spamhaus.org", XBL_CODES, SPAMHAUS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True),
    _ip("pbl.spamhaus.org", PBL_CODES, SPAMHAUS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True),
    _domain("dbl.spamhaus.org", DBL_CODES, {**DBL_ERRORS, **SPAMHAUS_ERRORS}, delist=SPAMHAUS_DELIST,
            test_listed="dbltest.com", default=True),
    # Spamhaus Data Query Service: the key is part of the query name.
    _ip("<key>.zen.dq.spamhaus.net", ZEN_CODES, DQS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True,
        default_with_key=True),
    _ip("<key>.sbl.dq.spamhaus.net", SBL_CODES, DQS_ERRORS, delist=SPAMHAUS_DELIST, ipv6=True),
    _domain("<key>.dbl.dq.spamhaus.net", DBL_CODES, {**DBL_ERRORS, **DQS_ERRORS}, delist=SPAMHAUS_DELIST,
            test_listed="dbltest.com", default_with_key=True),
    # ZRD entries expire after 24 h; no documented positive test entry.
    _domain("<key>.zrd.dq.spamhaus.net", ZRD_CODES, {**ZRD_ERRORS, **DQS_ERRORS}, delist=None,
            test_listed=None, default_with_key=True),
    _ip("<key>.authbl.dq.spamhaus.net", {"127.0.0.20": "AuthBL: seen abusing SMTP AUTH"}, DQS_ERRORS,
        delist=SPAMHAUS_DELIST, test_listed=None),
    # CBL is XBL's source: do not query it together with ZEN.
    _ip("cbl.abuseat.org", {"127.0.0.2": "CBL: exploited or compromised host"}, SPAMHAUS_ERRORS,
        delist=SPAMHAUS_DELIST),
    # Barracuda answers only registered resolvers: silence is an error, not clean.
    _ip("b.barracudacentral.org", {"127.0.0.2": "Barracuda BRBL: listed"},
        delist="https://www.barracudacentral.org/rbl/removal-request", default=True),
    _ip("bl.spamcop.net", {"127.0.0.2": "SpamCop: reported by SpamCop users or traps"},
        delist="https://www.spamcop.net/bl.shtml", default=True),
    _ip("dnsbl-1.uceprotect.net", {"127.0.0.2": "UCEPROTECT level 1: this IP hit spamtraps"},
        delist="https://www.uceprotect.net/en/rblcheck.php", default=True),
    _ip("dnsbl-2.uceprotect.net", {"127.0.0.2": "UCEPROTECT level 2: netblock has many level-1 listings"},
        delist="https://www.uceprotect.net/en/rblcheck.php"),
    _ip("dnsbl-3.uceprotect.net", {"127.0.0.2": "UCEPROTECT level 3: whole network (ASN) listed"},
        delist="https://www.uceprotect.net/en/rblcheck.php"),
    _ip("psbl.surriel.com", {"127.0.0.2": "PSBL: sent to a spamtrap"},
        delist="https://psbl.org/remove", default=True),
    _ip("bl.mailspike.net", MAILSPIKE_BL, delist="https://mailspike.org/", default=True),
    _ip("z.mailspike.net", {"127.0.0.2": "Mailspike Z: part of an active spam wave"}, delist="https://mailspike.org/"),
    # A reputation zone: it answers for good IPs too, so only L3-L5 count as listed.
    _ip("rep.mailspike.net", {k: MAILSPIKE_BL[k] for k in ("127.0.0.10", "127.0.0.11", "127.0.0.12")},
        clean=MAILSPIKE_REP_CLEAN, delist="https://mailspike.org/", test_listed=None),
    _domain("multi.surbl.org", {}, delist="https://surbl.org/surbl-analysis",
            listed_bits={4: "SURBL DM", 8: "SURBL PH (phishing)", 16: "SURBL MW (malware)", 32: "SURBL CT",
                         64: "SURBL ABUSE (spam)", 128: "SURBL CR (cracked site)"},
            error_bits={1: "SURBL: our queries are blocked"},
            # SURBL's own test entry sets bits outside this map; rely on the negative test.
            test_listed=None, default=True),
    _domain("multi.uribl.com", {}, {"127.0.0.1": "URIBL: query refused (public resolver or excessive volume)"},
            delist="https://admin.uribl.com/",
            listed_bits={2: "URIBL black", 4: "URIBL grey", 8: "URIBL red"},
            error_bits={1: "URIBL: query refused"}, test_listed="test.uribl.com", default=True),
    _ip("bl.score.senderscore.com", _codes("127.0.0", range(1, 27), "Validity RNBL: listed"),
        {"127.255.255.255": "blocked querier (MyValidity registration required)"},
        delist="https://senderscore.org/", test_listed=None),
    _ip("score.senderscore.com", {}, status="score",
        note="a reputation score (127.0.4.N = Sender Score N), not a blocklist"),
    _ip("<key>.combined.mail.abusix.zone", {}, status="unverified", test_listed=None,
        note="Abusix sub-codes are not verified: give listed_codes from the Abusix documentation"),
    _ip("ivmSIP", {}, status="no_endpoint",
        note="Invaluement has no public zone: configure your subscriber hostname and codes"),
    _ip("ivmSIP/24", {}, status="no_endpoint",
        note="Invaluement has no public zone: configure your subscriber hostname and codes"),
    _domain("ivmURI", {}, status="no_endpoint",
            note="Invaluement has no public zone: configure your subscriber hostname and codes"),
    _ip("dnsbl.sorbs.net", {}, status="retired", note="SORBS was decommissioned on 2024-06-05"),
    _ip("dnsbl.ahbl.org", {}, status="retired", note="AHBL shut down and lists every IP since 2015-01-01"),
    _domain("rhsbl.ahbl.org", {}, status="retired", note="AHBL shut down and lists every domain since 2015-01-01"),
    _ip("ubl.unsubscore.com", {}, status="retired", note="LashBack UBL is offline"),
]

CATALOG: dict[str, CatalogEntry] = {entry.name.lower(): entry for entry in _CATALOG}


def catalog_entry(name: str) -> CatalogEntry | None:
    """The catalog entry for a configured zone name (a DQS name may carry a real key)."""
    name = name.lower().rstrip(".")
    if name in CATALOG:
        return CATALOG[name]
    if name.endswith(".dq.spamhaus.net") or name.endswith(".mail.abusix.zone"):
        templated = DQS_KEY_PLACEHOLDER + "." + name.split(".", 1)[1]
        return CATALOG.get(templated)
    return None


def default_zone_names(with_key: bool) -> list[str]:
    """The shipped default set; a DQS key swaps Spamhaus's public mirrors for DQS."""
    names = []
    for entry in _CATALOG:
        if with_key and entry.default_with_key:
            names.append(entry.name)
        elif entry.default and not (with_key and entry.name.endswith("spamhaus.org")):
            names.append(entry.name)
    return names


def substitute_key(name: str, key: str | None) -> str:
    if DQS_KEY_PLACEHOLDER in name:
        if not key:
            raise ValueError(f"zone {name} needs a DQS key ([dnsbl] dqs_key or dqs_key_env)")
        return name.replace(DQS_KEY_PLACEHOLDER, key)
    return name


def display_name(name: str, key: str | None) -> str:
    """A zone name safe to show: a DQS key is replaced by the placeholder."""
    if key and key in name:
        return name.replace(key, DQS_KEY_PLACEHOLDER)
    return name


def is_valid_code(code: str) -> bool:
    try:
        address = ipaddress.ip_address(code)
    except ValueError:
        return False
    return address.version == 4 and address in LOOPBACK_V4


# --- from configuration -------------------------------------------------------------

def zone_spec(config, key: str | None) -> ZoneSpec:  # config: monitor.config.DnsblZoneConfig
    """A configured zone merged with its catalog entry; ValueError says what is wrong."""
    name = config.name.strip().lower().rstrip(".")
    entry = catalog_entry(name)
    if entry is not None and entry.status in ("retired", "no_endpoint", "score"):
        raise ValueError(f"zone {config.name} cannot be used: {entry.note}")
    kind = config.kind or (entry.kind if entry else None)
    if kind is None:
        raise ValueError(f"zone {config.name}: kind (ip or domain) is required for zones outside the built-in catalog")
    if entry is not None and config.kind and config.kind != entry.kind:
        raise ValueError(f"zone {config.name} is a list of {entry.kind}s, not {config.kind}s")

    def pick(given, catalog_value):
        return dict(given) if given is not None else dict(catalog_value if entry else {})

    listed = pick(config.listed_codes, entry.listed_codes if entry else {})
    errors = pick(config.error_codes, entry.error_codes if entry else {})
    clean = pick(config.clean_codes, entry.clean_codes if entry else {})
    listed_bits = _bits(config.listed_bits, entry.listed_bits if entry else {}, config.name, "listed_bits")
    error_bits = _bits(config.error_bits, entry.error_bits if entry else {}, config.name, "error_bits")
    if not listed and not listed_bits:
        why = f" ({entry.note})" if entry is not None and entry.note else ""
        raise ValueError(f"zone {config.name}: listed_codes is required{why}")
    for label, codes in (("listed_codes", listed), ("clean_codes", clean)):
        for code in codes:
            if not is_valid_code(code):
                raise ValueError(f"zone {config.name}: {label} {code!r} is not an address in 127.0.0.0/8")
    for code in errors:
        try:
            ipaddress.IPv4Address(code)
        except ValueError:
            raise ValueError(f"zone {config.name}: error_codes {code!r} is not an IPv4 address") from None
    overlap = (set(listed) | set(clean)) & set(errors)
    if overlap:
        raise ValueError(f"zone {config.name}: codes both listing/clean and error: {', '.join(sorted(overlap))}")
    if set(listed) & set(clean):
        both = ", ".join(sorted(set(listed) & set(clean)))
        raise ValueError(f"zone {config.name}: codes both listed and clean: {both}")

    default_listed = IP_TEST_LISTED if kind == "ip" else DOMAIN_TEST_LISTED
    default_unlisted = IP_TEST_UNLISTED if kind == "ip" else DOMAIN_TEST_UNLISTED
    test_listed = _test_point(config.test_listed, entry.test_listed if entry else default_listed)
    test_unlisted = _test_point(config.test_unlisted, entry.test_unlisted if entry else default_unlisted)
    for point in (test_listed, test_unlisted):
        if point is not None and kind == "ip":
            try:
                ipaddress.ip_address(point)
            except ValueError:
                raise ValueError(
                    f"zone {config.name}: test point {point!r} of an IP list must be an IP address") from None
    _check_zone_name(name)
    query = substitute_key(name, key) if DQS_KEY_PLACEHOLDER in name else name
    return ZoneSpec(
        name=query, kind=kind, listed_codes=listed, error_codes=errors, clean_codes=clean,
        listed_bits=listed_bits, error_bits=error_bits, test_listed=test_listed, test_unlisted=test_unlisted,
        ipv6=config.ipv6 if config.ipv6 is not None else (entry.ipv6 if entry else False),
        delist_url=config.delist_url if config.delist_url is not None else (entry.delist_url if entry else None),
        display=_safe_display(name, key),
    )


def _bits(given: Mapping[str, str] | None, catalog_value: Mapping[int, str], zone: str, label: str) -> dict[int, str]:
    if given is None:
        return dict(catalog_value)
    out = {}
    for bit, meaning in given.items():
        try:
            number = int(bit)
        except ValueError:
            raise ValueError(f"zone {zone}: {label} key {bit!r} is not a number") from None
        if not 0 < number < 256:
            raise ValueError(f"zone {zone}: {label} {number} is not a bit of the last octet (1-128)")
        out[number] = meaning
    return out


def _test_point(given: str | None, fallback: str | None) -> str | None:
    if given is None:
        return fallback
    return given.strip() or None


def _check_zone_name(name: str) -> None:
    if "." not in name or any(not label for label in name.split(".")):
        raise ValueError(f"zone name {name!r} is not a domain name")
    if len(name) > 200:
        raise ValueError(f"zone name {name!r} is too long to leave room for a query")


def _safe_display(name: str, key: str | None) -> str:
    """Never show a DQS/API key, whether configured or written into the name."""
    if DQS_KEY_PLACEHOLDER in name:
        return name
    if key and key.lower() in name:
        return name.replace(key.lower(), DQS_KEY_PLACEHOLDER)
    if name.endswith(".dq.spamhaus.net") or name.endswith(".mail.abusix.zone"):
        return DQS_KEY_PLACEHOLDER + "." + name.split(".", 1)[1]
    return name


def build_zones(dnsbl) -> list[ZoneSpec]:  # dnsbl: monitor.config.DnsblConfig
    """The zones of a configuration, or the shipped defaults when it lists none."""
    key = dnsbl.resolve_dqs_key()
    if dnsbl.zones is not None:
        return [zone_spec(zone, key) for zone in dnsbl.zones]
    specs = []
    for name in default_zone_names(with_key=bool(key)):
        entry = CATALOG[name.lower()]
        specs.append(_spec_from_entry(entry, key))
    return specs


def _spec_from_entry(entry: CatalogEntry, key: str | None) -> ZoneSpec:
    return ZoneSpec(
        name=substitute_key(entry.name, key), kind=entry.kind, listed_codes=dict(entry.listed_codes),
        error_codes=dict(entry.error_codes), clean_codes=dict(entry.clean_codes),
        listed_bits=dict(entry.listed_bits), error_bits=dict(entry.error_bits), test_listed=entry.test_listed,
        test_unlisted=entry.test_unlisted, ipv6=entry.ipv6, delist_url=entry.delist_url, display=entry.name,
    )
