"""What the policy tells the parts above it about its actions: how to name
what an action covers, its JSON form, and `ActionChange`, an action that
started or ended, as a plain value.

The policy does not announce anything itself: `PolicyEngine.evaluate` (and
the operator's `repmon actions`) return the changes, and the reaction loop
(monitor/loop.py) hands them to alerts (`AlertCenter.announce`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from monitor.health.clock import iso
from monitor.health.subjects import parse_subject
from monitor.policy.models import PolicyAction

LANE_ACTIONS = ("pause", "slow", "ramp")

VERBS = {"pause": "Paused", "slow": "Slowed", "ramp": "Ramping up", "suppress": "Suppressed", "alert": "Alert",
         "resume": "Resumed"}


def describe_target(subject: str, action: str, destinations: list[str], target: str | None = None) -> str:
    try:
        parsed = parse_subject(subject)
    except ValueError:
        parsed = None
    if action == "suppress":
        return f"recipients {target}" if target and target.startswith("@") else f"recipient {target}"
    if parsed is not None and parsed.kind == "lane" and destinations == [parsed.destination]:
        return f"lane {parsed.key}/{parsed.destination}"
    if parsed is not None and parsed.ip:
        if "*" in destinations:
            return f"IP {parsed.key} for every destination"
        if destinations:
            return f"IP {parsed.key} towards {', '.join(destinations)}"
        return f"IP {parsed.key} (no lane affected yet)"
    return subject


@dataclass(frozen=True, slots=True)
class ActionChange:
    """An action that started or ended, as it stood then (`at`: epoch seconds)."""

    kind: Literal["started", "ended"]
    id: int
    subject: str
    action: str
    rule: str
    evidence: tuple[str, ...]
    destinations: tuple[str, ...]
    target: str | None
    params: dict[str, Any]
    started_at: datetime
    expires_at: datetime | None
    at: float
    reason: str = ""

    @classmethod
    def of(cls, kind: Literal["started", "ended"], action: PolicyAction, at: float, reason: str = "") -> ActionChange:
        return cls(kind=kind, id=int(action.id or 0), subject=action.subject, action=action.action, rule=action.rule,
                   evidence=tuple(action.evidence or ()), destinations=tuple(action.destinations or ()),
                   target=action.target, params=dict(action.params or {}), started_at=action.started_at,
                   expires_at=action.expires_at, at=at, reason=reason)

    @property
    def what(self) -> str:
        """What the action covers, in words ("lane 192.0.2.1/yahoo", "recipients @example.net")."""
        return describe_target(self.subject, self.action, list(self.destinations), self.target)

    @property
    def verb(self) -> str:
        return VERBS.get(self.action, self.action)


def action_json(action: PolicyAction) -> dict[str, Any]:
    return {
        "id": action.id,
        "subject": action.subject,
        "action": action.action,
        "rule": action.rule,
        "created_by": action.created_by,
        "evidence": list(action.evidence or []),
        "destinations": list(action.destinations or []),
        "target": action.target,
        "rate": (action.params or {}).get("rate"),
        "started": iso(action.started_at),
        "expires": iso(action.expires_at),
        "ended": iso(action.ended_at),
        "end_reason": action.end_reason,
    }
