"""An MTA repmon does not run feeds health: its Postfix log, read by `repmon
run --once`, gives `repmon health` its IPs, domains and lanes, with rates."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.fixtures._cli import repmon
from tests.fixtures._configs import write_config


def postfix_lines(now: float, sent: int, bounced: int) -> str:
    stamp = time.strftime("%b %e %H:%M:%S", time.gmtime(now - 120))
    out = []
    for n in range(sent + bounced):
        qid = f"Q{n:08X}"
        out.append(f"{stamp} mx1 postfix/qmgr[99]: {qid}: from=<bounces@news.example.org>, size=100, nrcpt=1 "
                   "(queue active)\n")
        if n < sent:
            out.append(f"{stamp} mx1 postfix/smtp[1234]: {qid}: to=<user{n}@gmail.com>, "
                       "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, "
                       "status=sent (250 2.0.0 OK gsmtp)\n")
        else:
            out.append(f"{stamp} mx1 postfix/smtp[1234]: {qid}: to=<gone{n}@gmail.com>, "
                       "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, "
                       f"status=bounced (host gmail-smtp-in.l.google.com[142.250.1.27] said: 550 5.1.1 <gone{n}@gmail.com>: "
                       "The email account that you tried to reach does not exist (in reply to RCPT TO command))\n")
    return "".join(out)


def test_an_mta_log_gives_health_its_ips_and_rates(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(postfix_lines(time.time(), sent=180, bounced=20))
    config = write_config(tmp_path, {
        "database": {"url": f"sqlite:///{tmp_path / 'repmon.db'}"},
        "health": {"domains": ["news.example.org"]},
        "delivery_logs": [{"name": "mx1", "kind": "postfix", "path": str(log), "source_ip": "192.0.2.10",
                           "timezone": "UTC"}],
    })
    done = repmon("run", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    health = repmon("health", "--config", str(config), "--json")
    assert health.returncode == 0, health.stderr
    subjects = {row["subject"]: row for row in map(json.loads, health.stdout.splitlines())}
    assert "ip:192.0.2.10" in subjects and "domain:news.example.org" in subjects
    for subject in ("ip:192.0.2.10", "domain:news.example.org", "lane:192.0.2.10/google"):
        assert subjects[subject]["state"] == "critical"
        assert any("(20 of 200 sent)" in reason for reason in subjects[subject]["reasons"]), subjects[subject]
    stats = json.loads(repmon("stats", "--config", str(config), "--json").stdout)
    assert stats["events"].get("bounce") == 20
    assert stats["suppressed"] == 20
