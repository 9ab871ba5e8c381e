"""Reading blocklist answers: only documented listing codes are listings."""

from __future__ import annotations

import csv
import re

import pytest

from monitor.config import parse_config
from monitor.core.config import ConfigError
from monitor.signals.targets import Target, TargetError, expand_ips, normalize_domain, query_name, reversed_ip
from monitor.signals.zones import CATALOG, ZoneSpec, build_zones, catalog_entry, classify, default_zone_names

ZEN = next(z for z in build_zones(parse_config({}).dnsbl) if z.display == "zen.spamhaus.org")
DBL = next(z for z in build_zones(parse_config({}).dnsbl) if z.display == "dbl.spamhaus.org")
URIBL = next(z for z in build_zones(parse_config({}).dnsbl) if z.display == "multi.uribl.com")
SURBL = next(z for z in build_zones(parse_config({}).dnsbl) if z.display == "multi.surbl.org")


@pytest.mark.parametrize("answer", ["127.255.255.252", "127.255.255.254", "127.255.255.255"])
def test_spamhaus_error_codes_are_errors_never_listings(answer):
    verdict = classify(ZEN, [answer])
    assert verdict.status == "error"
    assert answer in verdict.reason


def test_ip_queries_on_a_domain_list_are_errors():
    assert classify(DBL, ["127.0.1.255"]).status == "error"


@pytest.mark.parametrize("answer", ["10.0.0.1", "198.51.100.77", "0.0.0.0", "::1", "not-an-ip"])
def test_answers_outside_loopback_are_errors(answer):
    verdict = classify(ZEN, [answer])
    assert verdict.status == "error"


def test_undocumented_code_is_an_error():
    assert classify(ZEN, ["127.0.0.8"]).status == "error"
    assert classify(ZEN, ["127.0.0.1"]).status == "error"


def test_several_listing_codes_are_all_kept():
    verdict = classify(ZEN, ["127.0.0.10", "127.0.0.2", "127.0.0.4"])
    assert verdict.status == "listed"
    assert verdict.codes == ("127.0.0.2", "127.0.0.4", "127.0.0.10")
    assert len(verdict.meanings) == 3 and verdict.meanings[0].startswith("SBL")


def test_a_listing_mixed_with_junk_is_an_error():
    # A resolver adding records must not be able to produce a listing.
    assert classify(ZEN, ["127.0.0.2", "10.1.2.3"]).status == "error"
    assert classify(ZEN, ["127.0.0.2", "127.255.255.254"]).status == "error"


def test_no_answer_is_clean():
    assert classify(ZEN, []).status == "clean"


def test_bitmask_zones():
    assert classify(URIBL, ["127.0.0.2"]).meanings == ("URIBL black",)
    assert classify(URIBL, ["127.0.0.14"]).status == "listed"
    assert classify(URIBL, ["127.0.0.1"]).status == "error"  # query refused
    assert classify(URIBL, ["127.0.0.3"]).status == "error"  # refused bit set together with black
    assert classify(URIBL, ["127.0.0.64"]).status == "error"  # undocumented bit
    assert classify(SURBL, ["127.0.0.80"]).meanings == ("SURBL MW (malware)", "SURBL ABUSE (spam)")
    assert classify(SURBL, ["127.0.0.9"]).status == "error"


def test_reputation_zone_good_answers_are_clean():
    rep = ZoneSpec(**{**_spec_kwargs("rep.mailspike.net")})
    assert classify(rep, ["127.0.0.18"]).status == "clean"
    assert classify(rep, ["127.0.0.11"]).status == "listed"
    assert classify(rep, ["127.0.0.21"]).status == "error"


def _spec_kwargs(name: str) -> dict:
    entry = CATALOG[name]
    return dict(name=entry.name, kind=entry.kind, listed_codes=entry.listed_codes, error_codes=entry.error_codes,
                clean_codes=entry.clean_codes)


def test_query_names():
    assert reversed_ip("192.0.2.10") == "10.2.0.192"
    assert query_name(ZEN, Target("192.0.2.10", "ip")) == "10.2.0.192.zen.spamhaus.org"
    six = query_name(ZEN, Target("2001:db8::1", "ip"))
    assert six == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org"
    assert query_name(DBL, Target("example.com", "domain")) == "example.com.dbl.spamhaus.org"


def test_targets_expand_ranges_and_reject_bad_input():
    assert [t.value for t in expand_ips(["192.0.2.0/30", "192.0.2.1", "2001:db8::/127"])] == [
        "192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::", "2001:db8::1"]
    with pytest.raises(TargetError):
        list(expand_ips(["192.0.2.1/24"]))
    assert normalize_domain("Bücher.Example.") == "xn--bcher-kva.example"
    with pytest.raises(TargetError):
        normalize_domain("192.0.2.1")


# --- configuration ---------------------------------------------------------------------

def test_default_zones_and_dqs_switch():
    public = [z.display for z in build_zones(parse_config({}).dnsbl)]
    assert "zen.spamhaus.org" in public and "dbl.spamhaus.org" in public
    keyed = build_zones(parse_config({"dnsbl": {"dqs_key": "k3y"}}).dnsbl)
    names = {z.name for z in keyed}
    assert "k3y.zen.dq.spamhaus.net" in names and "zen.spamhaus.org" not in names
    assert all("k3y" not in z.display for z in keyed)  # the key never shows
    assert len(default_zone_names(with_key=True)) == 10


