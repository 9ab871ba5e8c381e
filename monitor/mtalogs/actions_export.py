"""Policy actions -> configuration an MTA a team already runs understands.

For teams that send through their own KumoMTA or PowerMTA instead of repmon's
sender: the pause and slow actions in force, on a source IP x destination
(provider) lane or on every destination of an IP, rendered as

- `kumomta`: a shaping override file (TOML, loaded after your own shaping
  files by the shaping helper): one `[provider."repmon-<destination>"]` block
  matching the destination's MX suffixes, with a `sources."<egress source>"`
  block per IP setting `max_message_rate`. KumoMTA's shaping has no pause, so
  a pause is a rate of one message a day, and the comment above it gives the
  `kcli suspend-ready-q` command for a hard stop.
- `pmta`: `<virtual-mta NAME>` blocks with a `<domain D>` block per recipient
  domain of the destination (`<domain *>` for every destination) setting
  `max-msg-rate` and `backoff-max-msg-rate`; a pause is a rate of one message
  a day there, and the `pmta pause queue D/NAME` commands that stop the
  queues at once are listed at the end (a pause is a command in PowerMTA,
  not a directive).
- `json`: the actions themselves with the resolved names, one object each.

Pure functions of plain records (`ExportAction`); reading the actions is the
command's business (monitor/commands/actions_export.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.core.units import format_rate
from monitor.mtalogs.destinations import BUILTIN_SUFFIXES

FORMATS = ("kumomta", "pmta", "json")
PAUSE_RATE_KUMO = "1/d"  # shaping has no pause: the slowest rate it takes
# Recipient domains of the built-in providers (for PowerMTA's per-domain blocks).
PROVIDER_DOMAINS: dict[str, tuple[str, ...]] = {
    "google": ("gmail.com", "googlemail.com"),
    "microsoft": ("outlook.com", "hotmail.com", "live.com", "msn.com"),
    "yahoo": ("yahoo.com", "ymail.com", "rocketmail.com", "aol.com"),
    "apple": ("icloud.com", "me.com", "mac.com"),
    "comcast": ("comcast.net",),
    "orange": ("orange.fr", "wanadoo.fr"),
    "gmx-webde": ("gmx.de", "gmx.net", "web.de"),
    "yandex": ("yandex.ru",),
    "mailru": ("mail.ru",),
    "fastmail": ("fastmail.com",),
    "proton": ("proton.me", "protonmail.com"),
}


@dataclass(frozen=True, slots=True)
class ExportAction:
    ip: str
    destination: str  # provider name, "mx:<host>", or "*" for every destination of the IP
    kind: str  # pause | slow
    rate: float | None = None  # messages per second (slow)
    expires_at: datetime | None = None
    action_id: int | None = None
    rule: str | None = None


def _toml_key(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for these names


def _iso(value: datetime | None) -> str:
    if value is None:
        return "until cancelled"
    return "until " + value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _comment(action: ExportAction) -> str:
    what = action.kind if action.kind == "pause" else f"slow to {format_rate(action.rate)}"
    origin = f" (action #{action.action_id}, rule {action.rule})" if action.action_id is not None else ""
    return f"# {what} {action.ip} -> {action.destination} {_iso(action.expires_at)}{origin}"


def _kumo_rate(action: ExportAction) -> str:
    if action.kind == "pause" or not action.rate:
        return PAUSE_RATE_KUMO
    return format_rate(action.rate).replace("/day", "/d")


def _mx_suffixes(destination: str, extra: Mapping[str, Sequence[str]]) -> list[str]:
    if destination.startswith("mx:"):
        return [destination[3:]]
    return [*BUILTIN_SUFFIXES.get(destination, ()), *extra.get(destination, ())]


def format_kumomta(actions: Iterable[ExportAction], *, sources: Mapping[str, str] | None = None,
                   extra_suffixes: Mapping[str, Sequence[str]] | None = None, generated_at: datetime | None = None) -> str:
    """A KumoMTA shaping override (TOML). `sources`: IP -> egress source name (default: the IP)."""
    sources = sources or {}
    extra = extra_suffixes or {}
    by_destination: dict[str, list[ExportAction]] = {}
    for action in _effective(actions):
        by_destination.setdefault(action.destination, []).append(action)
    out = [_header("kumomta", generated_at), "# Load after your own shaping files (kumo.shaping.load / shaping helper).", ""]
    for destination in sorted(by_destination):
        block = f"provider.{_toml_key('repmon-' + destination)}"
        if destination == "*":
            out.append("# every destination of these sources")
            for action in by_destination[destination]:
                name = sources.get(action.ip, action.ip)
                out += [_comment(action), f"[\"default\".sources.{_toml_key(name)}]",
                        f"max_message_rate = {_toml_key(_kumo_rate(action))}", ""]
            continue
        suffixes = _mx_suffixes(destination, extra)
        if not suffixes:
            out.append(f"# {destination}: no MX suffix known; add it under [[delivery_logs]] providers")
            continue
        matches = ", ".join("{ MXSuffix = " + _toml_key(s if s.startswith(".") or destination.startswith("mx:")
                                                          else "." + s) + " }" for s in suffixes)
        out += [f"[{block}]", f"match = [{matches}]", ""]
        for action in by_destination[destination]:
            name = sources.get(action.ip, action.ip)
            out.append(_comment(action))
            if action.kind == "pause":
                out.append(f"# hard stop: kcli suspend-ready-q --name '{name}->SITE' --reason 'repmon pause'"
                           f" (SITE as `kcli queue-summary` shows it)")
            out += [f"[{block}.sources.{_toml_key(name)}]", f"max_message_rate = {_toml_key(_kumo_rate(action))}", ""]
    return "\n".join(out).rstrip() + "\n"


def format_pmta(actions: Iterable[ExportAction], *, sources: Mapping[str, str] | None = None,
                domains: Mapping[str, Sequence[str]] | None = None, generated_at: datetime | None = None) -> str:
    """PowerMTA directives: `<virtual-mta>` / `<domain>` blocks. `sources`: IP ->
    virtual MTA name (default vmta-<ip>); `domains`: destination -> recipient
    domains seen going there (added to the built-in providers' domains)."""
    sources = sources or {}
    domains = domains or {}
    by_vmta: dict[str, list[ExportAction]] = {}
    for action in _effective(actions):
        by_vmta.setdefault(sources.get(action.ip) or f"vmta-{action.ip}", []).append(action)
    out = [_header("pmta", generated_at), ""]
    commands: list[str] = []
    for vmta in sorted(by_vmta):
        out.append(f"<virtual-mta {vmta}>")
        for action in by_vmta[vmta]:
            out.append("  " + _comment(action))
            targets = ["*"] if action.destination == "*" else _domains_of(action.destination, domains)
            if not targets:
                out.append(f"  # {action.destination}: no recipient domain known yet")
                continue
            for domain in targets:
                rate = "1/d" if action.kind == "pause" else _pmta_rate(action.rate)
                out += [f"  <domain {domain}>", f"    max-msg-rate {rate}", f"    backoff-max-msg-rate {rate}",
                        "  </domain>"]
                if action.kind == "pause":
                    commands.append(f"pmta pause queue {domain}/{vmta}")
        out += ["</virtual-mta>", ""]
    if commands:
        out.append("# pauses take effect at once with:")
        out += [f"#   {c}" for c in commands]
    return "\n".join(out).rstrip() + "\n"


def format_json(actions: Iterable[ExportAction], *, sources: Mapping[str, str] | None = None) -> str:
    """JSON Lines: one object per effective action."""
    sources = sources or {}
    lines = []
    for a in _effective(actions):
        lines.append(json.dumps({
            "ip": a.ip, "source": sources.get(a.ip, a.ip), "destination": a.destination, "kind": a.kind,
            "rate_per_s": a.rate, "rate": None if a.kind == "pause" else format_rate(a.rate),
            "expires_at": None if a.expires_at is None else a.expires_at.astimezone(UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ"), "action_id": a.action_id, "rule": a.rule,
        }, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def _effective(actions: Iterable[ExportAction]) -> list[ExportAction]:
    """One action per (ip, destination): a pause beats a slow, the slower slow wins."""
    best: dict[tuple[str, str], ExportAction] = {}
    for action in actions:
        if action.kind not in ("pause", "slow"):
            continue
        key = (action.ip, action.destination)
        current = best.get(key)
        if current is None or _stricter(action, current):
            best[key] = action
    return [best[k] for k in sorted(best)]


def _stricter(a: ExportAction, b: ExportAction) -> bool:
    if a.kind != b.kind:
        return a.kind == "pause"
    if a.kind == "slow":
        return (a.rate or 0) < (b.rate or 0)
    return False


def _domains_of(destination: str, seen: Mapping[str, Sequence[str]]) -> list[str]:
    found = list(PROVIDER_DOMAINS.get(destination, ()))
    for domain in seen.get(destination, ()):
        if domain not in found:
            found.append(domain)
    return found


def _pmta_rate(rate: float | None) -> str:
    """PowerMTA takes N/s, N/m, N/h or N/d with an integer N."""
    if not rate:
        return "1/d"
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600), ("d", 86400)):
        amount = rate * seconds
        if amount >= 1 and abs(amount - round(amount)) < 1e-6:
            return f"{int(round(amount))}/{unit}"
    return f"{max(1, int(round(rate * 86400)))}/d"


def _header(what: str, generated_at: datetime | None) -> str:
    when = (generated_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"# repmon actions export --format {what}, generated {when}: pauses and slows in force"


def render(fmt: str, actions: Iterable[ExportAction], *, sources: Mapping[str, str] | None = None,
           domains: Mapping[str, Sequence[str]] | None = None,
           extra_suffixes: Mapping[str, Sequence[str]] | None = None, generated_at: datetime | None = None) -> str:
    if fmt == "kumomta":
        return format_kumomta(actions, sources=sources, extra_suffixes=extra_suffixes, generated_at=generated_at)
    if fmt == "pmta":
        return format_pmta(actions, sources=sources, domains=domains, generated_at=generated_at)
    if fmt == "json":
        return format_json(actions, sources=sources)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
