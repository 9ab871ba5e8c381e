"""Slack incoming webhooks (aiohttp).

Slack answers in plain text: `200 ok`, or an error word. 429 carries
Retry-After (seconds); 5xx and network errors are worth another try; every
other error (400 invalid_payload, 403 invalid_token, 404 no_service /
channel_not_found, 410 channel_is_archived, ...) will fail again the same way,
so it is reported and not retried. The webhook URL is a secret: it never
appears in an error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_RETRY_AFTER_S = 30.0
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    permanent: bool = False
    retry_after: float | None = None  # seconds the receiver asked us to wait
    error: str = ""


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


async def post_webhook(session: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                       timeout_s: float = 15.0) -> SendOutcome:
    try:
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                allow_redirects=False) as response:
            body = (await response.text(errors="replace")).strip()[:200]
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return SendOutcome(False, error=f"network error: {type(exc).__name__}")
    if status == 200:
        return SendOutcome(True)
    detail = f"HTTP {status} {body}".strip()
    if status == 429:
        return SendOutcome(False, retry_after=_retry_after(retry_after), error=f"{detail} (rate limited)")
    if status >= 500:
        return SendOutcome(False, error=detail)
    return SendOutcome(False, permanent=True, error=detail)
