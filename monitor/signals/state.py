"""The listing state of each (target, zone), with hysteresis.

States: clean, listed, unknown. Observations: listed, clean, error.
- A valid listing answer makes it listed; only a clean answer makes it clean
  again. An error never moves listed to clean or clean to listed.
- Errors must repeat `unknown_after` cycles in a row before a known state
  becomes unknown: one timeout or one SERVFAIL changes nothing.
- Coming back from unknown to what it was before is a quiet "restored", not a
  new listing alert; coming back to something else is a real transition.
Pure functions: the daemon loads states, advances them, stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from monitor.signals.dnsbl import Observation, ZoneHealth

State = Literal["unknown", "clean", "listed"]
TransitionKind = Literal["listed", "delisted", "codes_changed", "unknown", "restored"]


@dataclass(frozen=True, slots=True)
class TargetState:
    target: str
    zone: str
    state: State = "unknown"
    codes: tuple[str, ...] = ()
    reason: str = ""
    txt: str | None = None
    delist_url: str | None = None
    error_streak: int = 0
    last_error: str = ""
    last_known: State = "unknown"  # what it was before it went unknown
    changed_at: datetime | None = None
    checked_at: datetime | None = None
    target_kind: str = "ip"


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    target: str
    zone: str
    previous: State
    current: State
    codes: tuple[str, ...] = ()
    reason: str = ""
    txt: str | None = None
    delist_url: str | None = None
    initial: bool = False  # first thing ever known about this pair
    target_kind: str = "ip"


def advance(previous: TargetState | None, observation: Observation, now: datetime,
            unknown_after: int) -> tuple[TargetState, Transition | None]:
    prev = previous or TargetState(observation.target, observation.zone, target_kind=observation.target_kind)
    prev = replace(prev, checked_at=now)
    if observation.status == "error":
        return _on_error(prev, observation, now, unknown_after)
    if observation.status == "listed":
        return _on_listed(prev, observation, now)
    return _on_clean(prev, observation, now)


def _on_error(prev: TargetState, obs: Observation, now: datetime, unknown_after: int) -> tuple[TargetState,
                                                                                               Transition | None]:
    streak = prev.error_streak + 1
    state = replace(prev, error_streak=streak, last_error=obs.reason)
    if prev.state == "unknown" or streak < unknown_after:
        return state, None
    state = replace(state, state="unknown", last_known=prev.state, changed_at=now)
    reason = f"{streak} failed checks in a row; last: {obs.reason}"
    return state, _transition("unknown", prev, state, reason=reason, codes=prev.codes)


def _on_listed(prev: TargetState, obs: Observation, now: datetime) -> tuple[TargetState, Transition | None]:
    state = replace(prev, state="listed", codes=obs.codes, reason=obs.reason, txt=obs.txt,
                    delist_url=obs.delist_url, error_streak=0, last_error="", last_known="listed")
    if prev.state == "listed":
        if obs.codes != prev.codes:
            state = replace(state, changed_at=now)
            return state, _transition("codes_changed", prev, state, obs=obs)
        return state, None
    state = replace(state, changed_at=now)
    if prev.state == "unknown" and prev.last_known == "listed" and prev.codes == obs.codes:
        return state, _transition("restored", prev, state, obs=obs)
    return state, _transition("listed", prev, state, obs=obs, initial=_never_known(prev))


def _on_clean(prev: TargetState, obs: Observation, now: datetime) -> tuple[TargetState, Transition | None]:
    state = replace(prev, state="clean", codes=(), reason=obs.reason, txt=None, delist_url=None,
                    error_streak=0, last_error="", last_known="clean")
    if prev.state == "clean":
        return state, None
    state = replace(state, changed_at=now)
    was_listed = prev.state == "listed" or (prev.state == "unknown" and prev.last_known == "listed")
    if was_listed:
        return state, _transition("delisted", prev, state, obs=obs, codes=prev.codes,
                                  delist_url=prev.delist_url)
    if prev.state == "unknown" and prev.last_known == "clean":
        return state, _transition("restored", prev, state, obs=obs)
    return state, None  # first clean answer ever: nothing to tell


def _never_known(prev: TargetState) -> bool:
    return prev.state == "unknown" and prev.last_known == "unknown"


def _transition(kind: TransitionKind, prev: TargetState, state: TargetState, *, obs: Observation | None = None,
                reason: str | None = None, codes: tuple[str, ...] | None = None, delist_url: str | None = None,
                initial: bool = False) -> Transition:
    return Transition(
        kind=kind, target=state.target, zone=state.zone, previous=prev.state, current=state.state,
        codes=codes if codes is not None else state.codes,
        reason=reason if reason is not None else (obs.reason if obs else ""),
        txt=obs.txt if obs else None,
        delist_url=delist_url if delist_url is not None else state.delist_url,
        initial=initial, target_kind=state.target_kind,
    )


# --- zones ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ZoneTransition:
    zone: str
    previous: str | None
    current: str
    detail: str


def advance_zone(previous_status: str | None, health: ZoneHealth) -> ZoneTransition | None:
    """A zone event whenever its health changes (and the first time it is not ok)."""
    if previous_status == health.status:
        return None
    if previous_status is None and health.ok:
        return None
    return ZoneTransition(health.zone, previous_status, health.status, health.detail)
