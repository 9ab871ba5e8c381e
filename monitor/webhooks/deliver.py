"""Signed POSTs from the outbox, in order, with back-off.

Each POST carries the stored JSON body and:
  X-Repmon-Event: the type ("bounce", "suppression", ...)
  X-Repmon-Delivery: the outbox id (the same on every retry: receivers dedupe on it)
  X-Repmon-Timestamp: unix seconds when it was signed
  X-Repmon-Signature: "v1=" + hex HMAC-SHA256(secret, timestamp + "." + body)
A receiver checks the signature over the raw body and refuses old timestamps.

Only a 2xx answer delivers a row. Anything else (refused, timed out, 3xx,
4xx, 5xx) keeps it at the head of the webhook's queue until a retry, after
retry_initial_s, doubling up to retry_max_s: nothing behind it is sent
before it, so a receiver sees every item once its downtime ends, in order
(delivery is at least once: a crash between the POST and its record sends
that row again, with the same X-Repmon-Delivery).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import time
from dataclasses import dataclass, field

import aiohttp
from sqlalchemy.engine import Engine

from monitor.webhooks import outbox
from monitor.webhooks.settings import WebhookConfig

log = logging.getLogger("repmon.webhooks")

HEAD_BATCH = 100
MARK_EVERY = 50


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return "v1=" + mac


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance_s: float = 300.0) -> bool:
    """What a receiver does (used by the tests and documented for receivers)."""
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def backoff(hook: WebhookConfig, attempts: int) -> float:
    return min(hook.retry_max_s, hook.retry_initial_s * (2 ** min(attempts, 30)))


@dataclass(slots=True)
class Target:
    hook: WebhookConfig
    url: str
    secret: str
    owner: str = field(default_factory=socket.gethostname)


@dataclass(slots=True)
class PassResult:
    delivered: int = 0
    failed: int = 0


async def deliver_pass(engine: Engine, http: aiohttp.ClientSession, target: Target) -> PassResult:
    """Deliver what is due for one webhook, in order, stopping at the first failure."""
    hook = target.hook
    ttl = max(30.0, 3 * hook.timeout_s)
    if not await asyncio.to_thread(_lease, engine, hook.key, target.owner, ttl):
        return PassResult()
    result = PassResult()
    items = await asyncio.to_thread(_head, engine, hook.key)
    done: list[int] = []
    last_status = 200
    for item in items:
        if item.next_attempt_at.timestamp() > time.time():
            break
        status, error = await post(http, target, item)
        if error is None:
            done.append(item.id)
            last_status = status or 200
            if len(done) >= MARK_EVERY:
                await asyncio.to_thread(_delivered, engine, hook.key, done, last_status)
                result.delivered += len(done)
                done = []
            continue
        delay = backoff(hook, item.attempts)
        log.warning("webhook %s: delivery %d failed (%s); retry in %.0fs", hook.key, item.id, error, delay,
                    extra={"webhook": hook.key})
        await asyncio.to_thread(_delivered, engine, hook.key, done, last_status)
        result.delivered += len(done)
        done = []
        await asyncio.to_thread(_failed, engine, hook.key, item, status, error, delay)
        result.failed += 1
        break
    if done:
        await asyncio.to_thread(_delivered, engine, hook.key, done, last_status)
        result.delivered += len(done)
    return result


async def post(http: aiohttp.ClientSession, target: Target, item: outbox.Pending) -> tuple[int | None, str | None]:
    """(status, None) when the receiver took it, (status or None, error) otherwise."""
    body = item.body.encode()
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "repmon-webhooks/1",
               "X-Repmon-Event": item.event_type, "X-Repmon-Delivery": str(item.id),
               "X-Repmon-Timestamp": str(stamp), "X-Repmon-Signature": sign(target.secret, stamp, body)}
    try:
        async with http.post(target.url, data=body, headers=headers, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=target.hook.timeout_s)) as response:
            await response.content.read(4096)  # bounded: the answer's body is not needed
            if 200 <= response.status < 300:
                return response.status, None
            return response.status, f"HTTP {response.status}"
    except TimeoutError:
        return None, f"timed out after {target.hook.timeout_s:g}s"
    except aiohttp.ClientError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc.strerror or exc}"[:300]


def _lease(engine: Engine, webhook: str, owner: str, ttl: float) -> bool:
    with engine.begin() as conn:
        return outbox.take_lease(conn, webhook, owner, time.time(), ttl)


def _head(engine: Engine, webhook: str) -> list[outbox.Pending]:
    with engine.connect() as conn:
        return outbox.head(conn, webhook, HEAD_BATCH)


def _delivered(engine: Engine, webhook: str, ids: list[int], status: int) -> None:
    if ids:
        with engine.begin() as conn:
            outbox.mark_delivered(conn, webhook, ids, status)


def _failed(engine: Engine, webhook: str, item: outbox.Pending, status: int | None, error: str, delay: float) -> None:
    with engine.begin() as conn:
        outbox.mark_failed(conn, webhook, item, status, error, delay)