def test_dqs_key_from_environment(monkeypatch):
    config = parse_config({"dnsbl": {"dqs_key_env": "REPMON_TEST_DQS",
                                     "zones": [{"name": "<key>.zen.dq.spamhaus.net"}]}})
    monkeypatch.setenv("REPMON_TEST_DQS", "envkey")
    assert build_zones(config.dnsbl)[0].name == "envkey.zen.dq.spamhaus.net"
    monkeypatch.delenv("REPMON_TEST_DQS")
    with pytest.raises(ConfigError, match="REPMON_TEST_DQS"):
        build_zones(config.dnsbl)


def test_literal_key_in_zone_name_is_hidden():
    config = parse_config({"dnsbl": {"zones": [{"name": "secretkey.zen.dq.spamhaus.net"}]}})
    zone = build_zones(config.dnsbl)[0]
    assert zone.name == "secretkey.zen.dq.spamhaus.net" and zone.display == "<key>.zen.dq.spamhaus.net"
    assert zone.error_codes["127.255.255.250"]


@pytest.mark.parametrize("zones, message", [
    ([{"name": "dnsbl.sorbs.net"}], "decommissioned"),
    ([{"name": "dnsbl.ahbl.org"}], "lists every IP"),
    ([{"name": "score.senderscore.com"}], "not a blocklist"),
    ([{"name": "ivmSIP.example"}], "kind .ip or domain. is required"),
    ([{"name": "<key>.combined.mail.abusix.zone"}], "listed_codes is required .Abusix"),
    ([{"name": "<key>.zen.dq.spamhaus.net"}], "needs a Spamhaus DQS key"),
    ([{"name": "x.bl.example", "kind": "ip"}], "listed_codes is required"),
    ([{"name": "x.bl.example", "kind": "ip", "listed_codes": {"10.0.0.2": "x"}}], "not an address in 127"),
    ([{"name": "x.bl.example", "kind": "ip", "listed_codes": {"127.0.0.2": "x"}, "error_codes": {"127.0.0.2": "y"}}],
     "both"),
    ([{"name": "zen.spamhaus.org", "kind": "domain"}], "list of ips"),
    ([{"name": "x.bl.example", "kind": "ip", "listed_codes": {"127.0.0.2": "x"}, "test_listed": "test"}],
     "must be an IP"),
    ([{"name": "zen.spamhaus.org"}, {"name": "ZEN.spamhaus.org."}], "zone names must be unique"),
    ([{"name": "zen.spamhaus.org", "colour": "red"}], "unknown key"),
])
def test_zone_configuration_errors_name_the_problem(zones, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"dnsbl": {"zones": zones}})


def test_abusix_with_codes_and_key_is_accepted():
    config = parse_config({"dnsbl": {"dqs_key": "k", "zones": [
        {"name": "<key>.combined.mail.abusix.zone", "listed_codes": {"127.0.0.2": "listed"}}]}})
    assert build_zones(config.dnsbl)[0].test_listed is None  # no positive test point published


@pytest.mark.parametrize("section, message", [
    ({"dns": {"resolver": "dns.example:53"}}, "not a host name"),
    ({"dns": {"resolver": "127.0.0.1:99999"}}, "out of range"),
    ({"dnsbl": {"ips": ["192.0.2.0/16"]}}, "host bits"),
    ({"dnsbl": {"ips": ["10.0.0.0/8"]}}, "max_range_addresses"),
    ({"dnsbl": {"domains": ["192.0.2.1"]}}, "IP address, not a domain"),
    ({"dnsbl": {"dqs_key": "a", "dqs_key_env": "B"}}, "not both"),
])
def test_target_and_resolver_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(section)


# --- the catalog agrees with the research notes ---------------------------------------------

CODE = re.compile(r"(127\.\d+\.\d+\.\d+)\s*=")  # "code=meaning" / "code = meaning" in the notes


@pytest.mark.evaluation
def test_catalog_matches_dnsbl_zones_tsv(shared_dir):
    """Every zone of ../shared/reference/dnsbl-zones.tsv is in the catalog with the same kind;
    retired/no-endpoint zones are refused; documented error codes are never listing codes; the
    listing codes named in the notes are listing (or clean) codes here."""
    with open(shared_dir / "reference" / "dnsbl-zones.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) >= 30
    for row in rows:
        entry = catalog_entry(row["zone"])
        assert entry is not None, row["zone"]
        assert entry.kind == row["kind"], row["zone"]
        errors_text = row["error_codes"]
        if errors_text.startswith("ZONE RETIRED") or "OFFLINE" in errors_text or row["return_codes_and_meanings"] == "RETIRED":
            assert entry.status == "retired", row["zone"]
            continue
        if errors_text.startswith("n/a"):
            assert entry.status == "no_endpoint", row["zone"]
            continue
        for code in CODE.findall(errors_text):
            assert code not in entry.listed_codes, (row["zone"], code)
        if entry.status != "active":
            continue
        listed_text = row["return_codes_and_meanings"]
        if entry.listed_bits:
            for bit in re.findall(r"(?:^|; |: )(\d+)=", listed_text):
                assert int(bit) in entry.listed_bits, (row["zone"], bit)
            continue
        for code, meaning in re.findall(r"(127\.\d+\.\d+\.\d+)=([^;]*)", listed_text):
            if meaning.strip().startswith("currently unused"):
                continue  # an unassigned code stays an error until its operator documents it
            assert code in entry.listed_codes or code in entry.clean_codes, (row["zone"], code)
