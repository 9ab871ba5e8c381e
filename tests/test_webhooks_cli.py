"""`repmon webhooks status`: lag and failures of a webhook whose receiver is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from monitor.core.db import make_engine
from monitor.parts import upgrade_schema
from monitor.webhooks import outbox
from monitor.webhooks.settings import WebhookConfig
from tests.fixtures._api import add_events
from tests.fixtures.databases import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_status_shows_pending_lag_and_failures(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    port = free_port()
    hook = WebhookConfig.model_validate({"name": "ops", "url": f"http://127.0.0.1:{port}/h", "secret_env": "S",
                                         "start": "beginning"})
    add_events(engine, 4)
    with engine.begin() as conn:
        assert outbox.enqueue(conn, hook) == 4
        [head] = outbox.head(conn, "ops", 1)
        outbox.take_lease(conn, "ops", "test", 0.0, 30)
        outbox.mark_failed(conn, "ops", head, None, "ClientConnectorError: refused", 60)
    engine.dispose()
    config = tmp_path / "repmon.toml"
    config.write_text(f'[database]\nurl = "sqlite:///repmon.db"\n[[webhooks]]\nname = "ops"\n'
                      f'url = "http://127.0.0.1:{port}/h"\nsecret_env = "S"\n')
    run = [sys.executable, "-m", "monitor.cli", "webhooks", "status", "--config", str(config)]
    done = subprocess.run([*run, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "S": "x"})
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["webhook"] == "ops" and row["pending"] == 4 and row["head_attempts"] == 1
    assert row["failed_total"] == 1 and "refused" in row["head_error"] and row["lag_s"] >= 0
    human = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "ops: 4 pending" in human.stdout and "head failed 1 times" in human.stdout
