"""Pure parts of the sender: rates, durations, GCRA, retry delays, rules."""

from __future__ import annotations

import random

import pytest

from monitor.core.units import format_rate, parse_duration, parse_rate
from monitor.health.clock import FakeClock
from sender.outcomes import retry_delay
from sender.rules import RuleBook, RulesError, load_rules, parse_rules
from sender.throttle import Gcra


@pytest.mark.parametrize("text, expected", [
    ("10/s", 10.0), ("600/min", 10.0), ("3600/h", 1.0), ("86400/day", 1.0), ("1/min", 1 / 60),
    ("5/10s", 0.5), (2.5, 2.5), ("unlimited", None), (None, None),
])
def test_parse_rate(text, expected):
    value = parse_rate(text)
    assert value == pytest.approx(expected) if expected is not None else value is None


@pytest.mark.parametrize("bad", ["fast", "10/fortnight", "-1/s", "0/s", 0])
def test_parse_rate_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_durations_and_formats():
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5 hours") == 5400
    assert parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("3 weeks")
    assert format_rate(10) == "10/s"
    assert format_rate(1 / 60) == "1/min"
    assert format_rate(None) == "unlimited"


def test_gcra_never_exceeds_rate_plus_burst_in_any_window():
    clock = FakeClock(1000.0)
    gcra = Gcra(10.0, burst=5, clock=clock.now)
    sent: list[float] = []
    rng = random.Random(7)
    while clock.now() < 1060.0:
        if gcra.try_acquire() == 0:
            sent.append(clock.now())
        else:
            clock.advance(rng.uniform(0.0005, 0.02))
    # Over 60 s it sends rate x 60 plus at most the burst.
    assert 600 <= len(sent) <= 605
    # In every window of length T at most rate*T + burst messages.
    for i, start in enumerate(sent):
        for window in (0.1, 1.0, 5.0):
            in_window = sum(1 for t in sent[i:i + 200] if t < start + window)
            assert in_window <= 10 * window + 5 + 1e-9


def test_gcra_wait_time_and_slowing_keeps_no_credit():
    clock = FakeClock(1000.0)
    gcra = Gcra(100.0, clock=clock.now)
    for _ in range(100):  # the whole burst
        assert gcra.try_acquire() == 0
    assert gcra.try_acquire() > 0
    gcra.configure(1.0, burst=1)  # slowed: the earlier credit must not be spent at the new rate
    clock.advance(0.5)
    assert gcra.try_acquire() > 0
    clock.advance(2.0)
    assert gcra.try_acquire() == 0
    assert gcra.try_acquire() == pytest.approx(1.0)


def test_retry_delay_backs_off_with_jitter_and_honours_hints():
    rng = random.Random(1)
    first = [retry_delay(0, "451 try later", 60, 3600, rng) for _ in range(50)]
    assert all(48 <= d <= 72 for d in first) and len(set(first)) > 10  # jitter
    assert 0.8 * 480 <= retry_delay(3, "", 60, 3600, rng) <= 1.2 * 480
    assert retry_delay(20, "", 60, 3600, rng) <= 1.2 * 3600  # capped
    assert 300 <= retry_delay(0, "421 4.7.0 Please try again in 5 minutes", 60, 3600, rng) <= 330
    assert 90 <= retry_delay(5, "450 Greylisted, retry in 90 seconds", 60, 3600, rng) <= 99


# --- rules ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def book() -> RuleBook:
    return RuleBook(load_rules())


@pytest.mark.parametrize("code, text, action, rule", [
    (421, "4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address. "
          "To protect our users from spam, mail sent from your IP address has been temporarily rate limited.",
     "suspend", "google-ip-rate-limit"),
    (550, "5.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address. "
          "To protect our users from spam, mail sent from your IP address has been blocked.",
     "halt", "google-ip-blocked"),
    (421, "4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or user complaints",
     "suspend", "yahoo-complaints-deferral"),
    (553, "5.7.2 [TSS09] All messages from 192.0.2.7 will be permanently deferred; Retrying will NOT succeed",
     "halt", "yahoo-permanent-deferral"),
    (550, "5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your Internet service "
          "provider since part of their network is on our block list (S3140).", "halt", "microsoft-ip-blocklist"),
    (451, "4.7.650 The mail server [192.0.2.7] has been temporarily rate limited due to IP reputation.",
     "slow", "microsoft-ip-reputation-throttle"),
    (554, "5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org",
     "halt", "blocklisted-ip"),
])
def test_default_rules_map_provider_responses_to_lane_actions(book, code, text, action, rule):
    hit = book.check("192.0.2.7|x", "google", code, text.split()[0], text)
    assert hit is not None and hit.rule.action == action and hit.rule.name == rule
    assert str(code) in hit.response


@pytest.mark.parametrize("code, text", [
    (550, "5.1.1 The email account that you tried to reach does not exist."),
    (452, "4.2.2 The recipient's inbox is out of storage space."),
    (250, "2.0.0 OK"),
])
def test_recipient_level_replies_trigger_no_lane_action(book, code, text):
    assert book.check("ip|google", "google", code, None, text) is None


def test_blocklist_rule_scope_is_the_whole_ip(book):
    hit = book.check("ip|yahoo", "yahoo", 553, "5.7.1", "5.7.1 [BL21] Connections will not be accepted from 192.0.2.7")
    assert hit is not None and hit.rule.scope == "ip" and hit.rule.action == "halt"


def test_threshold_rule_acts_on_the_nth_match_per_lane():
    clock = FakeClock(1000.0)
    rules = parse_rules({"rule": [{"name": "busy", "match": "busy", "action": "suspend", "duration": "5m",
                                   "threshold": "3/1h"}]}, "test")
    book = RuleBook(rules, clock=clock.now)
    assert book.check("a", "x", 451, None, "server busy") is None
    assert book.check("b", "x", 451, None, "server busy") is None  # another lane counts apart
    assert book.check("a", "x", 451, None, "server busy") is None
    assert book.check("a", "x", 451, None, "server busy") is not None
    clock.advance(7200)  # old matches leave the window
    assert book.check("a", "x", 451, None, "server busy") is None


def test_operator_rules_come_first_and_bad_rules_are_explained(tmp_path):
    own = tmp_path / "rules.toml"
    own.write_text('[[rule]]\nname = "ours"\nmatch = "TSS04"\naction = "none"\n')
    book = RuleBook(load_rules(own))
    assert book.check("l", "yahoo", 421, None, "[TSS04] deferred") is None  # "none" wins over the default suspend
    for bad, message in [
        ({"rule": [{"name": "x", "match": "(", "action": "halt"}]}, "bad regex"),
        ({"rule": [{"name": "x", "match": "a", "action": "explode"}]}, "action must be one of"),
        ({"rule": [{"name": "x", "match": "a", "action": "suspend"}]}, "needs a duration"),
        ({"rule": [{"name": "x", "match": "a", "action": "slow", "duration": "1h"}]}, "a slow needs"),
        ({"rule": [{"name": "x", "match": "a", "action": "halt", "colour": "red"}]}, "unknown keys"),
    ]:
        with pytest.raises(RulesError, match=message):
            parse_rules(bad, "f.toml")
