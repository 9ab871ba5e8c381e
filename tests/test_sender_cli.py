"""`repmon send` and `repmon lanes` as a user runs them (a real process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures._cli import repmon
from tests.fixtures._configs import relay_sender, write_config
from tests.fixtures.smtp_receivers import Script


@pytest.fixture
def campaign_files(tmp_path: Path):
    template = tmp_path / "news.eml"
    template.write_text("From: News <news@example.com>\nSubject: Hello {{first_name}}\n\nHi {{first_name}}!\n")
    recipients = tmp_path / "list.csv"
    recipients.write_text("email,first_name\n" + "".join(f"user{i}@example.org,U{i}\n" for i in range(25))
                          + "not-an-address,X\n")
    return template, recipients


def test_send_wait_json(db_url, smtp_sink, campaign_files, tmp_path):
    template, recipients = campaign_files
    config = write_config(tmp_path, relay_sender(db_url, smtp_sink.port))
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                  "--campaign", "spring", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {k: result[k] for k in ("queued", "delivered", "deferred", "bounced", "suppressed")} == {
        "queued": 25, "delivered": 25, "deferred": 0, "bounced": 0, "suppressed": 0}
    assert result["elapsed_s"] > 0 and result["rate_per_s"] > 0 and result["invalid"] == 1
    assert "list.csv:27: 'not-an-address': not an email address" in done.stderr
    assert sum(smtp_sink.tokens().values()) == 25


def test_send_without_wait_only_queues_and_explains_bad_input(db_url, campaign_files, tmp_path):
    template, recipients = campaign_files
    config = write_config(tmp_path, relay_sender(db_url, 2525))
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                  "--json")
    result = json.loads(done.stdout)
    assert (result["queued"], result["delivered"], result["deferred"]) == (25, 0, 0)  # queued, not deferred
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("mail,first_name\nx@example.org,X\n")
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(bad_csv))
    assert done.returncode == 2 and "needs an 'email' column" in done.stderr
    other = tmp_path / "other.csv"
    other.write_text("email\nx@example.org\n")
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(other))
    assert done.returncode == 2 and "{{first_name}}" in done.stderr
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                  "--pool", "nosuch")
    assert done.returncode == 2 and "pool 'nosuch'" in done.stderr


def test_lanes_list_pause_slow_resume(db_url, scripted_smtp, campaign_files, tmp_path):
    server = scripted_smtp(Script(rcpt_replies={
        "user3@example.org": "421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred due to user complaints"}))
    template, recipients = campaign_files
    config = write_config(tmp_path, relay_sender(db_url, server.port))
    done = repmon("send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
                  "--wait", "--json")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["deferred"] >= 1  # user3 and whatever the suspension held back
    listing = repmon("lanes", "--config", str(config), "--json")
    data = json.loads(listing.stdout)
    (lane,) = data["lanes"]
    assert lane["lane"] == "127.0.0.2|relay" and lane["state"] == "suspended"
    assert "yahoo-complaints-deferral" in lane["why"] and lane["until"]
    assert data["actions"][0]["rule"] == "yahoo-complaints-deferral" and "[TSS04]" in data["actions"][0]["response"]
    text = repmon("lanes", "--config", str(config)).stdout
    assert "127.0.0.2 -> relay" in text and "suspended" in text and "rule actions in force" in text

    assert repmon("lanes", "pause", "--config", str(config), "--ip", "127.0.0.2", "--destination", "relay",
                  "--reason", "spam trap hits").returncode == 0
    lane = json.loads(repmon("lanes", "--config", str(config), "--json").stdout)["lanes"][0]
    assert lane["state"] == "paused" and "spam trap hits" in lane["why"]
    done = repmon("lanes", "resume", "--config", str(config), "--ip", "127.0.0.2", "--destination", "relay")
    assert "1 directives and 1 rule actions ended" in done.stdout
    done = repmon("lanes", "slow", "--config", str(config), "--ip", "127.0.0.2", "--destination", "relay",
                  "--rate", "30/min")
    assert done.returncode == 0 and "30/min" in done.stdout
    lane = json.loads(repmon("lanes", "--config", str(config), "--json").stdout)["lanes"][0]
    assert (lane["state"], lane["rate"]) == ("slowed", "30/min")
    assert repmon("lanes", "slow", "--config", str(config), "--ip", "127.0.0.2").returncode == 2  # no --rate
    assert repmon("lanes", "pause", "--config", str(config)).returncode == 2  # no lane named
