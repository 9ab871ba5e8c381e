"""Actions by hand (`repmon actions ...`): pause, slow, suppress, cancel,
resume. They are policy_actions rows like the rules' ones (created_by
"operator:<name>"), reach the sender the same way, and are listed together.

Cancelling or resuming over a rule is an override: the rule does not fire
again on that subject until it has new evidence (or the condition cleared
once), and never before `hold` has passed.

Each function takes an optional `report`: what started and ended lands in
its `changes`, for the caller to announce through alerts (the policy does
not import alerts; `repmon actions` does the announcing).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from monitor.health.clock import to_datetime
from monitor.health.subjects import Subject, parse_subject
from monitor.policy.actions import LANE_ACTIONS, ActionChange
from monitor.policy.directives import add_directives
from monitor.policy.evaluate import PolicyEngine, PolicyReport, apply_suppression
from monitor.policy.models import PolicyAction


class ManualError(ValueError):
    """An operator request that cannot be done, with the reason."""


def operator_action(engine: PolicyEngine, conn: Connection, action: str, target: str, *, user: str, now: float,
                    rate: float | None = None, duration: float | None = None, reason: str = "",
                    report: PolicyReport | None = None) -> PolicyAction:
    """pause / slow a subject (ip:ADDR, lane:ADDR/DEST) or suppress an address or @domain."""
    expires = now + duration if duration else None
    evidence = [reason or f"set by hand by {user}"]
    with Session(bind=conn) as session:
        if action in ("pause", "slow"):
            subject = _lane_or_ip(target)
            destinations = [subject.destination] if subject.kind == "lane" else ["*"]
            row = PolicyAction(subject=str(subject), action=action, rule="operator",
                               created_by=f"operator:{user}"[:100],
                               evidence=evidence, params={"rate": rate, "severity": "info", "ramp": False},
                               source_ip=subject.key, destinations=destinations,
                               until="expiry" if expires else "manual", started_at=to_datetime(now),
                               expires_at=to_datetime(expires) if expires else None)
            row.directive_ids = add_directives(conn, action, subject.key, destinations, rate=rate,
                                               reason=evidence[0], created_by=f"operator:{user}", now=now,
                                               expires_at=expires)
        elif action == "suppress":
            address = target.strip().lower()
            if address.startswith("@") and "." in address:
                subject_name = f"rdomain:{address[1:]}"
            elif "@" in address and not address.startswith("@") and not address.endswith("@"):
                subject_name = f"recipient:{address}"
            else:
                raise ManualError(f"not an address or @domain: {target!r}")
            row = PolicyAction(subject=subject_name, action="suppress", rule="operator",
                               created_by=f"operator:{user}"[:100], evidence=evidence, params={"severity": "info"},
                               target=address, until="expiry" if expires else "manual", started_at=to_datetime(now),
                               expires_at=to_datetime(expires) if expires else None)
        else:
            raise ManualError(f"unknown action {action!r}")
        session.add(row)
        session.flush()
        if action == "suppress":
            apply_suppression(conn, row, now, engine.queue_exists(conn))
        if report is not None:
            report.started.append(row)
            report.changes.append(ActionChange.of("started", row, now))
        session.flush()
        session.expunge(row)
        return row


def cancel(engine: PolicyEngine, conn: Connection, action_id: int, *, user: str, now: float, reason: str = "",
           hold: float | None = None, ramp: bool = False, report: PolicyReport | None = None) -> PolicyAction:
    with Session(bind=conn) as session:
        row = session.get(PolicyAction, action_id)
        if row is None:
            raise ManualError(f"no action #{action_id}")
        if row.ended_at is not None:
            raise ManualError(f"action #{action_id} already ended ({row.end_reason})")
        why = f"cancelled by {user}" + (f": {reason}" if reason else "")
        engine.end(session, conn, row, why[:500], now, report or PolicyReport(), ramp=ramp)
        if hold:
            row.params = {**(row.params or {}), "hold_until": now + hold}
        session.add(row)
        session.flush()
        session.expunge(row)
        return row


def resume(engine: PolicyEngine, conn: Connection, target: str, *, user: str, now: float, reason: str = "",
           hold: float | None = None, ramp: bool = False, report: PolicyReport | None = None) -> list[PolicyAction]:
    """End every pause, slow and ramp on a subject (an IP's lanes too)."""
    subject = _lane_or_ip(target)
    names = [str(subject)]
    with Session(bind=conn) as session:
        query = select(PolicyAction).where(col(PolicyAction.ended_at).is_(None),
                                           col(PolicyAction.action).in_(LANE_ACTIONS))
        if subject.kind == "ip":
            rows = [r for r in session.execute(query).scalars() if r.source_ip == subject.key]
        else:
            rows = list(session.execute(query.where(col(PolicyAction.subject).in_(names))).scalars())
        why = f"resumed by {user}" + (f": {reason}" if reason else "")
        for row in rows:
            engine.end(session, conn, row, why[:500], now, report or PolicyReport(),
                       ramp=ramp and row.action != "ramp")
            if hold:
                row.params = {**(row.params or {}), "hold_until": now + hold}
            session.add(row)
        session.flush()
        for row in rows:
            session.expunge(row)
        return rows


def _lane_or_ip(target: str) -> Subject:
    try:
        subject = parse_subject(target)
    except ValueError as exc:
        raise ManualError(str(exc)) from None
    if subject.kind not in ("ip", "lane"):
        raise ManualError(f"{target}: pause, slow and resume act on ip:ADDR or lane:ADDR/DESTINATION")
    try:
        ipaddress.ip_address(subject.key)
    except ValueError:
        if subject.key != "default":
            raise ManualError(f"{target}: {subject.key!r} is not an IP address") from None
    return subject


def list_actions(conn: Connection, *, since: datetime | None = None, active_only: bool = False) -> list[PolicyAction]:
    with Session(bind=conn) as session:
        query = select(PolicyAction)
        if active_only:
            query = query.where(col(PolicyAction.ended_at).is_(None))
        elif since is not None:
            query = query.where((col(PolicyAction.ended_at).is_(None)) | (col(PolicyAction.started_at) >= since)
                                | (col(PolicyAction.ended_at) >= since))
        rows = list(session.execute(query.order_by(col(PolicyAction.id))).scalars())
        for row in rows:
            session.expunge(row)
        return rows


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
