"""Response rules: SMTP replies that change how a lane sends.

A rules file is TOML, a list of [[rule]] tables, checked in order (the
operator's file first, then the shipped defaults in default_rules.toml);
the first rule that matches a reply decides:

    [[rule]]
    name = "yahoo-complaint-deferral"     # recorded with every action it takes
    match = '\\[TSS04\\]'                  # Python regex searched in "<code> <text>"
    reply = ["421"]                        # optional: reply-code prefixes ("4", "421")
    status = "4.7"                         # optional: enhanced-status prefix
    destinations = ["yahoo"]               # optional: only these lanes' destinations
    action = "suspend"                     # suspend | slow | halt | none
    duration = "2h"                        # suspend and slow; halt lasts until cleared
    rate = "1/min"                         # slow: an absolute rate...
    factor = 0.5                           # ...or a fraction of the current one
    connections = 1                        # slow: connection limit while it lasts
    deliveries_per_connection = 2          # slow
    scope = "lane"                         # lane, or "ip": every destination of the IP
    threshold = "3/1h"                     # optional: act on the Nth match within the window

Replies produced by repmon itself (connection failures, timeouts) are not
matched, so a suspension cannot feed on its own deferrals.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from monitor.core.units import parse_duration, parse_rate

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.toml")
ACTIONS = ("suspend", "slow", "halt", "none")
_KEYS = {"name", "match", "reply", "status", "destinations", "action", "duration", "rate", "factor",
         "connections", "deliveries_per_connection", "scope", "threshold", "note"}


class RulesError(ValueError):
    """A rules file that cannot be used, with a message naming the rule."""


@dataclass(slots=True, frozen=True)
class ResponseRule:
    name: str
    pattern: re.Pattern[str]
    action: str
    reply: tuple[str, ...] = ()
    status: str | None = None
    destinations: frozenset[str] | None = None
    duration: float | None = None
    rate: float | None = None
    factor: float | None = None
    connections: int | None = None
    deliveries_per_connection: int | None = None
    scope: str = "lane"
    threshold: tuple[int, float] | None = None  # (count, window seconds)
    source: str = ""

    def matches(self, code: int, status: str | None, flat: str, destination: str) -> bool:
        if self.reply and not str(code).startswith(self.reply):
            return False
        if self.status is not None and not (status or "").startswith(self.status):
            return False
        if self.destinations is not None and destination not in self.destinations:
            return False
        return self.pattern.search(flat) is not None


def _parse_threshold(value: str, where: str) -> tuple[int, float]:
    count, sep, window = str(value).partition("/")
    try:
        n = int(count)
        seconds = parse_duration(window if window[:1].isdigit() else f"1{window}")
    except ValueError:
        raise RulesError(f"{where}: threshold must look like 3/1h, got {value!r}") from None
    if not sep or n < 1 or seconds <= 0:
        raise RulesError(f"{where}: threshold must look like 3/1h, got {value!r}")
    return n, seconds


def parse_rules(data: dict, source: str) -> list[ResponseRule]:
    rules = []
    entries = data.get("rule", [])
    unknown_top = set(data) - {"rule"}
    if unknown_top:
        raise RulesError(f"{source}: unknown top-level keys: {', '.join(sorted(unknown_top))} "
                         "(rules are [[rule]] tables)")
    if not isinstance(entries, list):
        raise RulesError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    for i, entry in enumerate(entries):
        where = f"{source}: rule {i + 1} ({entry.get('name', 'unnamed')})"
        unknown = set(entry) - _KEYS
        if unknown:
            raise RulesError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
        for required in ("name", "match", "action"):
            if required not in entry:
                raise RulesError(f"{where}: '{required}' is required")
        action = entry["action"]
        if action not in ACTIONS:
            raise RulesError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
        try:
            pattern = re.compile(entry["match"])
        except re.error as exc:
            raise RulesError(f"{where}: bad regex: {exc}") from None
        try:
            duration = parse_duration(entry["duration"]) if "duration" in entry else None
            rate = parse_rate(entry["rate"]) if "rate" in entry else None
        except ValueError as exc:
            raise RulesError(f"{where}: {exc}") from None
        if action in ("suspend", "slow") and duration is None:
            raise RulesError(f"{where}: a {action} needs a duration")
        if action == "slow" and rate is None and entry.get("factor") is None and entry.get("connections") is None \
                and entry.get("deliveries_per_connection") is None:
            raise RulesError(f"{where}: a slow needs rate, factor, connections or deliveries_per_connection")
        factor = entry.get("factor")
        if factor is not None and not (0 < float(factor) < 1):
            raise RulesError(f"{where}: factor must be between 0 and 1")
        scope = entry.get("scope", "lane")
        if scope not in ("lane", "ip"):
            raise RulesError(f"{where}: scope must be lane or ip")
        reply = entry.get("reply", ())
        reply = (reply,) if isinstance(reply, (str, int)) else tuple(reply)
        destinations = entry.get("destinations")
        rules.append(ResponseRule(
            name=str(entry["name"]), pattern=pattern, action=action,
            reply=tuple(str(r) for r in reply), status=entry.get("status"),
            destinations=frozenset(destinations) if destinations else None,
            duration=duration, rate=rate, factor=float(factor) if factor is not None else None,
            connections=entry.get("connections"), deliveries_per_connection=entry.get("deliveries_per_connection"),
            scope=scope, threshold=_parse_threshold(entry["threshold"], where) if "threshold" in entry else None,
            source=source,
        ))
    return rules


def load_rules(path: Path | None = None, include_defaults: bool = True) -> list[ResponseRule]:
    rules: list[ResponseRule] = []
    files = ([path] if path is not None else []) + ([DEFAULT_RULES_FILE] if include_defaults else [])
    for file in files:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RulesError(f"cannot read rules file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{file}: not valid TOML: {exc}") from None
        rules.extend(parse_rules(data, str(file)))
    return rules


@dataclass(slots=True)
class RuleHit:
    rule: ResponseRule
    response: str


@dataclass
class RuleBook:
    """Matches replies to rules and counts threshold rules per lane."""

    rules: list[ResponseRule]
    clock: object = time.monotonic
    _seen: dict[tuple[str, str], deque] = field(default_factory=dict)

    def check(self, lane: str, destination: str, code: int, status: str | None, text: str) -> RuleHit | None:
        """The rule to act on for this reply, or None (no rule, or a threshold
        rule that has not reached its count yet)."""
        flat = f"{code} {text}"
        for rule in self.rules:
            if not rule.matches(code, status, flat, destination):
                continue
            if rule.action == "none":
                return None
            if rule.threshold is not None:
                count, window = rule.threshold
                now = self.clock()  # type: ignore[operator]
                seen = self._seen.setdefault((rule.name, lane), deque())
                seen.append(now)
                while seen and seen[0] < now - window:
                    seen.popleft()
                if len(seen) < count:
                    return None
                seen.clear()
            return RuleHit(rule, flat)
        return None
