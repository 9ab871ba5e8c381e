"""`repmon suppressions ...` as an operator runs it (subprocesses, SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from monitor.core.db import make_engine, session_scope
from monitor.parts import upgrade_schema
from monitor.storage.suppression import HARD_BOUNCE, suppress

ROOT = Path(__file__).resolve().parents[1]


def repmon(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPMON_USER": "alice"}
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_suppressions_commands(tmp_path: Path):
    config = tmp_path / "repmon.toml"
    config.write_text('[database]\nurl = "sqlite:///repmon.db"\n')
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        suppress(session, "dead@example.net", HARD_BOUNCE, "bounce", detail="userunknown")
    engine.dispose()
    c = ("--config", str(config))

    added = repmon("suppressions", "add", "Vip@Example.org", "--reason", "asked to stop", *c)
    assert added.returncode == 0, added.stderr
    assert "suppressed vip@example.org" in added.stdout
    assert repmon("suppressions", "add", "@trap.example", "--reason", "spam trap", *c).returncode == 0
    bad = repmon("suppressions", "add", "not-an-address", "--reason", "x", *c)
    assert bad.returncode == 2 and "address" in bad.stderr

    listed = repmon("suppressions", "list", "--json", *c)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["address"] for r in rows] == ["dead@example.net", "vip@example.org", "@trap.example"]
    assert rows[1]["source"] == "cli:alice"
    by_reason = repmon("suppressions", "list", "--reason", "hard_bounce", *c)
    assert "dead@example.net" in by_reason.stdout and "vip@" not in by_reason.stdout
    searched = repmon("suppressions", "list", "--search", "trap", "--json", *c)
    assert [json.loads(x)["address"] for x in searched.stdout.splitlines()] == ["@trap.example"]
    assert repmon("suppressions", "list", "--since", "1h", "--source", "cli:*", "--json", *c).stdout.count("\n") == 2

    shown = repmon("suppressions", "show", "vip@example.org", "--json", *c)
    detail = json.loads(shown.stdout)
    assert detail["reason"] == "manual" and detail["detail"] == "asked to stop"
    assert detail["history"][0]["actor"] == "cli:alice" and detail["history"][0]["op"] == "add"
    human = repmon("suppressions", "show", "dead@example.net", *c)
    assert "hard_bounce" in human.stdout and "userunknown" in human.stdout
    assert repmon("suppressions", "show", "nobody@example.net", *c).returncode == 1

    full = repmon("suppressions", "export", "--format", "postfix", *c)
    assert full.returncode == 0, full.stderr
    assert full.stdout.splitlines() == ["dead@example.net REJECT 5.7.1 suppressed: hard_bounce (userunknown)",
                                        "vip@example.org REJECT 5.7.1 suppressed: manual (asked to stop)",
                                        "trap.example REJECT 5.7.1 suppressed: manual (spam trap)"]
    cursor = full.stderr.strip().split("cursor: ")[1].split()[0]

    removed = repmon("suppressions", "remove", "vip@example.org", "--reason", "customer again", *c)
    assert removed.returncode == 0 and "removed vip@example.org" in removed.stdout
    assert repmon("suppressions", "remove", "vip@example.org", "--reason", "twice", *c).returncode == 1
    assert repmon("suppressions", "remove", "dead@example.net", "--reason", "", *c).returncode == 2

    delta = repmon("suppressions", "export", "--format", "csv", "--since", cursor, *c)
    lines = delta.stdout.splitlines()
    assert lines[0].startswith("op,address") and lines[1].startswith("remove,vip@example.org") and len(lines) == 2
    assert "cursor: v1." in delta.stderr
    as_json = json.loads(repmon("suppressions", "export", "--format", "json", *c).stdout)
    assert [a["address"] for a in as_json["added"]] == ["dead@example.net", "@trap.example"]
    pmta = repmon("suppressions", "export", "--format", "pmta", *c)
    assert pmta.stdout.splitlines() == ["dead@example.net", "@trap.example"]
    assert repmon("suppressions", "export", "--format", "csv", "--since", "garbage", *c).returncode == 2
