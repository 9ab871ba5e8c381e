"""Helpers of the API tests (no tests here): an ApiServer on a free loopback
port over a migrated SQLite database, and rows the daemon would have written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from monitor.api.data import ApiData, reader_engine
from monitor.api.server import ApiServer
from monitor.api.settings import ApiConfig
from monitor.config import parse_config
from monitor.core.db import make_engine, session_scope
from monitor.storage.models import StoredEvent

TOKEN = "tok-Api-0123456789-secret-XYZ"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Running:
    server: ApiServer
    engine: Engine
    url: str


@asynccontextmanager
async def api_server(tmp_path: Path, *, url: str | None = None, **settings: Any) -> AsyncIterator[Running]:
    from monitor.parts import upgrade_schema

    url = url or f"sqlite:///{tmp_path / 'repmon.db'}"
    upgrade_schema(url)
    config = parse_config({}, base_dir=tmp_path)
    engine = make_engine(url)
    reader = reader_engine(url, 4)
    api_settings = ApiConfig(listen="127.0.0.1:0", token_env="REPMON_TEST_TOKEN", **settings)
    server = ApiServer(api_settings, ApiData(config, engine, reader), TOKEN)
    await server.start()
    try:
        yield Running(server, engine, server.url)
    finally:
        await server.stop()
        reader.dispose()
        engine.dispose()


def add_events(engine: Engine, count: int, *, kind: str = "bounce", start: int = 0) -> None:
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        for i in range(start, start + count):
            session.add(StoredEvent(kind=kind, occurred_at=now, recipient=f"r{i}@example.net",
                                    recipient_domain="example.net", reason="userunknown", hard_or_soft="hard"))


def add_health_state(engine: Engine, subject: str, state: str, score: int, reasons: list[str]) -> None:
    now = datetime.now(UTC)
    if engine.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO health_states (subject, kind, state, score, reasons, findings, figures, evaluated_at, changed_at)"
            " VALUES (:s, :k, :st, :sc, :r, '[]', '{}', :t, :t)"),
            {"s": subject, "k": subject.split(":")[0], "st": state, "sc": score, "r": json.dumps(reasons), "t": now})


def operator_suppress_action(engine: Engine, target: str) -> int:
    """An operator's suppress action, through the policy's own function."""
    import time

    from monitor.loop import health_service
    from monitor.policy import manual
    from monitor.policy.evaluate import PolicyEngine

    config = parse_config({})
    policy = PolicyEngine(config.policy, health_service(config, engine))
    with engine.begin() as conn:
        row = manual.operator_action(policy, conn, "suppress", target, user="tester", now=time.time(),
                                     reason="test action")
    assert row.id is not None
    return row.id
