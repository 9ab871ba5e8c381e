"""`repmon actions export`: policy pauses and slows as KumoMTA shaping, PowerMTA
directives and JSON (monitor/mtalogs/actions_export.py, pure), and the command
reading the actions in force through the policy's API."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

import monitor.mtalogs as mtalogs_package
from monitor.cli import main
from monitor.core import db
from monitor.mtalogs.actions_export import ExportAction, format_json, format_kumomta, format_pmta, render
from monitor.parts import MIGRATION_DIRS
from monitor.policy.models import PolicyAction

AT = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
ACTIONS = [
    ExportAction("192.0.2.10", "google", "slow", rate=600 / 3600, expires_at=AT, action_id=1, rule="deferrals"),
    ExportAction("192.0.2.10", "google", "slow", rate=1.0, action_id=2, rule="other"),  # the slower slow wins
    ExportAction("192.0.2.11", "yahoo", "pause", expires_at=AT, action_id=3, rule="tss04"),
    ExportAction("192.0.2.12", "mx:mx1.smallco.example", "slow", rate=10 / 60),
    ExportAction("192.0.2.13", "*", "pause"),
    ExportAction("192.0.2.14", "google", "suppress"),  # not a lane action: left out
]


def test_kumomta_shaping_override_is_valid_toml():
    text = format_kumomta(ACTIONS, sources={"192.0.2.10": "ip-1"}, generated_at=AT)
    doc = tomllib.loads(text)
    google = doc["provider"]["repmon-google"]
    assert google["match"] == [{"MXSuffix": ".google.com"}, {"MXSuffix": ".googlemail.com"}]
    assert google["sources"] == {"ip-1": {"max_message_rate": "10/min"}}
    assert doc["provider"]["repmon-yahoo"]["sources"]["192.0.2.11"] == {"max_message_rate": "1/d"}
    small = doc["provider"]["repmon-mx:mx1.smallco.example"]
    assert small["match"] == [{"MXSuffix": "mx1.smallco.example"}] and small["sources"]["192.0.2.12"] == {
        "max_message_rate": "10/min"}
    assert doc["default"]["sources"]["192.0.2.13"] == {"max_message_rate": "1/d"}
    assert "kcli suspend-ready-q --name '192.0.2.11->SITE'" in text and "until 2026-12-02T18:00:00Z" in text


def test_pmta_directives():
    text = format_pmta(ACTIONS, sources={"192.0.2.11": "vmta-yahoo"}, domains={"google": ["gsuite-customer.example"]},
                       generated_at=AT)
    assert "<virtual-mta vmta-192.0.2.10>\n" in text and "<virtual-mta vmta-yahoo>\n" in text
    google = text[text.index("<virtual-mta vmta-192.0.2.10>"):text.index("</virtual-mta>")]
    for domain in ("gmail.com", "googlemail.com", "gsuite-customer.example"):
        assert f"  <domain {domain}>\n    max-msg-rate 10/m\n    backoff-max-msg-rate 10/m\n  </domain>" in google
    assert "#   pmta pause queue yahoo.com/vmta-yahoo" in text and "#   pmta pause queue aol.com/vmta-yahoo" in text
    assert "<domain *>" in text  # every destination of 192.0.2.13
    assert "# mx:mx1.smallco.example: no recipient domain known yet" in text
    assert text.count("<virtual-mta") == text.count("</virtual-mta>") == 4


def test_json_lines():
    rows = [json.loads(line) for line in format_json(ACTIONS).splitlines()]
    assert [(r["ip"], r["destination"], r["kind"], r["rate"]) for r in rows] == [
        ("192.0.2.10", "google", "slow", "10/min"), ("192.0.2.11", "yahoo", "pause", None),
        ("192.0.2.12", "mx:mx1.smallco.example", "slow", "10/min"), ("192.0.2.13", "*", "pause", None)]
    assert rows[0]["expires_at"] == "2026-12-02T18:00:00Z" and rows[0]["action_id"] == 1
    with pytest.raises(ValueError):
        render("exim", ACTIONS)


@pytest.fixture
def config_file(tmp_path) -> Path:
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    dirs = tuple(dict.fromkeys((*MIGRATION_DIRS, Path(mtalogs_package.__file__).resolve().parent / "migrations")))
    db.upgrade_schema(url, dirs)
    engine = db.make_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(PolicyAction(subject="lane:192.0.2.10/google", action="slow", rule="google-deferrals",
                                 params={"rate": 0.5}, source_ip="192.0.2.10", destinations=["google"],
                                 started_at=now, expires_at=now + timedelta(hours=2)))
        session.add(PolicyAction(subject="ip:192.0.2.11", action="pause", rule="operator", source_ip="192.0.2.11",
                                 destinations=["*"], started_at=now))
        session.add(PolicyAction(subject="ip:192.0.2.12", action="pause", rule="old", source_ip="192.0.2.12",
                                 destinations=["*"], started_at=now - timedelta(days=1), ended_at=now))
        session.add(PolicyAction(subject="rdomain:example.com", action="suppress", rule="x", target="@example.com",
                                 started_at=now))
        session.commit()
    engine.dispose()
    path = tmp_path / "repmon.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    return path


def test_the_command_exports_the_actions_in_force(config_file, capsys, tmp_path):
    assert main(["actions", "export", "--format", "json", "--config", str(config_file)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["ip"], r["destination"], r["kind"], r["rate"]) for r in rows] == [
        ("192.0.2.10", "google", "slow", "30/min"), ("192.0.2.11", "*", "pause", None)]
    out = tmp_path / "shaping-repmon.toml"
    assert main(["actions", "export", "--format", "kumomta", "--config", str(config_file), "--source", "192.0.2.10=ip-1",
                 "-o", str(out)]) == 0
    doc = tomllib.loads(out.read_text())
    assert doc["provider"]["repmon-google"]["sources"]["ip-1"] == {"max_message_rate": "30/min"}
    assert main(["actions", "export", "--format", "pmta", "--config", str(config_file)]) == 0
    assert "<domain gmail.com>\n    max-msg-rate 30/m" in capsys.readouterr().out
    assert main(["actions", "export", "--config", str(config_file), "--source", "nonsense"]) == 2
