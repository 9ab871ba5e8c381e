"""Deciding what people hear about: dedup, cooldown, resolution.

A key is "<subject>|<cause>" (`ip:192.0.2.1|listing:zen.spamhaus.org`,
`lane:192.0.2.1/yahoo|action:lane-complaint-rate-pause`). The first time a key
fires, people are told. While it keeps firing nothing more is sent, unless it
escalates (warning -> critical), which is always sent. When it clears,
"resolved" is sent if its firing was. A key that fires again within the
cooldown after its last message is held (counted, not sent): flapping near a
threshold costs at most two messages per cooldown.

Health state changes come in through `observe`, the policy's started and
ended actions through `announce` (the reaction loop, monitor/loop.py, hands
both over; neither health nor policy imports alerts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from monitor.alerts.models import AlertNotification, AlertState
from monitor.alerts.settings import AlertsConfig
from monitor.core.units import format_duration, format_rate, parse_duration
from monitor.health.assess import SEVERITY_RANK
from monitor.health.clock import iso
from monitor.health.service import StateChange
from monitor.policy.actions import ActionChange

ALERT_RANK = {"info": 0, "warning": 1, "critical": 2}


def alert_severity(severity: str) -> str:
    """Health severities to alert severities: blocked is critical for routing."""
    return "critical" if severity == "blocked" else severity


class AlertCenter:
    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.cooldown = parse_duration(config.cooldown)
        self.min_rank = ALERT_RANK[config.min_severity]
        self.created = 0

    # -- health ---------------------------------------------------------------------------

    def observe(self, conn: Connection, changes: list[StateChange], now: float) -> int:
        """Findings of IP and domain subjects that appeared, escalated or cleared.

        Lanes are not alerted on directly: the IP carries the same figures per
        provider, and the policy actions on lanes alert on their own."""
        before = self.created
        for change in changes:
            if change.kind not in ("ip", "domain"):
                continue
            new = {c: f for c, f in change.new_findings.items() if self._alertable(f)}
            old = {c: f for c, f in change.old_findings.items() if self._alertable(f)}
            for cause, finding in new.items():
                self.fire(conn, change.subject, cause, alert_severity(finding["severity"]),
                          f"{change.subject}: {finding['title']}", finding["reason"],
                          {"finding": finding, "state": change.new_state}, now)
            for cause, finding in old.items():
                if cause not in new:
                    self.resolve(conn, change.subject, cause, f"Resolved: {change.subject}: {finding['title']}",
                                 f"no longer: {finding['reason']}", {"state": change.new_state}, now)
        return self.created - before

    # -- policy actions -------------------------------------------------------------------

    def announce(self, conn: Connection, change: ActionChange) -> bool:
        """An action that started ("Paused lane ...") or ended ("Ended: paused lane ...")."""
        if change.kind == "started":
            return self._announce_start(conn, change)
        return self._announce_end(conn, change)

    def _announce_start(self, conn: Connection, change: ActionChange) -> bool:
        title = f"{change.verb} {change.what}" if change.action != "alert" else f"{change.subject}: rule {change.rule}"
        until = (f"until {iso(change.expires_at)}" if change.expires_at is not None else "until the condition clears")
        rate = change.params.get("rate")
        lines = [*change.evidence]
        if change.action == "slow" and rate:
            lines.append(f"rate {format_rate(rate)}")
        if change.action != "alert":
            lines.append(f"{until}; `repmon actions cancel {change.id}` lifts it")
        return self.fire(conn, change.subject, f"action:{change.rule}",
                         alert_severity(change.params.get("severity", "critical")),
                         f"{title} (rule {change.rule})", "\n".join(lines),
                         {"action_id": change.id, "action": change.action, "rule": change.rule}, change.at,
                         kind="action")

    def _announce_end(self, conn: Connection, change: ActionChange) -> bool:
        lasted = format_duration(max(0, round(change.at - change.started_at.timestamp())))
        resumed = " (resuming with a ramp)" if change.action in ("pause", "slow") \
            and change.reason in ("expired", "cleared") and change.params.get("ramp", True) else ""
        return self.resolve(conn, change.subject, f"action:{change.rule}",
                            f"Ended: {change.verb.lower()} {change.what} (rule {change.rule})",
                            f"{change.reason} after {lasted}{resumed}", {"action_id": change.id,
                                                                        "reason": change.reason},
                            change.at, kind="ended")

    def _alertable(self, finding: dict[str, Any]) -> bool:
        return ALERT_RANK[alert_severity(finding["severity"])] >= self.min_rank and finding["severity"] != "info"

    # -- the state machine ---------------------------------------------------------------

    def fire(self, conn: Connection, subject: str, cause: str, severity: str, title: str, text: str,
             details: dict[str, Any], now: float, kind: str = "firing") -> bool:
        """Returns whether a notification was created."""
        key = f"{subject}|{cause}"[:400]
        now_dt = datetime.fromtimestamp(now, UTC)
        with Session(bind=conn) as session:
            state = session.get(AlertState, key)
            notify = False
            if state is None:
                state = AlertState(key=key, subject=subject[:320], cause=cause[:200], severity=severity,
                                   status="firing", summary=title, first_fired_at=now_dt, last_change_at=now_dt)
                notify = True
            elif state.status == "firing":
                if ALERT_RANK[severity] > ALERT_RANK.get(state.severity, 0):
                    state.severity, state.last_change_at, state.summary = severity, now_dt, title
                    notify = ALERT_RANK[severity] > ALERT_RANK.get(state.notified_severity or "", -1)
                else:
                    state.severity = severity
            else:
                state.status, state.severity, state.summary = "firing", severity, title
                state.first_fired_at = state.last_change_at = now_dt
                recent = state.notified_at is not None and now - state.notified_at.timestamp() < self.cooldown
                escalated = ALERT_RANK[severity] > ALERT_RANK.get(state.notified_severity or "", -1)
                notify = not recent or escalated
                if not notify:
                    state.held += 1
            if notify:
                state.notified_at, state.notified_severity, state.notified_status = now_dt, severity, "firing"
                session.add(AlertNotification(key=key, subject=subject[:320], cause=cause[:200], kind=kind,
                                              severity=severity, title=title, text=text, details=details,
                                              created_at=now_dt))
                self.created += 1
            session.add(state)
            session.flush()
        return notify

    def resolve(self, conn: Connection, subject: str, cause: str, title: str, text: str, details: dict[str, Any],
                now: float, kind: str = "resolved") -> bool:
        key = f"{subject}|{cause}"[:400]
        now_dt = datetime.fromtimestamp(now, UTC)
        with Session(bind=conn) as session:
            state = session.get(AlertState, key)
            if state is None or state.status != "firing":
                return False
            state.status, state.last_change_at = "resolved", now_dt
            notify = state.notified_status == "firing"
            if notify:
                state.notified_at, state.notified_status = now_dt, "resolved"
                session.add(AlertNotification(key=key, subject=subject[:320], cause=cause[:200], kind=kind,
                                              severity=state.notified_severity or state.severity, title=title,
                                              text=text, details=details, created_at=now_dt))
                self.created += 1
            session.add(state)
            session.flush()
        return notify

    def firing(self, conn: Connection) -> list[AlertState]:
        with Session(bind=conn) as session:
            return list(session.execute(select(AlertState).where(col(AlertState.status) == "firing")).scalars())


def health_severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, 0)
