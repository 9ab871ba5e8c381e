"""States, scores and reasons from figures: the published thresholds, the
minimum volumes, listings by weight and by who uses the list, SNDS and
Postmaster data, and configuration overrides."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from monitor.config import parse_config
from monitor.health.assess import STATE_CAP, Listing, PostmasterDay, SndsDay, SubjectInputs, Thresholds, assess
from monitor.health.counts import Counts
from monitor.health.subjects import Subject, parse_subject
from monitor.health.zones import ZoneTable

ZONES = ZoneTable()


def thresholds(**health):
    return Thresholds(parse_config({"health": health}).health)


def lane(dest: str = "yahoo", **counts) -> SubjectInputs:
    c = Counts(**counts)
    return SubjectInputs(Subject("lane", "192.0.2.1", dest), {"24h": {dest: c}, "7d": {dest: c}})


def listing(zone: str, codes=("127.0.0.2",), target="192.0.2.1", state="listed") -> Listing:
    return Listing(target, zone, tuple(codes), "SBL: direct spam source", state,
                   datetime(2026, 1, 15, 10, tzinfo=UTC), "https://check.spamhaus.org/",
                   ZONES.lookup(zone, list(codes)))


@pytest.mark.parametrize("complaints, state", [(0, "healthy"), (1, "healthy"), (2, "warning"), (5, "warning"),
                                               (6, "critical"), (30, "critical")])
def test_complaint_rate_lines_at_0_1_and_0_3_percent(complaints, state):
    a = assess(lane(delivered=2000, sent=2000, attempts=2000, complaints=complaints), thresholds())
    assert a.state == state
    assert a.score <= STATE_CAP[state]
    if state != "healthy":
        reason = a.reasons[0]
        assert "complaint rate" in reason and "over 24h" in reason
        assert ("0.3%" if state == "critical" else "0.1%") in reason
        assert f"{complaints:,} of 2,000 delivered" in reason
    else:
        assert a.reasons  # a healthy subject says why it is healthy


def test_too_little_volume_is_not_judged():
    a = assess(lane(delivered=99, sent=99, attempts=99, complaints=5), thresholds())
    assert a.state == "healthy"
    assert not any("complaint rate" in r and ">=" in r for r in a.reasons)


def test_google_lanes_have_no_complaint_rate_but_say_why():
    a = assess(lane("google", delivered=5000, sent=5000, attempts=5000), thresholds())
    assert a.state == "healthy"
    assert any("no feedback loop" in r for r in a.reasons)
    assert a.metric("complaint_rate", "24h") is None


def test_ip_complaint_rate_is_per_provider():
    ip = SubjectInputs(Subject("ip", "192.0.2.1"), {"24h": {
        "yahoo": Counts(delivered=1000, sent=1000, attempts=1000, complaints=4),
        "google": Counts(delivered=100_000, sent=100_000, attempts=100_000)}})
    a = assess(ip, thresholds())
    # overall it would be 0.004 %; at yahoo it is 0.4 %
    assert a.state == "critical"
    assert a.reasons[0].startswith("complaint rate at yahoo 0.4%")
    assert a.findings[0].cause == "complaint_rate:yahoo"
    assert a.metric("complaint_rate", "24h").value == pytest.approx(0.004)
    assert a.metric("complaint_rate", "24h", ["google"]) is None


@pytest.mark.parametrize("hard, state", [(10, "healthy"), (25, "warning"), (60, "critical")])
def test_hard_bounce_rate(hard, state):
    a = assess(lane(delivered=1000 - hard, sent=1000, attempts=1000, hard_bounces=hard), thresholds())
    assert a.state == state


def test_deferral_and_block_rates():
    deferred = assess(lane(attempts=100, delivered=40, sent=40, deferred=60), thresholds())
    assert deferred.state == "critical" and "deferral rate 60%" in deferred.reasons[0]
    blocked = assess(lane(attempts=100, sent=100, delivered=70, soft_bounces=30, blocks=30), thresholds())
    assert blocked.state == "blocked"
    assert blocked.score <= STATE_CAP["blocked"]


def test_major_listing_blocks_the_ip_and_the_lanes_of_receivers_that_use_it():
    ip = SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing("zen.spamhaus.org")])
    a = assess(ip, thresholds())
    assert a.state == "blocked" and a.score <= 19
    assert "zen.spamhaus.org" in a.reasons[0] and "127.0.0.2" in a.reasons[0] and "check.spamhaus.org" in a.reasons[0]
    # Barracuda: major, but the consumer providers do not use it
    barracuda = [listing("b.barracudacentral.org")]
    other = assess(SubjectInputs(Subject("lane", "192.0.2.1", "mx:mail.example.net"), listings=barracuda), thresholds())
    google = assess(SubjectInputs(Subject("lane", "192.0.2.1", "google"), listings=barracuda), thresholds())
    assert other.state == "blocked"
    assert google.state == "healthy" and any("google does not use" in r for r in google.reasons)


def test_minor_listings_weigh_by_zone_and_code():
    pbl = assess(SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing("zen.spamhaus.org", ["127.0.0.10"])]),
                 thresholds())
    assert pbl.state == "warning"  # PBL: policy list, weight 10
    psbl = assess(SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing("psbl.surriel.com")]), thresholds())
    assert psbl.state == "healthy" and psbl.score == 95  # weight 5: lowers the score, not the state
    uce3 = assess(SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing("dnsbl-3.uceprotect.net")]), thresholds())
    assert uce3.state == "healthy" and uce3.score == 98


def test_unknown_listing_state_still_counts_as_listed():
    a = assess(SubjectInputs(Subject("ip", "192.0.2.1"), listings=[listing("zen.spamhaus.org", state="unknown")]),
               thresholds())
    assert a.state == "blocked" and "state unknown" in a.reasons[0]


def test_configured_zone_weight_overrides_the_table():
    config = parse_config({"health": {"zones": [{"zone": "psbl.surriel.com", "weight": 50, "major": True}]}})
    table = ZoneTable.from_config(config.health.zones)
    weight = table.lookup("psbl.surriel.com", ["127.0.0.2"])
    assert weight.major and weight.weight == 50
    assert table.lookup("KEY.zen.dq.spamhaus.net", ["127.0.0.4"]).major  # DQS uses the public twin's weights


def test_snds_and_blocked_status():
    day = date(2026, 1, 14)
    red = SndsDay("192.0.2.1", day, "RED", 0.05, "5%", 3, 10_000)
    a = assess(SubjectInputs(Subject("ip", "192.0.2.1"), snds=[red]), thresholds())
    causes = {f.cause: f.severity for f in a.findings}
    assert causes == {"snds:filter": "critical", "snds:traps": "warning", "snds:complaint_rate": "critical"}
    below = SndsDay("192.0.2.1", day, "GREEN", 0.001, "< 0.1%", 0, 10_000, complaint_rate_below=True)
    assert assess(SubjectInputs(Subject("ip", "192.0.2.1"), snds=[below]), thresholds()).state == "healthy"
    blocked = assess(SubjectInputs(Subject("ip", "192.0.2.1"), snds_blocked="Blocked due to user complaints"),
                     thresholds())
    assert blocked.state == "blocked" and "user complaints" in blocked.reasons[0]


def test_gmail_spam_rate_and_its_seven_day_memory():
    days = [PostmasterDay("example.com", date(2026, 1, d), rate, None, None)
            for d, rate in ((10, 0.0005), (11, 0.0035), (12, 0.0008), (13, 0.0009))]
    a = assess(SubjectInputs(Subject("domain", "example.com"), postmaster=days), thresholds())
    assert a.state == "warning"
    assert any("2026-01-11" in r and "7 consecutive days" in r for r in a.reasons)
    over = days + [PostmasterDay("example.com", date(2026, 1, 14), 0.004, "LOW", 0.97)]
    b = assess(SubjectInputs(Subject("domain", "example.com"), postmaster=over), thresholds())
    assert b.state == "critical" and b.reasons[0].startswith("Gmail spam rate 0.4% on 2026-01-14")
    assert {"reputation", "postmaster_dmarc"} <= {f.cause for f in b.findings}


def test_dmarc_pass_rate_is_a_lower_bound():
    domain = SubjectInputs(Subject("domain", "example.com"), {"7d": {"": Counts(dmarc_messages=1000, dmarc_pass=950,
                                                                               dkim_pass=950, spf_pass=900)}})
    a = assess(domain, thresholds())
    assert a.state == "warning"
    assert any(r.startswith("DMARC pass rate 95%") and "98%" in r for r in a.reasons)
    assert assess(domain, thresholds(dmarc_pass_rate={"warning": "90%", "critical": "80%"},
                                     dkim_pass_rate={"warning": "90%"})).state == "healthy"


def test_thresholds_per_provider_and_percent_strings():
    t = thresholds(providers={"yahoo": {"complaint_rate": {"warning": "0.05%", "critical": "0.2%", "min_volume": 10}}})
    a = assess(lane(delivered=1000, sent=1000, attempts=1000, complaints=2), t)
    assert a.state == "critical" and "0.2%" in a.reasons[0]
    b = assess(lane("microsoft", delivered=1000, sent=1000, attempts=1000, complaints=2), t)
    assert b.state == "warning"


def test_bad_threshold_config_is_a_clear_error():
    from monitor.core.config import ConfigError

    with pytest.raises(ConfigError, match="health.complaint_rate.warning"):
        parse_config({"health": {"complaint_rate": {"warning": "12"}}})
    with pytest.raises(ConfigError, match="warning must not be above critical"):
        parse_config({"health": {"complaint_rate": {"warning": "1%", "critical": "0.5%"}}})


def test_subject_names_round_trip():
    for text in ("ip:192.0.2.1", "domain:example.com", "lane:192.0.2.1/yahoo", "lane:2001:db8::1/google"):
        assert str(parse_subject(text)) == text
    with pytest.raises(ValueError):
        parse_subject("lane:192.0.2.1")
