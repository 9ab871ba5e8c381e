"""The stand-ins are no looser than the APIs they stand for.

The Slack incoming-webhook stand-in (tests/fixtures/slack.py) refuses what
Slack refuses, with Slack's status and error words, whatever it was scripted
to answer; and the peer fixtures skip locally but fail under CI when a real
peer is missing (tests/fixtures/_peers.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fixtures._peers import peer_unavailable, peers_required
from tests.fixtures.http_fixture_server import Reply
from tests.fixtures.slack import MAX_BLOCKS, MAX_HEADER_TEXT, MAX_SECTION_TEXT, SlackError, SlackWebhook, parse_payload

ROOT = Path(__file__).resolve().parents[1]


def header(text: str, kind: str = "plain_text") -> dict:
    return {"type": "header", "text": {"type": kind, "text": text}}


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def post(url: str, payload: Any = None, *, data: bytes | None = None,
               content_type: str = "application/json") -> tuple[int, str, dict[str, str]]:
    body = data if data is not None else json.dumps(payload).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers={"Content-Type": content_type}) as reply:
            return reply.status, await reply.text(), dict(reply.headers)


ALERT = {"text": "ip:192.0.2.1: listed",
         "blocks": [header("ip:192.0.2.1: listed"), section("listed on zen.spamhaus.org"),
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "repmon"}]}]}


async def test_valid_messages_get_200_ok_and_are_recorded(slack_webhook: SlackWebhook):
    assert (await post(slack_webhook.url, ALERT))[:2] == (200, "ok")
    assert (await post(slack_webhook.url, {"text": "plain text only"}))[:2] == (200, "ok")
    at_limits = {"blocks": [header("h" * MAX_HEADER_TEXT), section("s" * MAX_SECTION_TEXT)]
                 + [{"type": "divider"}] * (MAX_BLOCKS - 2)}
    assert (await post(slack_webhook.url, at_limits))[:2] == (200, "ok")
    form = b"payload=" + json.dumps({"text": "from a form"}).encode()
    assert (await post(slack_webhook.url, data=form, content_type="application/x-www-form-urlencoded"))[0] == 200
    assert [m.get("text") for m in slack_webhook.messages] == [
        "ip:192.0.2.1: listed", "plain text only", None, "from a form"]
    assert slack_webhook.rejected == []


@pytest.mark.parametrize("payload, word", [
    (b"{not json", "invalid_payload"),
    (b"", "invalid_payload"),
    (b'["text"]', "invalid_payload"),
    (b'{"text": 42}', "invalid_payload"),
    (b"{}", "no_text"),
    (b'{"text": ""}', "no_text"),
    (b'{"text": "", "blocks": []}', "no_text"),
    (b'{"blocks": {"type": "divider"}}', "invalid_blocks_format"),
    (json.dumps({"text": "x", "blocks": [{"type": "divider"}] * (MAX_BLOCKS + 1)}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [section("s" * (MAX_SECTION_TEXT + 1))]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [header("h" * (MAX_HEADER_TEXT + 1))]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [header("h", kind="mrkdwn")]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [section("")]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [{"type": "section"}]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [{"type": "banner", "text": "x"}]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [{"type": "context", "elements": []}]}).encode(), "invalid_blocks"),
    (json.dumps({"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]}).encode(),
     "invalid_blocks"),
    (json.dumps({"blocks": [dict(section("a"), block_id="b1"), dict(section("b"), block_id="b1")]}).encode(),
     "invalid_blocks"),
    (json.dumps({"text": "t" * 40001}).encode(), "msg_too_long"),
    (json.dumps({"attachments": [{"text": "a"}] * 101}).encode(), "too_many_attachments"),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_what_slack_refuses_is_a_400_with_slacks_error_word(slack_webhook: SlackWebhook, payload, word):
    status, text, headers = await post(slack_webhook.url, data=payload)
    assert (status, text) == (400, word)
    assert headers["Content-Type"].startswith("text/html")  # Slack answers text/html, not JSON
    assert slack_webhook.messages == [] and [w for w, _ in slack_webhook.rejected] == [word]


async def test_scripted_replies_apply_to_valid_payloads_only(slack_webhook: SlackWebhook):
    slack_webhook.script(Reply(429, "rate_limited", {"Retry-After": "7"}), Reply(403, "invalid_token"),
                         Reply(200, "ok"))
    assert (await post(slack_webhook.url, {}))[:2] == (400, "no_text")  # refused before any scripted reply
    status, text, headers = await post(slack_webhook.url, ALERT)
    assert (status, text, headers["Retry-After"]) == (429, "rate_limited", "7")
    assert (await post(slack_webhook.url, ALERT))[:2] == (403, "invalid_token")
    assert (await post(slack_webhook.url, ALERT))[:2] == (200, "ok")
    assert (await post(slack_webhook.url, ALERT))[:2] == (200, "ok")  # the last reply repeats
    assert len(slack_webhook.messages) == 2


def test_parse_payload_is_usable_without_a_server():
    assert parse_payload(json.dumps(ALERT).encode()) == ALERT
    with pytest.raises(SlackError, match="invalid_blocks"):
        parse_payload(json.dumps({"blocks": [section("x" * 3001)]}).encode())


# --- a missing peer: skip locally, fail under CI ------------------------------------------------

@pytest.mark.parametrize("value, required", [("true", True), ("1", True), ("", False), ("false", False)])
def test_peers_are_required_under_ci(monkeypatch, value, required):
    monkeypatch.delenv("REPMON_REQUIRE_PEERS", raising=False)
    monkeypatch.setenv("CI", value)
    assert peers_required() is required


def test_a_missing_peer_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("REPMON_REQUIRE_PEERS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="rbldnsd is not installed"):
        peer_unavailable("rbldnsd is not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="rbldnsd is not installed"):
        peer_unavailable("rbldnsd is not installed")


def test_a_session_fixture_without_its_peer_fails_every_test_under_ci(tmp_path):
    """What CI sees when PostgreSQL cannot start: errors naming the reason, a failed run;
    and what a developer sees: skips naming it."""
    (tmp_path / "test_peer.py").write_text(textwrap.dedent("""
        import pytest
        from tests.fixtures._peers import peer_unavailable

        @pytest.fixture(scope="session")
        def server():
            peer_unavailable("PostgreSQL unavailable: no initdb")

        def test_one(server):
            pass

        def test_two(server):
            pass
    """))

    def run(ci: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
        env.pop("REPMON_REQUIRE_PEERS", None)
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "test_peer.py"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    in_ci = run("true")
    assert in_ci.returncode == 1, in_ci.stdout
    assert "2 errors" in in_ci.stdout and "PostgreSQL unavailable: no initdb" in in_ci.stdout
    local = run("")
    assert local.returncode == 0, local.stdout
    assert "2 skipped" in local.stdout
    assert re.search(r"SKIPPED \[\d+\] .*PostgreSQL unavailable: no initdb", local.stdout), local.stdout
