"""Turning notifications into messages, and sending them.

plan(): notifications wait `gather_s` so that what fires together (a
blocklist cycle listing 200 IPs, a complaint spike seen on a lane, its IP
and its domain) leaves as one message per channel: each channel takes the
notifications at or above its severity; up to `digest_threshold` of them
are listed one by one, more become a digest. The messages are stored
(alert_deliveries) before anything is sent, so a crash loses none.

send_due(): each pending message is posted; Slack's 429 waits Retry-After,
5xx and network errors back off exponentially up to `max_attempts`,
permanent errors (invalid_token, no_service, a 5xx from the mail server) fail
at once with the reason logged. A webhook gets at most one message a second
(Slack's posting limit).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from monitor.alerts.email import send_mail
from monitor.alerts.models import AlertDelivery, AlertNotification
from monitor.alerts.notify import ALERT_RANK
from monitor.alerts.render import email_message, slack_payload
from monitor.alerts.settings import AlertsConfig
from monitor.alerts.slack import SendOutcome, post_webhook
from monitor.health.clock import Clock, SystemClock

CLAIM_S = 60.0  # how long a claimed delivery is left to its sender before it is due again

log = logging.getLogger("repmon.alerts")

BACKOFF_INITIAL_S = 5.0
BACKOFF_MAX_S = 900.0
SLACK_SPACING_S = 1.0


class Dispatcher:
    def __init__(self, engine: Engine, config: AlertsConfig, clock: Clock | None = None) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock or SystemClock()
        self.channels: dict[str, tuple[str, Any]] = {}
        for slack in config.slack:
            self.channels[slack.name] = ("slack", slack)
        for email in config.email:
            self.channels[email.name] = ("email", email)
        self._urls: dict[str, str] = {}
        self._last_post: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None

    def secrets(self) -> list[str]:
        found = []
        for kind, target in self.channels.values():
            if kind == "slack":
                found.append(self._url(target))
        if self.config.smtp is not None and self.config.smtp.username:
            found.append(self.config.smtp.resolve_password() or "")
        return [s for s in found if s]

    def _url(self, target) -> str:
        url = self._urls.get(target.name)
        if url is None:
            url = self._urls[target.name] = target.resolve_url()
        return url

    # -- planning (synchronous: run in a thread) ---------------------------------------------

    def plan(self, now: float | None = None) -> int:
        """Group waiting notifications into deliveries; returns how many deliveries."""
        now = self.clock.now() if now is None else now
        with Session(self.engine) as session:
            waiting = col(AlertNotification.dispatched_at).is_(None)
            # Rows another node is planning right now are skipped, not planned twice.
            pending = list(session.execute(select(AlertNotification).where(waiting)
                                           .order_by(col(AlertNotification.id)).limit(5000)
                                           .with_for_update(skip_locked=True)).scalars())
            if not pending:
                return 0
            oldest = min(n.created_at.timestamp() for n in pending)
            if now - oldest < self.config.gather_s and len(pending) < 5000:
                return 0
            items = [_as_dict(n) for n in pending]
            created = 0
            for name, (kind, target) in self.channels.items():
                floor = ALERT_RANK[target.min_severity]
                mine = [n for n in items if ALERT_RANK.get(n["severity"], 0) >= floor]
                if not mine:
                    continue
                payload: dict[str, Any]
                if kind == "slack":
                    payload = {"slack": slack_payload(mine, self.config.digest_threshold)}
                else:
                    subject, body = email_message(mine, self.config.digest_threshold)
                    payload = {"to": list(target.to), "subject": subject, "body": body}
                session.add(AlertDelivery(channel=name, channel_kind=kind, notification_ids=[n["id"] for n in mine],
                                          payload=payload, next_attempt_at=now,
                                          created_at=datetime.fromtimestamp(now, UTC)))
                created += 1
            stamp = datetime.fromtimestamp(now, UTC)
            session.execute(update(AlertNotification).where(col(AlertNotification.id).in_([n.id for n in pending]))
                            .values(dispatched_at=stamp))
            session.commit()
        if created:
            log.info("alerts: %d notifications -> %d messages", len(pending), created)
        return created

    def _due(self, now: float) -> list[AlertDelivery]:
        """The deliveries due now, each claimed by moving its next attempt
        CLAIM_S ahead: a second dispatcher (another node, a leader that just
        took over) skips what this one is sending, and a dispatcher that dies
        mid-send leaves the delivery due again CLAIM_S later."""
        with Session(self.engine, expire_on_commit=False) as session:
            due = list(session.execute(select(AlertDelivery).where(col(AlertDelivery.status) == "pending",
                                                                   col(AlertDelivery.next_attempt_at) <= now)
                                       .order_by(col(AlertDelivery.id)).limit(100)).scalars())
            claimed = []
            for delivery in due:
                taken = session.execute(
                    update(AlertDelivery)
                    .where(col(AlertDelivery.id) == delivery.id, col(AlertDelivery.status) == "pending",
                           col(AlertDelivery.next_attempt_at) <= now)
                    .values(next_attempt_at=now + CLAIM_S))
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery)
            session.commit()
            return claimed

    def _record(self, delivery_id: int, outcome: SendOutcome, now: float) -> None:
        with Session(self.engine) as session:
            row = session.get(AlertDelivery, delivery_id)
            if row is None:
                return
            row.attempts += 1
            if outcome.ok:
                row.status, row.sent_at, row.last_error = "sent", datetime.fromtimestamp(now, UTC), None
            elif outcome.permanent or row.attempts >= self.config.max_attempts:
                row.status, row.last_error = "failed", outcome.error
                log.error("alert to %s failed for good after %d attempt(s): %s", row.channel, row.attempts,
                          outcome.error, extra={"channel": row.channel})
            else:
                wait = outcome.retry_after if outcome.retry_after is not None else min(
                    BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (row.attempts - 1))
                row.next_attempt_at, row.last_error = now + wait, outcome.error
                log.warning("alert to %s not sent (%s): retry in %.0f s", row.channel, outcome.error, wait,
                            extra={"channel": row.channel})
            session.add(row)
            session.commit()

    # -- sending ------------------------------------------------------------------------------------

    async def send_due(self) -> int:
        now = self.clock.now()
        due = await asyncio.to_thread(self._due, now)
        sent = 0
        for delivery in due:
            channel = self.channels.get(delivery.channel)
            if channel is None:
                outcome = SendOutcome(False, permanent=True,
                                      error=f"channel {delivery.channel} is no longer configured")
            else:
                kind, target = channel
                outcome = await (self._post_slack(target, delivery) if kind == "slack" else self._send_email(delivery))
            await asyncio.to_thread(self._record, int(delivery.id or 0), outcome, self.clock.now())
            sent += outcome.ok
        return sent

    async def _post_slack(self, target, delivery: AlertDelivery) -> SendOutcome:
        last = self._last_post.get(target.name)
        if last is not None:
            wait = SLACK_SPACING_S - (asyncio.get_running_loop().time() - last)
            if wait > 0:
                await asyncio.sleep(wait)
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        try:
            url = self._url(target)
        except Exception as exc:  # e.g. the environment variable is gone
            return SendOutcome(False, permanent=True, error=str(exc))
        outcome = await post_webhook(self._http, url, delivery.payload["slack"])
        self._last_post[target.name] = asyncio.get_running_loop().time()
        return outcome

    async def _send_email(self, delivery: AlertDelivery) -> SendOutcome:
        assert self.config.smtp is not None
        payload = delivery.payload
        return await send_mail(self.config.smtp, payload["to"], payload["subject"], payload["body"])

    async def run_once(self) -> int:
        await asyncio.to_thread(self.plan)
        return await self.send_due()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _as_dict(n: AlertNotification) -> dict[str, Any]:
    return {"id": n.id, "subject": n.subject, "cause": n.cause, "kind": n.kind, "severity": n.severity,
            "title": n.title, "text": n.text, "created_at": n.created_at}
