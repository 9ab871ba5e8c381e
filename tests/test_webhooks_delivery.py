"""Webhooks against a real aiohttp receiver on loopback: signed JSON for every
new event, suppression, removal and action, in order; a receiver that is
down, then up, gets everything; a SIGKILL of the delivering process mid-way
loses nothing and keeps the order (at least once: the receiver dedupes on
X-Repmon-Delivery)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from monitor.core import db
from monitor.core.db import make_engine, session_scope
from monitor.core.runtime import Runtime
from monitor.parts import MIGRATION_DIRS
from monitor.storage import suppression_admin as admin
from monitor.storage.suppression import HARD_BOUNCE, suppress
from monitor.webhooks import outbox
from monitor.webhooks.jobs import Relay
from monitor.webhooks.models import WebhookCursor, WebhookOutbox, WebhookState
from monitor.webhooks.settings import WebhookConfig
from tests.fixtures._api import add_events, operator_suppress_action
from tests.fixtures._webhooks import SECRET, receiver

ROOT = Path(__file__).resolve().parents[1]
WEBHOOKS_DIR = ROOT / "monitor" / "webhooks" / "migrations"


def migrate(url: str) -> None:
    db.upgrade_schema(url, tuple(dict.fromkeys((*MIGRATION_DIRS, WEBHOOKS_DIR))))


def hook(url: str, **extra: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"name": "ops", "url": url, "secret": SECRET, "events": ["*"],
                                         "start": "beginning", "retry_initial_s": 0.2, "retry_max_s": 1.0,
                                         "interval_s": 0.1, **extra})


async def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def relay(engine, hooks: list[WebhookConfig]) -> AsyncIterator[Runtime]:
    runtime = Runtime(engine=engine)
    task = asyncio.create_task(Relay(hooks, runtime).serve())
    try:
        yield runtime
    finally:
        runtime.stopping.set()
        await asyncio.wait_for(task, 10)


def test_migration_creates_exactly_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate(url)
    mine = MetaData()
    for model in (WebhookOutbox, WebhookCursor, WebhookState):
        model.__table__.to_metadata(mine)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), mine)
    engine.dispose()
    names = {"webhook_outbox", "webhook_cursors", "webhook_state"}
    diff = [d for d in diff if d[0] != "remove_table" and not (d[0] == "remove_index" and d[1].table.name not in names)]
    assert diff == [], diff


@pytest.mark.parametrize("db_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_everything_is_delivered_signed_and_in_order(tmp_path, request, db_kind):
    url = f"sqlite:///{tmp_path / 'w.db'}" if db_kind == "sqlite" else request.getfixturevalue("postgres_url")
    migrate(url)
    engine = make_engine(url)
    try:
        add_events(engine, 3)
        with session_scope(engine) as session:
            suppress(session, "r0@example.net", HARD_BOUNCE, "bounce", detail="userunknown", event_id=1)
            suppress(session, "r1@example.net", HARD_BOUNCE, "bounce", detail="userunknown", event_id=2)
            admin.remove(session, "r0@example.net", why="fixed", actor="cli:alice")
        action_id = operator_suppress_action(engine, "held@example.net")
        async with receiver() as r:
            only_complaints = hook(r.url, name="complaints", events=["complaint"])
            async with relay(engine, [hook(r.url), only_complaints]):
                await wait_for(lambda: len(r.got) >= 7)
                await asyncio.sleep(0.5)
        types = [g["type"] for g in r.got]
        assert types == ["bounce", "bounce", "bounce", "suppression", "suppression", "unsuppression", "action"], types
        assert [g["delivery"] for g in r.got] == sorted(g["delivery"] for g in r.got)
        assert r.got[0]["data"]["recipient"] == "r0@example.net" and r.got[0]["id"] == "events:1"
        assert [g["data"]["address"] for g in r.got[3:5]] == ["r1@example.net", "held@example.net"]
        assert r.got[5]["data"]["actor"] == "cli:alice" and r.got[5]["data"]["target"] == "r0@example.net"
        assert r.got[6]["data"]["id"] == action_id and r.got[6]["data"]["target"] == "held@example.net"
        assert r.bad_signatures == 0
        with engine.connect() as conn:
            status = {s["webhook"]: s for s in outbox.status(conn, [hook(r.url), only_complaints])}
        assert status["ops"]["pending"] == 0 and status["ops"]["delivered_total"] == 7
        assert status["complaints"]["delivered_total"] == 0
    finally:
        engine.dispose()


async def test_receiver_down_then_up_gets_everything_in_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        async with receiver(start=False) as r:
            hooks = [hook(r.url)]
            async with relay(engine, hooks):
                add_events(engine, 20)
                await asyncio.sleep(1.5)  # refused connections: retries back off
                with engine.connect() as conn:
                    [down] = outbox.status(conn, hooks)
                assert down["pending"] == 20 and down["failed_total"] >= 2 and down["head_attempts"] >= 2
                assert down["head_error"] and "secret-in-url" not in (down["head_error"] or "")
                assert down["lag_s"] > 1.0
                r.fail_with = 503
                await r.start()
                await asyncio.sleep(1.0)
                assert r.got == []
                r.fail_with = None
                add_events(engine, 5, start=20)
                await wait_for(lambda: len(r.got) >= 25)
            recipients = [g["data"]["recipient"] for g in r.got]
            assert recipients == [f"r{i}@example.net" for i in range(25)]
            with engine.connect() as conn:
                [up] = outbox.status(conn, hooks)
            assert up["pending"] == 0 and up["lag_s"] == 0.0 and up["delivered_total"] == 25
    finally:
        engine.dispose()


CHILD = """
import asyncio, json, sys
from monitor.core.db import make_engine
from monitor.core.runtime import Runtime
from monitor.webhooks.jobs import provide
from monitor.webhooks.settings import WebhookConfig

async def main():
    engine = make_engine(sys.argv[1])
    [job] = provide([WebhookConfig.model_validate(json.loads(sys.argv[2]))], Runtime(engine=engine))
    await job.service()

asyncio.run(main())
"""


def start_child(url: str, settings: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, json.dumps(settings)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})


async def test_sigkill_mid_way_loses_nothing_and_keeps_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate(url)
    engine = make_engine(url)
    total = 600
    try:
        add_events(engine, total)
        async with receiver() as r:
            r.delay_s = 0.002
            settings = {"name": "ops", "url": r.url, "secret": SECRET, "events": ["bounce"], "start": "beginning",
                        "retry_initial_s": 0.2, "retry_max_s": 1.0, "interval_s": 0.1}
            child = start_child(url, settings)
            try:
                await wait_for(lambda: len(r.got) >= total // 3, timeout=60)
                child.send_signal(signal.SIGKILL)
                child.wait(10)
                killed_at = len(r.got)
                assert killed_at < total, "the child finished before it was killed"
                child = start_child(url, settings)
                await wait_for(lambda: len({g["delivery"] for g in r.got}) >= total, timeout=90)
            finally:
                child.send_signal(signal.SIGTERM)
                child.wait(15)
        first_seen: list[int] = []
        for g in r.got:
            if g["delivery"] not in first_seen[-200:] and (not first_seen or g["delivery"] > first_seen[-1]):
                first_seen.append(g["delivery"])
            else:
                assert g["delivery"] in first_seen, "a delivery out of order"
        recipients = [g["data"]["recipient"] for g in r.got]
        distinct = list(dict.fromkeys(recipients))
        assert distinct == [f"r{i}@example.net" for i in range(total)]  # nothing lost, in order
        assert len(recipients) - total <= 50  # repeats only of the batch in flight at the kill
    finally:
        engine.dispose()
