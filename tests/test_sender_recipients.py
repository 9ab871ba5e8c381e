"""Recipient CSVs as operators really write them (issue 14): addresses that
are not deliverable hosts, the same address twice, a run that stops half-way
and is run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from monitor.cli import main
from monitor.config import parse_config
from sender import campaign
from sender.campaign import CampaignError, clean_address, inject
from tests.fixtures._configs import relay_sender, write_config


@pytest.mark.parametrize("value", [
    "a@[127.0.0.1]", "a@[IPv6:::1]", "a@-example.com", "a@example-.com", "a@example..com", "a@127.0.0.1",
    "a b@example.com", "<a@example.com> x", "x <a@example.com>", "a@@example.com", "@example.com", "a@",
    "a@example", "a\x00@example.com", "a" * 65 + "@example.com",
])
def test_not_recipients(value):
    assert clean_address(value) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("a@example.com", "a@example.com"),
    ("First.Last@Example.COM", "First.Last@example.com"),
    ("<a@example.com>", "a@example.com"),
    ("jöhn@exämple.com", "jöhn@exämple.com"),
    ("用户@例子.广告", "用户@例子.广告"),
    ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
])
def test_recipients(value, expected):
    assert clean_address(value) == expected


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    template = tmp_path / "news.eml"
    template.write_text("From: News <news@example.com>\nSubject: Hello {{name}}\n\nHi {{name}}!\n")
    recipients = tmp_path / "list.csv"
    recipients.write_text("email,name\n" + "".join(f"user{i}@example.org,U{i}\n" for i in range(10)))
    return template, recipients


def _config(url: str):
    return parse_config(relay_sender(url, 2525)).sender


def _stored(engine, campaign_name: str) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT recipient FROM sender_message WHERE campaign = :c ORDER BY id"), {"c": campaign_name})]


def test_invalid_hosts_in_a_csv_are_reported_not_queued(sqlite_engine, sqlite_url, files):
    template, recipients = files
    recipients.write_text("email,name\na@[127.0.0.1],A\nb@-example.com,B\njöhn@exämple.com,J\nok@example.org,O\n")
    result = inject(sqlite_engine, _config(sqlite_url), template, recipients, campaign="c", pool="default")
    assert [(line, value) for line, value, _ in result.invalid] == [(2, "a@[127.0.0.1]"), (3, "b@-example.com")]
    assert result.queued == 2
    assert _stored(sqlite_engine, "c") == ["jöhn@exämple.com", "ok@example.org"]


def test_duplicates_in_one_file_are_queued_once_domain_case_insensitively(sqlite_engine, sqlite_url, files):
    template, recipients = files
    recipients.write_text("email,name\nUser@Example.ORG,A\nUser@example.org,B\nuser@example.org,C\n"
                          "<User@EXAMPLE.org>,D\n")
    result = inject(sqlite_engine, _config(sqlite_url), template, recipients, campaign="c", pool="default")
    # the local part may be case-sensitive (RFC 5321): user@ and User@ are two mailboxes
    assert (result.queued, result.duplicates) == (2, 2)
    assert _stored(sqlite_engine, "c") == ["User@example.org", "user@example.org"]
    again = inject(sqlite_engine, _config(sqlite_url), template, recipients, campaign="c", pool="default",
                   allow_duplicates=True)
    assert (again.queued, again.duplicates) == (4, 0)


def test_a_run_that_fails_half_way_resumes_without_duplicates(sqlite_engine, sqlite_url, files, monkeypatch):
    template, recipients = files
    monkeypatch.setattr(campaign, "CHUNK", 3)
    good = [f"user{i}@example.org,U{i}" for i in range(10)]
    broken = good[:7] + ['bad@example.org,"' + "x" * 200_000 + '"'] + good[7:]  # over csv's field limit
    recipients.write_text("email,name\n" + "\n".join(broken) + "\n")
    with pytest.raises(CampaignError) as failed:
        inject(sqlite_engine, _config(sqlite_url), template, recipients, campaign="c", pool="default")
    assert "list.csv:9" in str(failed.value) and "run the same command again" in str(failed.value)
    partial = _stored(sqlite_engine, "c")
    assert 0 < len(partial) < 10
    recipients.write_text("email,name\n" + "\n".join(good) + "\n")
    result = inject(sqlite_engine, _config(sqlite_url), template, recipients, campaign="c", pool="default")
    assert result.queued == 10 - len(partial) and result.duplicates == len(partial)
    stored = _stored(sqlite_engine, "c")
    assert sorted(stored) == sorted(f"user{i}@example.org" for i in range(10))


def test_send_rerun_skips_what_is_queued_and_allow_duplicates_queues_again(tmp_path, files, capsys):
    template, recipients = files
    config = write_config(tmp_path, relay_sender(f"sqlite:///{tmp_path / 'repmon.db'}", 2525))
    args = ["send", "--config", str(config), "--template", str(template), "--recipients", str(recipients),
            "--campaign", "spring", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["queued"], first["duplicates"]) == (10, 0)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["queued"], second["duplicates"]) == (0, 10)
    assert main([*args, "--allow-duplicates"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert (third["queued"], third["duplicates"]) == (10, 0)
