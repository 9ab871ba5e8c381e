"""The policy's table: every action the policy (or an operator through
`repmon actions`) took, with its evidence.

Created by the historic revision monitor/health/migrations/0004_health.py
(which made the health, policy and alert tables together); a later change is
a revision of its own branch depending on 0004_health.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text
from sqlmodel import Field, SQLModel

from monitor.core.dbtypes import BigId, json_field, when_field


class PolicyAction(SQLModel, table=True):
    """One action on a subject: what, why (rule + evidence), from when to when.

    pause / slow / ramp reach the sender as rows of its lane directive table
    (`directive_ids`); suppress as suppression rows (source "policy:<id>");
    alert only as an alert. Ended by expiry, by the condition clearing, or by
    an operator (`repmon actions cancel`), which `end_reason` says.
    """

    __tablename__ = "policy_actions"
    __table_args__ = (
        Index("ix_policy_actions_active", "ended_at"),
        Index("ix_policy_actions_subject_rule", "subject", "rule"),
        Index("ix_policy_actions_started", "started_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    subject: str = Field(max_length=320)
    action: str = Field(max_length=10)  # pause | slow | ramp | suppress | alert
    rule: str = Field(max_length=100)
    created_by: str = Field(default="policy", max_length=100)  # policy | operator:<name>
    evidence: list = json_field([])  # the reasons that made the rule fire
    params: dict = json_field({})  # rate, scope, zone, destinations, evidence counts, ramp step...
    source_ip: str | None = Field(default=None, max_length=64)
    destinations: list = json_field([])  # lane destinations it covers ("*" = all)
    target: str | None = Field(default=None, max_length=320)  # suppress: recipient or @domain
    directive_ids: list = json_field([])
    until: str = Field(default="clear", max_length=8)  # clear | expiry | manual
    started_at: datetime = when_field()
    expires_at: datetime | None = when_field(nullable=True)
    ended_at: datetime | None = when_field(nullable=True)
    end_reason: str | None = Field(default=None, sa_type=Text)
