"""Listing states with hysteresis: pure state machine, then whole cycles stored in a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlmodel import col

from monitor.config import parse_config
from monitor.core.db import session_scope
from monitor.signals.blocklists import run_cycle
from monitor.signals.dnsbl import Observation, ZoneHealth
from monitor.signals.models import DnsblState, DnsblZoneHealth, SignalEvent
from monitor.signals.state import advance, advance_zone

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def obs(status: Literal["listed", "clean", "error"], codes: tuple[str, ...] = ()) -> Observation:
    return Observation(target="192.0.2.10", zone="bl.test", status=status, codes=codes,
                       reason="timeout" if status == "error" else status)


def run(sequence, unknown_after=3):
    state, transitions = None, []
    for i, observation in enumerate(sequence):
        state, transition = advance(state, observation, T0 + timedelta(minutes=i), unknown_after)
        transitions.append(transition.kind if transition else None)
    return state, transitions


LISTED = obs("listed", ("127.0.0.2",))
CLEAN = obs("clean")
ERROR = obs("error")


def test_one_timeout_never_flips_a_state():
    state, kinds = run([LISTED, ERROR, LISTED])
    assert state.state == "listed" and kinds == ["listed", None, None]
    state, kinds = run([CLEAN, ERROR, CLEAN])
    assert state.state == "clean" and kinds == [None, None, None]


def test_repeated_errors_make_it_unknown_then_restored_quietly():
    state, kinds = run([LISTED, ERROR, ERROR, ERROR, ERROR, LISTED])
    assert kinds == ["listed", None, None, "unknown", None, "restored"]
    assert state.state == "listed" and state.error_streak == 0


def test_listed_to_clean_only_on_a_clean_answer():
    state, kinds = run([LISTED, ERROR, ERROR, ERROR, CLEAN])
    assert kinds == ["listed", None, None, "unknown", "delisted"]
    state, kinds = run([LISTED, CLEAN])
    assert kinds == ["listed", "delisted"] and state.codes == ()


def test_first_listing_is_initial_later_ones_are_not():
    s1, t1 = advance(None, LISTED, T0, 3)
    assert t1.kind == "listed" and t1.initial
    s2, _ = advance(s1, CLEAN, T0, 3)
    _, t3 = advance(s2, LISTED, T0, 3)
    assert t3.kind == "listed" and not t3.initial


def test_code_change_is_its_own_transition():
    state, kinds = run([LISTED, obs("listed", ("127.0.0.2", "127.0.0.4"))])
    assert kinds == ["listed", "codes_changed"] and state.codes == ("127.0.0.2", "127.0.0.4")


def test_errors_first_then_clean_tells_nothing():
    state, kinds = run([ERROR, ERROR, ERROR, ERROR, CLEAN])
    assert kinds == [None] * 5 and state.state == "clean"


observations = st.sampled_from([LISTED, obs("listed", ("127.0.0.4",)), CLEAN, ERROR])


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(observations, min_size=1, max_size=30), unknown_after=st.integers(1, 5))
def test_states_only_follow_real_answers(sequence, unknown_after):
    """Whatever the sequence: listed/clean is the last real answer; errors only ever lead to unknown,
    after `unknown_after` in a row; listing events only on listing answers, delistings only on clean ones."""
    state = None
    for i, observation in enumerate(sequence):
        state, transition = advance(state, observation, T0, unknown_after)
        real = [o for o in sequence[: i + 1] if o.status != "error"]
        trailing_errors = _trailing(sequence[: i + 1])
        if state.state in ("listed", "clean"):
            assert real and real[-1].status == state.state
            assert trailing_errors < unknown_after
        else:
            assert not real or trailing_errors >= unknown_after
        if transition is not None:
            if transition.kind in ("listed", "codes_changed"):
                assert observation.status == "listed"
            if transition.kind == "delisted":
                assert observation.status == "clean"
            if transition.kind == "unknown":
                assert observation.status == "error"


def _trailing(sequence) -> int:
    count = 0
    for o in reversed(sequence):
        if o.status != "error":
            break
        count += 1
    return count


def test_zone_transitions():
    assert advance_zone(None, ZoneHealth("z", "ok")) is None
    assert advance_zone(None, ZoneHealth("z", "broken", "lists the world")).current == "broken"
    assert advance_zone("broken", ZoneHealth("z", "broken")) is None
    assert advance_zone("broken", ZoneHealth("z", "ok")).current == "ok"


# --- cycles stored in SQLite and PostgreSQL ----------------------------------------------------------

FLIP_ZONES = {
    "flip.bl.test": [("ip4set", [":127.0.0.2:Listed $", "127.0.0.2", "192.0.2.10"])],
    "world.bl.test": [("ip4set", [":127.0.0.2:everyone", "0-255"])],
}


def _events(engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        rows = session.execute(select(SignalEvent).order_by(col(SignalEvent.id))).scalars().all()
        return [(r.kind, r.subject, r.zone or "") for r in rows]


def _states(engine) -> dict[tuple[str, str], str]:
    with session_scope(engine) as session:
        return {(r.target, r.zone): r.state for r in session.execute(select(DnsblState)).scalars()}


async def test_cycles_store_transitions_with_hysteresis(engine, rbldnsd_factory, dns_server_factory):
    server = rbldnsd_factory(FLIP_ZONES)
    resolver = dns_server_factory(forward_zones=("bl.test",), upstream=server.resolver)
    config = parse_config({
        "dns": {"resolver": resolver.resolver, "timeout_s": 0.4, "attempts": 1},
        "dnsbl": {"ips": ["192.0.2.10", "192.0.2.11"], "unknown_after_errors": 3, "zones": [
            {"name": "flip.bl.test", "kind": "ip", "listed_codes": {"127.0.0.2": "spam"},
             "delist_url": "https://flip.bl.test/remove"},
            {"name": "world.bl.test", "kind": "ip", "listed_codes": {"127.0.0.2": "spam"}}]},
    })
    clock = iter(T0 + timedelta(minutes=15 * i) for i in range(20))

    report = await run_cycle(config.dns, config.dnsbl, engine, now=next(clock))
    assert report.checked == 4
    assert _states(engine)[("192.0.2.10", "flip.bl.test")] == "listed"
    assert _events(engine) == [("listed", "192.0.2.10", "flip.bl.test"), ("zone_broken", "world.bl.test",
                                                                          "world.bl.test")]

    server.set_zone("flip.bl.test", [("ip4set", [":127.0.0.2:Listed $", "127.0.0.2", "192.0.2.11"])])
    await run_cycle(config.dns, config.dnsbl, engine, now=next(clock))
    assert _events(engine)[2:] == [("delisted", "192.0.2.10", "flip.bl.test"), ("listed", "192.0.2.11", "flip.bl.test")]

    resolver.mode = "drop"  # resolver stops answering
    for _ in range(2):
        await run_cycle(config.dns, config.dnsbl, engine, now=next(clock))
    assert _states(engine)[("192.0.2.11", "flip.bl.test")] == "listed"  # two failed cycles change nothing
    assert _events(engine)[4:] == [("zone_error", "flip.bl.test", "flip.bl.test"),
                                   ("zone_error", "world.bl.test", "world.bl.test")]
    await run_cycle(config.dns, config.dnsbl, engine, now=next(clock))
    assert _states(engine)[("192.0.2.11", "flip.bl.test")] == "unknown"
    assert sorted(_events(engine)[6:]) == [("unknown", "192.0.2.10", "flip.bl.test"),
                                           ("unknown", "192.0.2.11", "flip.bl.test")]

    resolver.mode = "normal"
    await run_cycle(config.dns, config.dnsbl, engine, now=next(clock))
    events = _events(engine)[8:]
    assert ("restored", "192.0.2.11", "flip.bl.test") in events and ("restored", "192.0.2.10", "flip.bl.test") in events
    assert ("zone_ok", "flip.bl.test", "flip.bl.test") in events and ("zone_broken", "world.bl.test",
                                                                      "world.bl.test") in events
    assert not any(kind == "listed" for kind, _, _ in events)  # coming back is not a new listing
    with session_scope(engine) as session:
        row = session.get(DnsblState, ("192.0.2.11", "flip.bl.test"))
        assert row.codes == ["127.0.0.2"] and row.txt == "Listed 192.0.2.11"
        assert row.delist_url == "https://flip.bl.test/remove"
        health = session.get(DnsblZoneHealth, "world.bl.test")
        assert health.status == "broken"
        listed_event = session.execute(select(SignalEvent).where(SignalEvent.kind == "listed")).scalars().first()
        assert listed_event.codes == ["127.0.0.2"] and listed_event.txt == "Listed 192.0.2.10"
        assert listed_event.delist_url == "https://flip.bl.test/remove" and listed_event.initial
    # the world zone never listed anybody
    assert not any(zone == "world.bl.test" and kind == "listed" for kind, _, zone in _events(engine))

    # a target removed from the configuration leaves the states table (its events stay)
    smaller = parse_config({**config.model_dump(exclude={"base_dir"}, by_alias=True),
                            "dnsbl": {**config.dnsbl.model_dump(), "ips": ["192.0.2.11"]}})
    await run_cycle(smaller.dns, smaller.dnsbl, engine, now=next(clock))
    assert {t for t, _ in _states(engine)} == {"192.0.2.11"}
