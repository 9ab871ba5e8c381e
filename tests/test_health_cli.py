"""`repmon health` and `repmon actions` as a user runs them."""

from __future__ import annotations

import json
import time

import pytest

from monitor.cli import main
from monitor.loop import HealthLoop
from tests.fixtures._configs import write_config
from tests.fixtures._health_rows import add_deliveries, add_events, config, directives, set_listing


@pytest.fixture
def config_file(engine, tmp_path):
    return str(write_config(tmp_path, {"database": {"url": engine.url.render_as_string(hide_password=False)},
                                       "dnsbl": {"domains": ["example.com"]}}))


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_health_json_and_table(engine, config_file, capsys):
    now = time.time()
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=500, at=now - 600)
    add_events(engine, n=3, at=now - 60, kind="feedback", complaint=True)
    add_deliveries(engine, ip="127.0.0.3", dest="yahoo", n=500, at=now - 600)
    set_listing(engine, "127.0.0.4", "zen.spamhaus.org", ["127.0.0.4"], at=now - 60, reason="XBL")
    assert main(["health", "--config", config_file, "--json"]) == 0
    lines = _json_lines(capsys.readouterr().out)
    rows = {r["subject"]: r for r in lines}
    assert set(rows) == {"ip:127.0.0.2", "ip:127.0.0.3", "ip:127.0.0.4", "lane:127.0.0.2/yahoo",
                         "lane:127.0.0.3/yahoo", "domain:example.com"}
    for row in rows.values():
        assert set(row) == {"subject", "state", "score", "reasons"} and row["reasons"]
    assert rows["lane:127.0.0.2/yahoo"]["state"] == "critical"
    assert rows["lane:127.0.0.2/yahoo"]["reasons"][0] == \
        "complaint rate 0.6% (3 of 500 delivered) over 24h >= critical threshold 0.3%"
    assert rows["ip:127.0.0.3"]["state"] == "healthy" and rows["ip:127.0.0.3"]["score"] == 100
    assert rows["ip:127.0.0.4"]["state"] == "blocked" and "zen.spamhaus.org" in rows["ip:127.0.0.4"]["reasons"][0]
    # worst first
    assert [r["state"] for r in lines] == ["blocked", "critical", "critical", "critical", "healthy", "healthy"]
    assert main(["health", "--config", config_file, "--state", "blocked"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["SUBJECT", "STATE", "SCORE", "REASONS"]
    assert "ip:127.0.0.4" in table and "ip:127.0.0.3" not in table


def test_actions_list_cancel_and_manual(engine, config_file, capsys):
    now = time.time()
    add_deliveries(engine, ip="127.0.0.2", dest="yahoo", n=1000, at=now - 600)
    add_events(engine, n=5, at=now - 60, kind="feedback", complaint=True)
    HealthLoop(config(), engine).tick()
    assert main(["actions", "--config", config_file, "--json"]) == 0
    [row] = _json_lines(capsys.readouterr().out)
    assert {k: row[k] for k in ("subject", "action", "rule", "ended")} == {
        "subject": "lane:127.0.0.2/yahoo", "action": "pause", "rule": "lane-complaint-rate-pause", "ended": None}
    assert row["evidence"] == ["complaint rate 0.5% (5 of 1,000) over 24h >= 0.3%"]
    assert row["started"].endswith("Z") and row["expires"].endswith("Z")
    assert main(["actions", "cancel", str(row["id"]), "--reason", "checked", "--no-ramp", "--config", config_file]) == 0
    assert "ended (cancelled by" in capsys.readouterr().out
    assert directives(engine) == []
    assert main(["actions", "pause", "lane:127.0.0.5/google", "--for", "2h", "--config", config_file, "--json"]) == 0
    paused = _json_lines(capsys.readouterr().out)[0]
    assert paused["action"] == "pause" and paused["rule"] == "operator" and paused["expires"] is not None
    assert [(d["source_ip"], d["destination"]) for d in directives(engine)] == [("127.0.0.5", "google")]
    assert main(["actions", "--config", config_file, "--active", "--json"]) == 0
    assert [r["subject"] for r in _json_lines(capsys.readouterr().out)] == ["lane:127.0.0.5/google"]
    assert main(["actions", "pause", "domain:example.com", "--config", config_file]) == 2
    assert "ip:ADDR or lane:ADDR/DESTINATION" in capsys.readouterr().err
    assert main(["actions", "cancel", "9999", "--config", config_file]) == 2
