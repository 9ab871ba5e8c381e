"""Notifications -> a Slack message (Block Kit) or an email.

A few notifications become one message with a section each; more than the
digest threshold become a digest: one line per kind of event with how many
subjects it concerns and the first of them, so 200 listed IPs are one short
message. Slack limits (50 blocks, 3,000 characters a section, 150 a header)
are respected by truncation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from monitor.alerts.notify import ALERT_RANK

MAX_BLOCKS = 50
SECTION_LIMIT = 3000
HEADER_LIMIT = 150
DIGEST_SAMPLE = 10

_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
_KIND_ICON = {"resolved": ":white_check_mark:", "ended": ":arrow_forward:", "action": ":octagonal_sign:"}
_KIND_WORD = {"firing": "", "resolved": "resolved", "action": "action", "ended": "ended"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def worst(notifications: list[dict[str, Any]]) -> str:
    return max((n["severity"] for n in notifications), key=lambda s: ALERT_RANK.get(s, 0), default="info")


def _icon(n: dict[str, Any]) -> str:
    return _KIND_ICON.get(n["kind"], _ICON.get(n["severity"], ""))


def headline(notifications: list[dict[str, Any]], digest_threshold: int) -> str:
    if len(notifications) == 1:
        return notifications[0]["title"]
    if len(notifications) > digest_threshold:
        return f"repmon digest: {len(notifications)} alerts"
    return f"{len(notifications)} alerts: {notifications[0]['title']} and {len(notifications) - 1} more"


def _groups(notifications: list[dict[str, Any]]) -> OrderedDict[tuple[str, str, str], list[dict[str, Any]]]:
    ordered = sorted(notifications, key=lambda n: (-ALERT_RANK.get(n["severity"], 0), n["kind"], n["cause"]))
    groups: OrderedDict[tuple[str, str, str], list[dict[str, Any]]] = OrderedDict()
    for n in ordered:
        groups.setdefault((n["kind"], n["cause"], n["severity"]), []).append(n)
    return groups


def _group_line(kind: str, cause: str, severity: str, items: list[dict[str, Any]]) -> tuple[str, str]:
    what = {"firing": cause, "resolved": f"{cause} resolved", "action": f"{cause.removeprefix('action:')} action",
            "ended": f"{cause.removeprefix('action:')} ended"}.get(kind, cause)
    subjects = [n["subject"] for n in items]
    sample = ", ".join(subjects[:DIGEST_SAMPLE]) + (f" and {len(subjects) - DIGEST_SAMPLE} more"
                                                     if len(subjects) > DIGEST_SAMPLE else "")
    return f"{len(items)} × {what} ({severity})", sample


def slack_payload(notifications: list[dict[str, Any]], digest_threshold: int) -> dict[str, Any]:
    title = headline(notifications, digest_threshold)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, HEADER_LIMIT)}}]
    if len(notifications) > digest_threshold:
        groups = _groups(notifications)
        for (kind, cause, severity), items in list(groups.items())[: MAX_BLOCKS - 3]:
            line, sample = _group_line(kind, cause, severity, items)
            first = items[0]["text"].splitlines()[0] if items[0]["text"] else ""
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
                f"{_icon(items[0])} *{line}*\n{sample}\n_{first}_",
                SECTION_LIMIT)}})
        if len(groups) > MAX_BLOCKS - 3:
            blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                       "text": f"…and {len(groups) - (MAX_BLOCKS - 3)} more kinds"}})
        fallback = title + ": " + "; ".join(_group_line(*k, v)[0] for k, v in list(groups.items())[:5])
    else:
        for n in notifications[: MAX_BLOCKS - 2]:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
                f"{_icon(n)} *{n['title']}*\n{n['text']}", SECTION_LIMIT)}})
        fallback = "; ".join(n["title"] for n in notifications)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
        f"repmon · {subject_tag(notifications)} · `repmon health` / `repmon actions` for details", 300)}]})
    return {"text": _clip(fallback, 3000), "blocks": blocks[:MAX_BLOCKS]}


def subject_tag(notifications: list[dict[str, Any]]) -> str:
    """The word in "[repmon WORD]": the worst severity of what fires (alerts and
    actions); when nothing fires, what happened instead ("resolved", "ended"):
    a resolved critical alert is good news, not a critical one."""
    active = [n for n in notifications if n["kind"] not in ("resolved", "ended")]
    if active:
        return worst(active)
    kinds = {n["kind"] for n in notifications}
    return "resolved" if "resolved" in kinds or not kinds else "ended"


def email_message(notifications: list[dict[str, Any]], digest_threshold: int) -> tuple[str, str]:
    """(subject, plain-text body)."""
    subject = f"[repmon {subject_tag(notifications)}] {headline(notifications, digest_threshold)}"
    lines: list[str] = []
    if len(notifications) > digest_threshold:
        for (kind, cause, sev), items in _groups(notifications).items():
            line, _sample = _group_line(kind, cause, sev, items)
            lines.append(line)
            lines.extend(f"  - {n['subject']}: {n['text'].splitlines()[0] if n['text'] else n['title']}"
                         for n in items[:50])
            if len(items) > 50:
                lines.append(f"  … and {len(items) - 50} more")
            lines.append("")
    else:
        for n in notifications:
            word = _KIND_WORD.get(n["kind"], "")
            lines.append(f"{n['title']}" + (f" [{word}]" if word else ""))
            lines.extend("  " + t for t in n["text"].splitlines())
            lines.append("")
    lines.append("repmon health / repmon actions --config FILE show the details.")
    return _clip(subject.replace("\n", " "), 200), "\n".join(lines)
