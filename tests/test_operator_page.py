"""The operator page in headless Chromium (Playwright, the Debian `chromium`)
against a real `repmon run` daemon (subprocess, SQLite) that ingested a
bounce from a folder: sign in, health states, suppression search, show (with
the event and its file), remove (audited), cancel an action, and everything
shown escaped. Webhooks run in the same daemon: the ingested bounce, its
suppression and the removal reach a loopback receiver."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from monitor.core.db import make_engine
from monitor.parts import upgrade_schema
from tests.fixtures._api import TOKEN, add_health_state, operator_suppress_action
from tests.fixtures._webhooks import SECRET, receiver
from tests.fixtures.databases import free_port
from tests.fixtures.feedback_messages import dsn_bounce

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium is not installed")


async def wait_until_up(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(base + "/api/v1/check", params={"address": "a@b.example"},
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise AssertionError("the daemon's API did not come up")


async def api(base: str, method: str, path: str, **kwargs) -> dict:
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.request(method, path, **kwargs) as r:
            return await r.json()


async def test_operator_page_against_a_running_daemon(tmp_path: Path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "bounce-1.eml").write_bytes(dsn_bounce("gone@example.org"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"sqlite:///{tmp_path / 'repmon.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    add_health_state(engine, "ip:192.0.2.10", "critical", 15, ["listed on <b>zen</b>"])
    action_id = operator_suppress_action(engine, "held@example.net")
    engine.dispose()
    async with receiver() as hooks_in:
        config = tmp_path / "repmon.toml"
        config.write_text(f"""
[database]
url = "sqlite:///repmon.db"
[[folders]]
path = "drop"
poll_interval_s = 0.5
[api]
listen = "127.0.0.1:{port}"
token_env = "REPMON_API_TOKEN"
[[webhooks]]
name = "ops"
url = "{hooks_in.url}"
secret_env = "REPMON_HOOK_SECRET"
events = ["bounce", "suppression", "unsuppression", "action"]
start = "beginning"
interval_s = 0.2
""")
        env = {**os.environ, "REPMON_API_TOKEN": TOKEN, "REPMON_HOOK_SECRET": SECRET}
        daemon = subprocess.Popen([sys.executable, "-m", "monitor.cli", "run", "--config", str(config)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            await wait_until_up(base)
            deadline = time.monotonic() + 30
            while not (await api(base, "GET", "/api/v1/check", params={"address": "gone@example.org"}))["suppressed"]:
                assert time.monotonic() < deadline, "the bounce was not ingested"
                await asyncio.sleep(0.3)
            await api(base, "PUT", "/api/v1/suppressions/evil@example.com",
                      json={"reason": "<script>alert(1)</script> & \"quotes\""})
            await drive_the_page(base, action_id)
            after = await api(base, "GET", "/api/v1/suppressions/gone@example.org")
            assert after["suppressed"] is False and after["history"][0]["actor"] == "web:alice"
            assert after["history"][0]["why"] == "mailbox restored"
            assert (await api(base, "GET", "/api/v1/actions", params={"active": "true"}))["items"] == []
            deadline = time.monotonic() + 30
            while {"bounce", "unsuppression", "action"} - {g["type"] for g in hooks_in.got}:
                assert time.monotonic() < deadline, [g["type"] for g in hooks_in.got]
                await asyncio.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                out, err = daemon.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                out, err = daemon.communicate()
    assert daemon.returncode == 0, err[-3000:]
    assert TOKEN not in err and TOKEN not in out and SECRET not in err
    assert "secret-in-url" not in err  # the webhook URL (its query) is never logged
    types = [g["type"] for g in hooks_in.got]
    assert types.index("bounce") < types.index("unsuppression")
    bounce = next(g for g in hooks_in.got if g["type"] == "bounce")
    assert bounce["data"]["recipient"] == "gone@example.org"
    assert any(g["type"] == "suppression" and g["data"]["address"] == "gone@example.org" for g in hooks_in.got)


async def drive_the_page(base: str, action_id: int) -> None:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            response = await page.goto(base + "/")
            assert response is not None and response.status == 401
            await page.fill("input[name=name]", "alice")
            await page.fill("input[name=token]", "not-the-token-at-all")
            await page.click("form#login button")
            assert "wrong token" in await page.inner_text("#login-error")

            await page.fill("input[name=name]", "alice")
            await page.fill("input[name=token]", TOKEN)
            await page.click("form#login button")
            assert await page.inner_text("#user") == "alice"
            cookies = await page.context.cookies()
            assert [c["httpOnly"] for c in cookies if c["name"] == "repmon_session"] == [True]
            assert all(TOKEN not in c["value"] for c in cookies)

            health = await page.inner_text("#health")
            # the state we stored, or the daemon's own re-assessment of that IP since
            assert "ip:192.0.2.10" in health and ("critical" in health or "healthy" in health)
            assert await page.locator("#health b").count() == 0  # "<b>zen</b>" stays text if still shown
            assert f"#{action_id}" in await page.inner_text("#actions")

            # everything shown is escaped: the stored "<script>" is text, no script runs
            await page.fill("form#search input[name=q]", "evil")
            await page.click("form#search button")
            assert "<script>alert(1)</script>" in await page.inner_text("#suppressions")
            assert await page.locator("script").count() == 0

            await page.fill("form#search input[name=q]", "gone@")
            await page.click("form#search button")
            await page.click("#suppressions a")
            assert await page.inner_text("#f-reason") == "hard_bounce"
            event = await page.inner_text("#f-event")
            assert "bounce" in event and "bounce-1.eml" in event
            await page.fill("form#remove input[name=reason]", "mailbox restored")
            await page.click("form#remove button")
            assert "removed gone@example.org" in await page.inner_text("#msg")

            await page.fill(f"#actions form:has(#cancel-{action_id}) input[name=reason]", "false alarm")
            await page.click(f"#cancel-{action_id}")
            assert f"action #{action_id} cancelled" in await page.inner_text("#msg")
            assert await page.locator("#actions-empty").count() == 1

            # a form without the CSRF value is refused; signing out ends the session
            session = next(c["value"] for c in await page.context.cookies() if c["name"] == "repmon_session")
            async with aiohttp.ClientSession(cookies={"repmon_session": session}) as http:
                async with http.post(base + "/s/evil@example.com/remove", data={"reason": "x"}) as r:
                    assert r.status == 403
            await page.click("form[action='/logout'] button")
            response = await page.goto(base + "/")
            assert response is not None and response.status == 401
        finally:
            await browser.close()
    async with aiohttp.ClientSession() as http:  # the bearer header works for the page too
        async with http.get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and "Health" in await r.text()
