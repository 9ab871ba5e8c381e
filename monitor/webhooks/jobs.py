"""The webhooks job of `repmon run` ([[webhooks]] present): one service that
queues what is new into the outbox and delivers it, every `interval_s` (at
once again while there is more). With `--once`: one queue-and-deliver pass."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from sqlalchemy.engine import Engine

from monitor.core.config import resolve_secret
from monitor.core.logs import register_secret
from monitor.core.runtime import JobSpec, Runtime
from monitor.webhooks import outbox
from monitor.webhooks.deliver import Target, deliver_pass
from monitor.webhooks.settings import WebhookConfig, check_url, unique_names

log = logging.getLogger("repmon.webhooks")
PURGE_EVERY_S = 600.0


def provide(section: list[WebhookConfig], runtime: Runtime) -> list[JobSpec]:
    if not section:
        return []
    unique_names(section)
    relay = Relay(section, runtime)
    return [JobSpec(name="webhooks:deliver", run=relay.run_once, service=relay.serve)]


def target_of(hook: WebhookConfig) -> Target:
    """The webhook with its URL and secret read (registered as secrets: never logged)."""
    url = resolve_secret(f"webhooks.{hook.key}.url", hook.url, hook.url_env)
    secret = resolve_secret(f"webhooks.{hook.key}.secret", hook.secret, hook.secret_env, hook.secret_file)
    assert url is not None and secret is not None  # the section requires one of each
    check_url(url)
    register_secret(url)
    register_secret(secret)
    return Target(hook, url, secret)


class Relay:
    def __init__(self, hooks: list[WebhookConfig], runtime: Runtime) -> None:
        self.hooks = hooks
        self.runtime = runtime
        self.engine: Engine = runtime.engine
        self.interval = min(h.interval_s for h in hooks)
        self._last_purge = 0.0

    async def run_once(self) -> None:
        targets = [target_of(h) for h in self.hooks]
        async with aiohttp.ClientSession() as http:
            await self.one_pass(http, targets)

    async def serve(self) -> None:
        targets = [target_of(h) for h in self.hooks]
        log.info("webhooks: delivering to %s", ", ".join(h.key for h in self.hooks))
        connector = aiohttp.TCPConnector(limit_per_host=2)
        async with aiohttp.ClientSession(connector=connector) as http:
            while not self.runtime.stopping.is_set():
                busy = False
                try:
                    busy = await self.one_pass(http, targets)
                except Exception as exc:  # a database hiccup: log, wait, go on
                    log.error("webhooks pass failed: %s: %s", type(exc).__name__, exc)
                if await self.runtime.sleep(0 if busy else self.interval):
                    break

    async def one_pass(self, http: aiohttp.ClientSession, targets: list[Target]) -> bool:
        """Queue what is new, deliver what is due; True when there may be more right away."""
        queued = await asyncio.to_thread(self._enqueue)
        results = await asyncio.gather(*(deliver_pass(self.engine, http, t) for t in targets))
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_purge > PURGE_EVERY_S:
            self._last_purge = loop_now
            await asyncio.to_thread(self._purge)
        return queued > 0 or any(r.delivered > 0 and r.failed == 0 for r in results)

    def _enqueue(self) -> int:
        queued = 0
        for hook in self.hooks:
            with self.engine.begin() as conn:
                queued += outbox.enqueue(conn, hook)
        return queued

    def _purge(self) -> None:
        for hook in self.hooks:
            with self.engine.begin() as conn:
                outbox.purge(conn, hook.key, hook.keep_delivered_s)
