"""`repmon run` and `repmon stats` as a user runs them (subprocesses), and
secrets kept out of logs, errors and reprs."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from monitor.config import parse_config
from monitor.core.config import ConfigError
from tests.fixtures._cli import ROOT, repmon, repmon_command
from tests.fixtures._configs import write_config
from tests.fixtures._ingest_rows import expected_events, mailbox_section, stored_events
from tests.fixtures._waiting import wait_until
from tests.fixtures.feedback_messages import broken_report, dsn_bounce, mixed_batch

SECRET = "Zq9-very-secret-password-Xy"
FOLDER_ONLY = {"database": {"url": "sqlite:///r.db"}, "folders": [{"path": "drop"}]}


def stats(config: Path) -> dict:
    done = repmon("stats", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_run_once_then_stats(tmp_path, imap_account):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.eml").write_bytes(dsn_bounce("file@example.org"))
    imap_account.append([dsn_bounce("imap@example.org"), broken_report("cli")])
    config = write_config(tmp_path, {"database": {"url": "sqlite:///state/repmon.db", "create_dir": True},
                                     "folders": [{"path": "drop"}], "mailboxes": [mailbox_section(imap_account)]})
    done = repmon("run", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "repmon.db").exists()  # relative to the config file
    got = stats(config)
    assert got["events"] == {"bounce": 2}
    assert (got["messages"], got["quarantined"], got["suppressed"]) == (3, 1, 2)
    assert got["suppressed_by_reason"] == {"hard_bounce": 2}
    human = repmon("stats", "--config", str(config))
    assert "events: bounce" in human.stdout and "quarantined" in human.stdout
    assert imap_account.count("repmon/processed") == 1 and imap_account.count("repmon/quarantine") == 1


def test_daemon_keeps_other_jobs_going_and_stops_on_ctrl_c(tmp_path, dovecot_server):
    good = dovecot_server.add_user()
    bad = dovecot_server.add_user()
    good.append([dsn_bounce("daemon@example.org")])
    drop = tmp_path / "drop"
    drop.mkdir()
    config = write_config(tmp_path, {
        "database": {"url": "sqlite:///repmon.db"}, "logging": {"json": True},
        "folders": [{"path": "drop", "poll_interval_s": 0.5}],
        "mailboxes": [mailbox_section(bad, password=SECRET, name="broken-box"), mailbox_section(good, name="good-box")]})
    process = subprocess.Popen([*repmon_command(), "run", "--config", str(config)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (drop / "late.eml").write_bytes(dsn_bounce("dropped-later@example.org"))
        # the folder job and the good mailbox, despite the broken one
        wait_until(lambda: stats(config)["events"].get("bounce", 0) >= 2, timeout=60, interval=0.3,
                   what="both bounces stored")
        assert stats(config)["events"] == {"bounce": 2}
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["level"] == "ERROR" and "broken-box" in line["msg"] and "refused" in line["msg"] for line in lines)
    assert any("stopped" in line["msg"] for line in lines)
    assert SECRET not in err and SECRET not in out


def test_progress_bar_for_a_large_backlog(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    for i, raw in enumerate(mixed_batch(1200, prefix="p")):
        (drop / f"{i}.eml").write_bytes(raw)
    config = write_config(tmp_path, FOLDER_ONLY)
    done = repmon("run", "--once", "--progress", "--config", str(config), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1200/1200" in done.stderr
    quiet = repmon("run", "--once", "--config", str(config))
    assert "/1200" not in quiet.stderr  # not a terminal, not asked


def test_wrong_password_fails_once_mode_without_leaking(tmp_path, imap_account):
    config = write_config(tmp_path, {"database": {"url": "sqlite:///r.db"},
                                     "mailboxes": [mailbox_section(imap_account, password=SECRET)]})
    done = repmon("run", "--once", "--config", str(config))
    assert done.returncode == 1
    assert "refused" in done.stderr and "AUTHENTICATIONFAILED" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_secrets_stay_out_of_reprs_and_config_errors(tmp_path, monkeypatch):
    config = parse_config({"mailboxes": [{"host": "h", "username": "u", "password": SECRET}]})
    assert SECRET not in repr(config) and SECRET not in str(config.mailboxes[0])
    monkeypatch.delenv("REPMON_TEST_PW", raising=False)
    by_env = parse_config({"mailboxes": [{"host": "h", "username": "u", "password_env": "REPMON_TEST_PW"}]})
    with pytest.raises(ConfigError, match="REPMON_TEST_PW is not set"):
        by_env.mailboxes[0].resolve_password()
    assert config.mailboxes[0].resolve_password() == SECRET
    with pytest.raises(ConfigError) as info:
        parse_config({"mailboxes": [{"host": "h", "username": "u", "password": SECRET, "port": "not-a-port"}]})
    assert SECRET not in str(info.value)
    done = repmon("run", "--once", "--config", str(write_config(
        tmp_path / "bad.toml", {"database": {"url": f"postgresql://u:{SECRET}@127.0.0.1:1/x"}})))
    assert done.returncode != 0 and SECRET not in done.stderr and "127.0.0.1" in done.stderr


def test_events_match_the_parsers_through_the_cli(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    messages = mixed_batch(40, prefix="cli")
    for i, raw in enumerate(messages):
        (drop / f"{i}.eml").write_bytes(raw)
    config = write_config(tmp_path, FOLDER_ONLY)
    assert repmon("run", "--once", "--config", str(config)).returncode == 0
    from monitor.core.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert stored_events(engine) == expected_events(messages)
    finally:
        engine.dispose()
