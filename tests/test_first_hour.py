"""What a new operator meets in the first hour (issue 14): each test is one
thing that confused or misled someone, run the way they ran it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from monitor.alerts.render import email_message, slack_payload
from monitor.cli import main
from monitor.config import parse_config
from monitor.signals.zones import build_zones, classify
from tests.fixtures._configs import relay_sender, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def campaign_files(tmp_path: Path) -> tuple[Path, Path]:
    template = tmp_path / "news.eml"
    template.write_text("From: News <news@example.com>\nSubject: Hello {{first_name}}\n\nHi {{first_name}}!\n")
    recipients = tmp_path / "list.csv"
    recipients.write_text("email,first_name\n" + "".join(f"user{i}@example.org,U{i}\n" for i in range(5)))
    return template, recipients


def test_pausing_a_lane_that_never_sent_shows_in_the_listing(tmp_path, capsys):
    config = write_config(tmp_path, relay_sender(f"sqlite:///{tmp_path / 'repmon.db'}", 2525))
    assert main(["lanes", "pause", "--config", str(config), "--ip", "127.0.0.9", "--destination", "yahoo",
                 "--reason", "before the launch"]) == 0
    assert main(["lanes", "slow", "--config", str(config), "--ip", "127.0.0.2", "--destination", "*",
                 "--rate", "5/min"]) == 0
    capsys.readouterr()
    assert main(["lanes", "--config", str(config), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lanes = {lane["lane"]: lane for lane in data["lanes"]}
    assert lanes["127.0.0.9|yahoo"]["state"] == "paused" and "before the launch" in lanes["127.0.0.9|yahoo"]["why"]
    assert {(d["kind"], d["source_ip"], d["destination"]) for d in data["directives"]} == {
        ("pause", "127.0.0.9", "yahoo"), ("slow", "127.0.0.2", "*")}
    assert main(["lanes", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "127.0.0.9 -> yahoo" in text and "paused" in text
    assert "directives in force" in text and "slow to 5/min 127.0.0.2 -> *" in text


def test_send_without_wait_says_queued_not_deferred(tmp_path, campaign_files, capsys):
    template, recipients = campaign_files
    config = write_config(tmp_path, relay_sender(f"sqlite:///{tmp_path / 'repmon.db'}", 2525))
    args = ["send", "--config", str(config), "--template", str(template), "--recipients", str(recipients)]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["queued"], result["deferred"], result["delivered"]) == (5, 0, 0)
    assert main([*args, "--campaign", "again"]) == 0
    text = capsys.readouterr().out
    assert "5 queued" in text and "deferred" not in text


def _notification(kind: str, severity: str = "critical") -> dict:
    return {"kind": kind, "severity": severity, "cause": "complaint_rate", "subject": "ip:192.0.2.10",
            "title": "192.0.2.10 complaint rate 0.4 % over 24h", "text": "0.4 % > 0.3 %"}


def test_a_resolved_alert_mail_is_not_called_critical():
    subject, body = email_message([_notification("resolved")], 20)
    assert subject.startswith("[repmon resolved] ") and "critical" not in subject
    assert "[resolved]" in body
    subject, _ = email_message([_notification("ended", "warning")], 20)
    assert subject.startswith("[repmon ended] ")
    # something still firing outranks good news
    subject, _ = email_message([_notification("resolved"), _notification("firing", "warning")], 20)
    assert subject.startswith("[repmon warning] ")
    context = slack_payload([_notification("resolved")], 20)["blocks"][-1]["elements"][0]["text"]
    assert "critical" not in context and "resolved" in context


def test_a_listing_reason_names_the_code_once():
    zen = next(z for z in build_zones(parse_config({}).dnsbl) if z.display == "zen.spamhaus.org")
    verdict = classify(zen, ["127.0.0.2"])
    assert verdict.status == "listed" and verdict.codes == ("127.0.0.2",)
    assert "127.0.0.2" not in verdict.reason and verdict.reason == verdict.meanings[0]
    # what `repmon health` prints: "(codes: meaning)"
    shown = f"({', '.join(verdict.codes)}: {verdict.reason})"
    assert shown.count("127.0.0.2") == 1


def _commented_section(text: str, header: str) -> str:
    """The commented-out block starting at `# HEADER`, uncommented."""
    lines = text.splitlines()
    start = lines.index(f"# {header}")
    block = []
    for line in lines[start:]:
        if not line.startswith("# ") and line != "#":
            break
        if line == "#":
            break
        block.append(line[2:].split("  #")[0].split(" # ")[0])
    return "\n".join(block) + "\n"


def test_config_example_documents_health_zones_and_it_validates():
    text = (ROOT / "config.example.toml").read_text()
    assert "# [[health.zones]]" in text
    data = tomllib.loads(_commented_section(text, "[[health.zones]]"))
    config = parse_config({"health": data["health"]})
    (zone,) = config.health.zones
    assert zone.zone and zone.weight >= 0


def test_importing_the_address_parser_prints_nothing_even_when_flanker_rebuilds_its_tables(tmp_path):
    """On a fresh install flanker's cached parser tables do not match and it
    rebuilds them at import, logging ~28 grammar warnings (unused tokens,
    unreachable symbols) through Python's last-resort handler."""
    import flanker

    copy = tmp_path / "site"
    shutil.copytree(Path(flanker.__file__).parent, copy / "flanker",
                    ignore=shutil.ignore_patterns("*parsetab.py", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", "import parsers.addresses, flanker; print(flanker.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(copy))  # the copy without tables was the one imported
    assert done.stderr == ""


def test_make_install_is_quiet():
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert installs and all("-q -q" in line and "--disable-pip-version-check" in line for line in installs)


def test_hostile_addresses_do_not_make_flanker_log(caplog):
    """flanker's lexer sets its own logger to INFO at import, which overrode the
    quiet "flanker" parent: every odd address in a bounce logged a warning with
    the address in it."""
    import logging

    from parsers.addresses import normalize

    caplog.set_level(logging.DEBUG)
    normalize("utf-8; j\udcc3\udcb6hn@ex\udcc3\udca4mple")  # bytes a bounce could not decode
    normalize("<weird[]@@example..com>")
    assert not [r for r in caplog.records if r.name.startswith("flanker") and r.levelno >= logging.WARNING]
