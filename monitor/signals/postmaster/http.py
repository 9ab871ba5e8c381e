"""HTTP for postmaster feeds: bounded retries with back-off, clear errors.

- 2xx: the body.
- 401: the caller may refresh its credentials once (`on_unauthorized`); a
  second 401 means the credentials are expired or revoked.
- 429: wait for Retry-After (seconds or an HTTP date) when it is within
  `max_backoff_s`, otherwise give up now and say when to come back.
- 5xx and network errors: exponential back-off, `max_attempts` in all.
- anything else (400, 403, 404, ...): no retry, an error naming the status.
URLs are never put in messages (SNDS keys live in the query string); callers
pass a description instead.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from monitor.core.logs import redact


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout_s: float = 30.0
    max_attempts: int = 4
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0


class FetchError(Exception):
    """A feed could not be read; `kind` is auth | rate_limited | server | network | http | parse."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, retry_after_s: float | None = None):
        # The message quotes the server's answer, which may echo the request URL and its key.
        super().__init__(redact(message))
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise FetchError(f"{what}: answer is not JSON: {exc}", kind="parse", status=self.status) from None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_detail(body: bytes) -> str:
    """Google's error envelope {"error": {"message", "status"}} or an OAuth error, else a snippet."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return " ".join(str(error.get(k)) for k in ("status", "message") if error.get(k))
        if isinstance(error, str):
            return f"{error}: {data.get('error_description', '')}".strip(": ")
    return str(data)[:200]


async def fetch(session: aiohttp.ClientSession, method: str, url: str, *, what: str, policy: RetryPolicy,
                headers: Callable[[], Mapping[str, str]] | None = None, json_body: Any = None,
                form: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
                on_unauthorized: Callable[[], Awaitable[None]] | None = None,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Response:
    refreshed = False
    last: FetchError | None = None
    attempt = 0
    while attempt < policy.max_attempts:
        attempt += 1
        try:
            async with session.request(method, url, headers=dict(headers()) if headers else None, json=json_body,
                                       data=form, params=params,
                                       timeout=aiohttp.ClientTimeout(total=policy.timeout_s)) as reply:
                body = await reply.read()
                status, reply_headers = reply.status, dict(reply.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            last = FetchError(f"{what}: network error: {type(exc).__name__}: {exc}".rstrip(": "), kind="network")
            delay = backoff_delay(policy, attempt)
        else:
            if 200 <= status < 300:
                return Response(status, body, reply_headers)
            detail = _error_detail(body)
            if status == 401 and on_unauthorized is not None and not refreshed:
                refreshed = True
                attempt -= 1  # a token refresh is not a failed attempt
                await on_unauthorized()
                continue
            if status == 401:
                raise FetchError(f"{what}: credentials rejected (401: expired or revoked): {detail}", kind="auth",
                                 status=status)
            if status == 403:
                raise FetchError(f"{what}: permission denied (403): {detail}", kind="auth", status=status)
            if status == 429:
                wait = retry_after_seconds(reply_headers.get("Retry-After"))
                if wait is not None and wait > policy.max_backoff_s:
                    raise FetchError(f"{what}: rate limited (429), retry after {wait:.0f} s", kind="rate_limited",
                                     status=status, retry_after_s=wait)
                last = FetchError(f"{what}: rate limited (429): {detail}", kind="rate_limited", status=status,
                                  retry_after_s=wait)
                delay = wait if wait is not None else backoff_delay(policy, attempt)
            elif status >= 500:
                last = FetchError(f"{what}: server error {status}: {detail}", kind="server", status=status)
                delay = backoff_delay(policy, attempt)
            else:
                raise FetchError(f"{what}: HTTP {status}: {detail}", kind="http", status=status)
        if attempt < policy.max_attempts:
            await sleep(min(delay, policy.max_backoff_s))
    assert last is not None
    raise FetchError(f"{last} (gave up after {policy.max_attempts} attempts)", kind=last.kind, status=last.status,
                     retry_after_s=last.retry_after_s)


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    # Exponential with a little jitter so several repmon nodes do not retry in step.
    return policy.backoff_s * (2 ** (attempt - 1)) * random.uniform(1.0, 1.25)
