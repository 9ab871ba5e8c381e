"""Rule conditions on assessments (pure): state, a rate over a window with its
minimum volume, a listing on a zone; config validation of rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.config import parse_config
from monitor.core.config import ConfigError
from monitor.health.assess import Listing, SubjectInputs, Thresholds, assess
from monitor.health.counts import Counts
from monitor.health.subjects import Subject
from monitor.health.zones import ZoneTable
from monitor.policy.rules import compile_rules, evidence_grew, match


def rules(*configured, defaults=False):
    config = parse_config({"policy": {"defaults": defaults, "rules": list(configured)}})
    return compile_rules(config.policy), Thresholds(config.health)


def ip_with(**by_dest) -> SubjectInputs:
    return SubjectInputs(Subject("ip", "192.0.2.1"), {"24h": {d: Counts(**c) for d, c in by_dest.items()}})


def test_rate_condition_uses_the_worst_provider_with_enough_volume():
    [rule], t = rules({"name": "ip-complaints", "subjects": ["ip"], "metric": "complaint_rate", "window": "24h",
                       "above": "0.3%", "action": "alert"})
    # yahoo: 10 % on 10 messages (too few to judge), microsoft: 0.5 % on 1,000
    a = assess(ip_with(yahoo={"delivered": 10, "complaints": 1}, microsoft={"delivered": 1000, "complaints": 5}), t)
    found = match(rule, a, t)
    assert found is not None and found.evidence == ["complaint rate 0.5% (5 of 1,000) over 24h >= 0.3%"]
    assert found.counts == {"complaint_rate": 5.0, "volume": 1000.0}
    quiet = assess(ip_with(yahoo={"delivered": 10, "complaints": 1}, microsoft={"delivered": 1000, "complaints": 1}), t)
    assert match(rule, quiet, t) is None


def test_providers_filter_and_explicit_min_volume():
    [rule], t = rules({"name": "yahoo-only", "subjects": ["lane"], "providers": ["yahoo"], "metric": "deferral_rate",
                       "window": "24h", "above": 0.2, "min_volume": 10, "action": "pause", "duration": "10m"})
    def lane(dest):
        return assess(SubjectInputs(Subject("lane", "192.0.2.1", dest), {"24h": {dest: Counts(
            attempts=20, deferred=10, delivered=10, sent=10)}}), t)

    assert match(rule, lane("yahoo"), t) is not None
    assert match(rule, lane("microsoft"), t) is None


def test_state_and_listing_conditions():
    zones = ZoneTable()
    listing = Listing("192.0.2.1", "psbl.surriel.com", ("127.0.0.2",), "", "listed",
                      datetime(2026, 1, 1, tzinfo=UTC), None, zones.lookup("psbl.surriel.com", ["127.0.0.2"]))
    state_rule, zone_rule, major_rule = rules(
        {"name": "critical-ips", "subjects": ["ip"], "state": ["critical", "blocked"], "action": "alert"},
        {"name": "psbl", "subjects": ["ip"], "listed_on": ["psbl.surriel.com"], "action": "slow", "rate": "1/s",
         "scope": "ip"},
        {"name": "major", "subjects": ["ip"], "listed_on": ["major"], "action": "pause", "scope": "zone_users"})[0]
    t = Thresholds(parse_config({}).health)
    a = assess(SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing]), t)
    assert a.state == "healthy"  # weight 5: not a state change
    assert match(state_rule, a, t) is None
    assert match(major_rule, a, t) is None
    found = match(zone_rule, a, t)
    assert found is not None and found.listings == [listing] and found.evidence == [
        "listed on psbl.surriel.com (127.0.0.2)"]
    critical = assess(ip_with(yahoo={"delivered": 1000, "sent": 1000, "complaints": 5}), t)
    hit = match(state_rule, critical, t)
    assert hit is not None and hit.evidence[0] == "state critical (score 30)"


def test_evidence_grows_only_with_more_of_it():
    assert not evidence_grew({"complaint_rate": 5.0, "volume": 1000.0}, {"complaint_rate": 5.0, "volume": 2000.0})
    assert evidence_grew({"complaint_rate": 5.0}, {"complaint_rate": 6.0})
    assert evidence_grew({"listing:zen.spamhaus.org": 100.0}, {"listing:zen.spamhaus.org": 200.0})
    assert evidence_grew({}, {"listing:b.barracudacentral.org": 1.0})


def test_defaults_and_overrides():
    config = parse_config({"policy": {"rules": [{"name": "lane-complaint-rate-pause", "subjects": ["lane"],
                                                  "metric": "complaint_rate", "above": "0.5%", "action": "pause",
                                                  "duration": "1h"}]}})
    compiled = {r.name: r for r in compile_rules(config.policy)}
    assert compiled["lane-complaint-rate-pause"].above == 0.005 and compiled["lane-complaint-rate-pause"].origin == "config"
    assert compiled["major-listing-pause"].origin == "default" and compiled["major-listing-pause"].until == "clear"
    assert compiled["lane-deferral-rate-slow"].rate == 1.0


@pytest.mark.parametrize("rule, message", [
    ({"name": "x", "action": "pause"}, "give a condition"),
    ({"name": "x", "metric": "complaint_rate", "action": "pause"}, "needs above or below"),
    ({"name": "x", "metric": "complaint_rate", "above": "5", "action": "pause"}, "fraction"),
    ({"name": "x", "state": ["critical"], "action": "slow"}, "slow needs a rate"),
    ({"name": "x", "subjects": ["domain"], "state": ["critical"], "action": "pause"}, "acts on ip or lane"),
    ({"name": "x", "state": ["critical"], "action": "suppress"}, "recipient domains"),
    ({"name": "x", "state": ["critical"], "action": "pause", "scope": "zone_users"}, "needs listed_on"),
    ({"name": "x", "state": ["critical"], "action": "pause", "duration": "soon"}, "not a duration"),
])
def test_bad_rules_are_clear_config_errors(rule, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"policy": {"rules": [rule]}})
