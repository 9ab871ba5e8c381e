"""Evaluating the policy: rules over assessments -> actions, stored with their
evidence, applied to the sender, ended on time. What started and ended is
returned (`PolicyReport.changes`); the loop (monitor/loop.py) announces it.

An action lives until:
- `expiry`: a rule with a `duration` lasts that long. Afterwards the same
  rule fires again on the same subject only with new evidence (more
  complaints than when it ended, a new listing) or after the condition went
  away once: a 24 h complaint rate that stays over the line while the lane is
  paused does not pause it again the moment the pause ends;
- `clear`: a rule without a duration lasts until its condition no longer
  holds (the IP is delisted);
- an operator ends it (`repmon actions cancel` / `resume`): the rule then
  needs new evidence too, or waits for `--hold`.
When a pause or slow ends by expiry or by clearing, the lane resumes with a
ramp: a slow directive at [policy.ramp] start, multiplied by `factor` every
`step`, gone after `steps` steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from monitor.core.units import format_rate, parse_duration, parse_rate
from monitor.health.assess import Assessment
from monitor.health.clock import to_datetime
from monitor.health.service import HealthService
from monitor.health.zones import ZoneWeight
from monitor.policy.actions import LANE_ACTIONS, ActionChange, action_json, describe_target
from monitor.policy.directives import add_directives, end_directives
from monitor.policy.models import PolicyAction
from monitor.policy.rules import Match, PolicyRule, compile_rules, evidence_grew, match
from monitor.policy.settings import PolicyConfig
from monitor.storage.suppression import MANUAL, SuppressionEntry, addresses_from_source, lift_source, suppress_many
from sender.stats import ended_directives, queued_recipients_of_domain

log = logging.getLogger("repmon.policy")


@dataclass
class PolicyReport:
    started: list[PolicyAction] = field(default_factory=list)
    ended: list[PolicyAction] = field(default_factory=list)
    would: list[dict[str, Any]] = field(default_factory=list)  # dry run
    # every start and end, in order, for the loop to announce through alerts
    changes: list[ActionChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.started or self.ended)


class PolicyEngine:
    """The rules of the [policy] section applied to assessments. `service`
    (health's API) gives the thresholds and the lanes an IP has sent on."""

    def __init__(self, config: PolicyConfig, service: HealthService) -> None:
        self.policy = config
        self.service = service
        self.rules: list[PolicyRule] = compile_rules(config)
        self.ramp_start = parse_rate(config.ramp.start) or 1.0
        self.ramp_factor = config.ramp.factor
        self.ramp_step = parse_duration(config.ramp.step)
        self.ramp_steps = config.ramp.steps
        self._cleared: set[tuple[str, str]] = set()
        self._has_queue: bool | None = None
        self._dry: set[tuple[str, str]] = set()  # dry run: what it said it would do, said once

    @property
    def wants_rdomains(self) -> bool:
        return any("rdomain" in r.subjects for r in self.rules)

    # -- one pass --------------------------------------------------------------------------

    def evaluate(self, conn: Connection, assessments: list[Assessment], now: float, *,
                 full: bool = False) -> PolicyReport:
        report = PolicyReport()
        if not self.policy.enabled:
            return report
        with Session(bind=conn) as session:
            active = list(session.execute(select(PolicyAction).where(col(PolicyAction.ended_at).is_(None))).scalars())
            lifted = self._lifted_elsewhere(conn, active)
            for action in active:
                if action.expires_at is not None and action.expires_at.timestamp() <= now:
                    self.end(session, conn, action, "expired", now, report)
                elif action.id in lifted:
                    # e.g. `repmon lanes resume`: the sender's own command ended our directives
                    self.end(session, conn, action, f"lifted outside the policy ({lifted[action.id]})", now,
                              report, ramp=False)
                elif action.action == "ramp":
                    self._step_ramp(session, conn, action, now)
            current = {(a.rule, a.subject): a for a in active
                       if a.ended_at is None and a.action != "ramp" and a.created_by == "policy"}
            for assessment in assessments:
                for rule in self.rules:
                    if assessment.subject.kind not in rule.subjects:
                        continue
                    key = (rule.name, assessment.name)
                    found = match(rule, assessment, self.service.thresholds)
                    running = current.get(key)
                    if found is None:
                        self._dry.discard(key)
                        if running is not None and running.until == "clear":
                            self.end(session, conn, running, "cleared", now, report)
                            current.pop(key, None)
                        elif running is None:
                            self._cleared.add(key)
                        continue
                    if running is not None:
                        if rule.scope == "zone_users" and running.action in ("pause", "slow"):
                            self._extend(session, conn, running, rule, found, now)
                        continue
                    if not self._may_fire(session, key, found, now):
                        continue
                    started = self._start(session, conn, rule, found, now, report)
                    if started is not None:
                        current[key] = started
                    self._cleared.discard(key)
            if full:
                for action in active:
                    if action.ended_at is None and action.action == "suppress":
                        self._apply_suppression(session, conn, action, now)
            session.flush()
        return report

    @staticmethod
    def _lifted_elsewhere(conn: Connection, active: list[PolicyAction]) -> dict[int, str]:
        """Actions whose every directive someone else ended, with the reason given."""
        owned = {d: a.id for a in active if a.action in LANE_ACTIONS for d in (a.directive_ids or [])}
        if not owned:
            return {}
        ended = ended_directives(conn, sorted(owned))
        out: dict[int, str] = {}
        for action in active:
            mine = list(action.directive_ids or [])
            if action.id is not None and action.action in LANE_ACTIONS and mine and all(d in ended for d in mine):
                out[action.id] = ended[mine[0]]
        return out

    # -- firing -------------------------------------------------------------------------------

    def _may_fire(self, session: Session, key: tuple[str, str], found: Match, now: float) -> bool:
        rule_name, subject = key
        previous = session.execute(
            select(PolicyAction).where(col(PolicyAction.subject) == subject, col(PolicyAction.rule) == rule_name,
                                       col(PolicyAction.action) != "ramp")
            .order_by(col(PolicyAction.id).desc()).limit(1)).scalars().first()
        if previous is None:
            return True
        if previous.ended_at is None:
            return False
        hold = (previous.params or {}).get("hold_until")
        if hold is not None and hold > now:
            return False
        if previous.end_reason == "cleared" or key in self._cleared:
            return True
        return evidence_grew((previous.params or {}).get("counts", {}), found.counts)

    def _start(self, session: Session, conn: Connection, rule: PolicyRule, found: Match, now: float,
               report: PolicyReport) -> PolicyAction | None:
        subject = found.assessment.subject
        expires = now + rule.duration if rule.duration is not None else None
        destinations: list[str] = []
        target = None
        if rule.action in ("pause", "slow"):
            destinations = self._destinations(conn, rule, found, now)
        elif rule.action == "suppress":
            target = "@" + subject.key
        params: dict[str, Any] = {"counts": found.counts, "severity": rule.severity, "scope": rule.scope,
                                  "ramp": rule.ramp}
        if rule.rate is not None:
            params["rate"] = rule.rate
        if found.listings:
            params["zones"] = sorted({li.zone for li in found.listings})
        action = PolicyAction(subject=str(subject), action=rule.action, rule=rule.name, created_by="policy",
                              evidence=list(found.evidence), params=params, source_ip=subject.ip,
                              destinations=destinations, target=target, until=rule.until,
                              started_at=to_datetime(now), expires_at=to_datetime(expires) if expires else None)
        if self.policy.dry_run:
            key = (rule.name, str(subject))
            if key in self._dry:
                return None
            self._dry.add(key)
            report.would.append(action_json(action))
            log.info("dry run: rule %s would %s %s", rule.name, rule.action, subject)
            return None
        if rule.action == "resume":
            self._resume_subject(session, conn, str(subject), f"resumed by rule {rule.name}", now, report,
                                 ramp=rule.ramp)
            action.ended_at, action.end_reason = to_datetime(now), "applied"
        if rule.action in ("pause", "slow") and subject.ip:
            action.directive_ids = add_directives(
                conn, rule.action, subject.ip, destinations, rate=rule.rate, reason=f"{rule.name}: {found.evidence[0]}",
                created_by=f"policy:{rule.name}", now=now, expires_at=expires)
        session.add(action)
        session.flush()
        if rule.action == "suppress":
            self._apply_suppression(session, conn, action, now)
        report.started.append(action)
        log.warning("policy %s: %s %s", rule.name, rule.action, describe_target(action.subject, action.action,
                                                                                 destinations, target),
                    extra={"rule": rule.name, "subject": action.subject, "action_id": action.id})
        report.changes.append(ActionChange.of("started", action, now))
        return action

    def _destinations(self, conn: Connection, rule: PolicyRule, found: Match, now: float) -> list[str]:
        subject = found.assessment.subject
        listings = found.listings
        if subject.kind == "lane":
            if rule.scope == "ip":
                return ["*"]
            if rule.scope == "zone_users" and listings and not any(
                    li.weight.affects(subject.destination) for li in listings):
                return []
            return [subject.destination]
        if rule.scope != "zone_users" or not listings:
            return ["*"]
        if any(_affects_all(li.weight) for li in listings):
            return ["*"]
        known = self.service.lanes_of(conn, subject.key, now)
        return sorted(d for d in known if any(li.weight.affects(d) for li in listings))

    def _extend(self, session: Session, conn: Connection, action: PolicyAction, rule: PolicyRule, found: Match,
                now: float) -> None:
        """A zone_users pause that covers named destinations: add lanes that
        appeared since (and widen to every destination when a listing needs it)."""
        have = list(action.destinations or [])
        if "*" in have or not action.source_ip:
            return
        wanted = self._destinations(conn, rule, found, now)
        expires = action.expires_at.timestamp() if action.expires_at else None
        if "*" in wanted:
            end_directives(conn, list(action.directive_ids or []), now, "widened to every destination")
            ids = add_directives(conn, action.action, action.source_ip, ["*"], rate=(action.params or {}).get("rate"),
                                 reason=f"{rule.name}: {found.evidence[0]}", created_by=f"policy:{rule.name}",
                                 now=now, expires_at=expires)
            action.destinations, action.directive_ids = ["*"], ids
        else:
            new = [d for d in wanted if d not in have]
            if not new:
                return
            ids = add_directives(conn, action.action, action.source_ip, new, rate=(action.params or {}).get("rate"),
                                 reason=f"{rule.name}: {found.evidence[0]}", created_by=f"policy:{rule.name}",
                                 now=now, expires_at=expires)
            action.destinations = have + new
            action.directive_ids = list(action.directive_ids or []) + ids
        session.add(action)

    # -- ending -------------------------------------------------------------------------------

    def end(self, session: Session, conn: Connection, action: PolicyAction, reason: str, now: float,
             report: PolicyReport | None, *, ramp: bool | None = None) -> None:
        if action.ended_at is not None:
            return
        end_directives(conn, list(action.directive_ids or []), now, reason)
        if action.action == "suppress":
            lift_suppression(conn, action)
        action.ended_at, action.end_reason = to_datetime(now), reason
        session.add(action)
        if report is not None:
            report.ended.append(action)
        wants_ramp = (action.params or {}).get("ramp", True) if ramp is None else ramp
        if (action.action in ("pause", "slow") and wants_ramp and action.source_ip and action.destinations
                and (reason in ("expired", "cleared") or ramp)):
            self._start_ramp(session, conn, action, now)
        if report is not None and action.action != "ramp":
            report.changes.append(ActionChange.of("ended", action, now, reason))

    def _start_ramp(self, session: Session, conn: Connection, parent: PolicyAction, now: float) -> None:
        rate = self.ramp_start
        ids = add_directives(conn, "slow", parent.source_ip or "", list(parent.destinations), rate=rate,
                             reason=f"ramp after {parent.action} #{parent.id} ({parent.rule}): step 1 of "
                                    f"{self.ramp_steps} at {format_rate(rate)}",
                             created_by=f"policy:{parent.rule}"[:100], now=now, expires_at=None)
        session.add(PolicyAction(
            subject=parent.subject, action="ramp", rule=parent.rule, created_by=parent.created_by,
            evidence=[f"resuming after {parent.action} #{parent.id} ended"],
            params={"rate": rate, "step": 1, "steps": self.ramp_steps, "next_step_at": now + self.ramp_step,
                    "parent": parent.id},
            source_ip=parent.source_ip, destinations=list(parent.destinations), directive_ids=ids, until="expiry",
            started_at=to_datetime(now), expires_at=to_datetime(now + self.ramp_steps * self.ramp_step)))

    def _step_ramp(self, session: Session, conn: Connection, action: PolicyAction, now: float) -> None:
        params = dict(action.params or {})
        if now < params.get("next_step_at", 0):
            return
        step = int(params.get("step", 1)) + 1
        if step > int(params.get("steps", self.ramp_steps)):
            self.end(session, conn, action, "ramp complete", now, None)
            return
        rate = float(params.get("rate", self.ramp_start)) * self.ramp_factor
        end_directives(conn, list(action.directive_ids or []), now, "next ramp step")
        ids = add_directives(conn, "slow", action.source_ip or "", list(action.destinations), rate=rate,
                             reason=f"ramp after #{params.get('parent')} ({action.rule}): step {step} of "
                                    f"{params.get('steps')} at {format_rate(rate)}",
                             created_by=f"policy:{action.rule}"[:100], now=now, expires_at=None)
        params.update({"rate": rate, "step": step, "next_step_at": now + self.ramp_step})
        action.params, action.directive_ids = params, ids
        session.add(action)

    def _resume_subject(self, session: Session, conn: Connection, subject: str, why: str, now: float,
                        report: PolicyReport | None, *, ramp: bool) -> int:
        rows = list(session.execute(select(PolicyAction).where(
            col(PolicyAction.subject) == subject, col(PolicyAction.ended_at).is_(None),
            col(PolicyAction.action).in_(LANE_ACTIONS))).scalars())
        for row in rows:
            self.end(session, conn, row, why, now, report, ramp=ramp and row.action != "ramp")
        return len(rows)

    # -- suppression -------------------------------------------------------------------------

    def _apply_suppression(self, session: Session, conn: Connection, action: PolicyAction, now: float) -> int:
        return apply_suppression(conn, action, now, self.queue_exists(conn))

    def queue_exists(self, conn: Connection) -> bool:
        if self._has_queue is None:
            self._has_queue = "sender_message" in set(inspect(conn).get_table_names())
        return self._has_queue

def _affects_all(weight: ZoneWeight) -> bool:
    return "*" in weight.used_by and not weight.not_used_by


# --- suppression through the suppression list ---------------------------------------------------

def apply_suppression(conn: Connection, action: PolicyAction, now: float, queue_exists: bool = True) -> int:
    """Put the action's recipient (or the queued recipients of its domain) on
    the suppression list, marked with the action so ending it lifts exactly
    these. The list holds addresses only: a domain is applied to the messages
    queued for it, again at every full pass while the action lasts."""
    target = action.target or ""
    if target.startswith("@"):
        if not queue_exists:
            return 0
        domain = target[1:].lower()
        addresses = queued_recipients_of_domain(conn, domain)
        with Session(bind=conn) as session:
            already = addresses_from_source(session, f"policy:{action.id}")
        addresses = [a for a in addresses if a.lower() not in already]
    else:
        addresses = [target] if "@" in target else []
    if not addresses:
        return 0
    seen = datetime.fromtimestamp(now, UTC)
    entries = [SuppressionEntry(a, MANUAL, f"policy:{action.id}", detail=f"{action.rule}: {target}"[:255],
                                seen_at=seen) for a in addresses]
    with Session(bind=conn) as session:
        suppress_many(session, entries)
        session.flush()
    return len(entries)


def lift_suppression(conn: Connection, action: PolicyAction) -> int:
    with Session(bind=conn) as session:
        lifted = lift_source(session, f"policy:{action.id}", MANUAL)
        session.flush()
    return lifted
