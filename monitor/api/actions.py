"""Policy actions for the API: listed and cancelled through the very
functions `repmon actions` uses (monitor/policy/manual.py), with the changes
announced through alerts the way the command does (monitor/loop.announce)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from monitor.alerts.notify import AlertCenter
from monitor.config import RepmonConfig
from monitor.loop import announce, health_service
from monitor.policy import manual
from monitor.policy.actions import action_json
from monitor.policy.evaluate import PolicyEngine, PolicyReport

ActionError = manual.ManualError


def list_json(conn: Connection, *, active_only: bool, since: datetime | None) -> list[dict[str, Any]]:
    return [action_json(row) for row in manual.list_actions(conn, since=since, active_only=active_only)]


def cancel(config: RepmonConfig, engine: Engine, conn: Connection, action_id: int, *, user: str, reason: str,
           now: float) -> dict[str, Any]:
    """End action `action_id` now, as `repmon actions cancel ID --reason ...` does."""
    policy = PolicyEngine(config.policy, health_service(config, engine))
    report = PolicyReport()
    row = manual.cancel(policy, conn, action_id, user=user, now=now, reason=reason, report=report)
    announce(AlertCenter(config.alerts), conn, report.changes)
    return action_json(row)
