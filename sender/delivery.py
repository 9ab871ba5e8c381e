"""Delivery workers: the connections of each lane and the per-delivery
preparation of messages (tracking header, VERP sender, DKIM signature).

A lane opens connections up to its limit for the sites (MX host sets or the
relay) its buffered messages go to. Each worker takes messages from its
site's buffer while the lane may send (pauses and rate checked before every
transaction), up to the lane's deliveries per connection, and hands each
result to the outcomes. On a server with PIPELINING the transactions are
chained by the SMTP client (SmtpConnection.pipeline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from parsers import tracking
from sender.dkim import DkimSigner, body_hash_of_wire, signer_for
from sender.lanes import Lane
from sender.outcomes import Outcomes
from sender.queue import QueuedMessage
from sender.routing import RELAY, Router, Site
from sender.settings import SenderConfig
from sender.smtp import CONNECTION_ERRORS, SmtpConnection, SmtpFailure, Transaction

log = logging.getLogger("repmon.sender")

IDLE_CLOSE_S = 2.0  # a connection with nothing to send for this long is closed
MAX_CONNECT_BACKOFF_S = 300.0

Placement = tuple[Lane, Site, QueuedMessage]


class Delivery:
    """Runs the connection workers of every lane."""

    def __init__(self, config: SenderConfig, router: Router, outcomes: Outcomes,
                 signers: dict[str, DkimSigner]) -> None:
        self.router = router
        self.outcomes = outcomes
        self.stats = outcomes.stats
        self.signers = signers
        self.batch = config.batch_size
        self.connect_timeout = config.connect_timeout_s
        self.command_timeout = config.command_timeout_s
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping: asyncio.Event | None = None
        self.feed_wake: asyncio.Event | None = None  # set: the feeder should look for more mail
        self._sign_pool = (ThreadPoolExecutor(max_workers=2, thread_name_prefix="repmon-sender-dkim")
                           if signers else None)

    def start(self, stopping: asyncio.Event, feed_wake: asyncio.Event) -> None:
        self.stopping, self.feed_wake = stopping, feed_wake

    def shutdown(self) -> None:
        if self._sign_pool is not None:
            self._sign_pool.shutdown(wait=True)

    async def drain(self) -> None:
        """Wait for every worker to end (after `stopping` was set)."""
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # -- buffers -----------------------------------------------------------------------

    async def place(self, placed: list[Placement]) -> None:
        """Put claimed messages into their lanes' buffers. With DKIM keys the
        per-delivery part of each message (tracking header, signature) is
        built first on the signing threads: OpenSSL releases the GIL, so
        signatures are computed on the second core while this loop sends."""
        if not placed:
            return
        if self._sign_pool is not None:
            loop = asyncio.get_running_loop()
            chunks = [placed[i:i + 64] for i in range(0, len(placed), 64)]
            await asyncio.gather(*(loop.run_in_executor(self._sign_pool, self._prepare_chunk, c) for c in chunks))
        touched: set[Lane] = set()
        for lane, site, m in placed:
            buf = lane.buffers.get(site.key)
            if buf is None:
                buf = lane.buffers[site.key] = deque()
                lane.sites[site.key] = site
                lane.site_active.setdefault(site.key, 0)
            buf.append(m)
            touched.add(lane)
        for lane in touched:
            lane.notify()
            if lane.blocked():
                self.outcomes.release(lane)
            else:
                self.pump(lane)

    def _prepare_chunk(self, chunk: list[Placement]) -> None:
        for lane, _, m in chunk:
            m.prepared = self.build(lane, m)

    # -- connections -------------------------------------------------------------------

    def pump(self, lane: Lane) -> None:
        """Open connections up to the lane's limit for sites with waiting mail."""
        if self.stopping is not None and self.stopping.is_set():
            return
        now = time.time()
        if lane.blocked(now) or now < lane.retry_connect_at:
            return
        limit = lane.effective_connections()
        for site_key, buf in lane.buffers.items():
            while buf and lane.active < limit and lane.site_active[site_key] < len(buf):
                lane.active += 1
                lane.site_active[site_key] += 1
                task = asyncio.create_task(self._worker(lane, lane.sites[site_key]))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _open(self, lane: Lane, site: Site) -> SmtpConnection:
        failure: SmtpFailure | None = None
        for host in site.hosts:
            addresses = [host] if site.destination == RELAY else await self.router.addresses(host)
            for address in addresses[:2]:
                try:
                    conn = await SmtpConnection.open(
                        address, site.port, ehlo_name=lane.ehlo_name, source_ip=lane.bind_ip,
                        tls=lane.settings.tls, server_hostname=host,  # type: ignore[arg-type]
                        connect_timeout=self.connect_timeout, command_timeout=self.command_timeout)
                    self.stats.connections += 1
                    return conn
                except SmtpFailure as exc:
                    failure = exc
                    if exc.reply is not None:
                        raise  # the server answered: another host of the same site would say the same
        raise failure or SmtpFailure(f"no address for {', '.join(site.hosts)}")

    async def _worker(self, lane: Lane, site: Site) -> None:
        """One connection of a lane: takes messages from the site's buffer
        while the lane may send, up to the lane's deliveries per connection."""
        conn: SmtpConnection | None = None
        sent = 0
        buf = lane.buffers[site.key]
        message: QueuedMessage | None = None
        try:
            message = await self._next_message(lane, buf)
            while message is not None:
                if conn is None:
                    try:
                        conn = await self._open(lane, site)
                    except SmtpFailure as exc:
                        buf.appendleft(message)
                        message = None
                        self._connect_failed(lane, site, exc)
                        return
                    lane.connect_failures = 0
                if conn.pipelining:
                    sent, message = await self._pipelined(conn, lane, buf, message, sent)
                else:
                    sent += 1
                    await self._one(conn, lane, message)
                    message = None
                if not conn.usable:
                    conn.abort()
                    conn = None
                    break  # a fresh worker (and connection) takes over through pump
                if sent >= lane.deliveries_per_connection():
                    break
                if message is None:
                    message = await self._next_message(lane, buf)
        finally:
            if message is not None:
                buf.appendleft(message)  # taken but never attempted
            if conn is not None:
                await conn.quit()
            lane.active -= 1
            lane.site_active[site.key] -= 1
            self.pump(lane)
            if self.feed_wake is not None:
                self.feed_wake.set()

    async def _one(self, conn: SmtpConnection, lane: Lane, m: QueuedMessage) -> None:
        """A transaction on a server without PIPELINING."""
        t = self._prepare(lane, m)
        try:
            result = await conn.send(t.mail_from, t.recipient, t.content, eight_bit=t.eight_bit)
        except CONNECTION_ERRORS as exc:
            self._lost(conn, lane, m, exc)
            return
        self.outcomes.handle(lane, m, result)

    async def _pipelined(self, conn: SmtpConnection, lane: Lane, buf: deque[QueuedMessage], m: QueuedMessage,
                         sent: int) -> tuple[int, QueuedMessage | None]:
        """Transactions chained on the connection while messages may go at
        once. Returns the updated count and a message taken but not attempted."""
        run = await conn.pipeline(
            m, prepare=lambda x: self._prepare(lane, x), take_next=lambda: self._take_now(lane, buf),
            done=lambda x, result: self.outcomes.handle(lane, x, result),
            sent=sent, limit=lane.deliveries_per_connection())
        if run.lost is not None:
            self._lost(conn, lane, run.lost, run.error or ConnectionError("connection lost"))
        return run.sent, run.untried

    def _take_now(self, lane: Lane, buf: deque[QueuedMessage]) -> QueuedMessage | None:
        """The next message if it may go right now (no pause, rate slot free)."""
        if not buf or lane.blocked() or lane.active > lane.effective_connections():
            return None
        if lane.acquire_slot() > 0:
            return None
        message = buf.popleft()
        if len(buf) < self.batch // 2 and self.feed_wake is not None:
            self.feed_wake.set()
        return message

    def _lost(self, conn: SmtpConnection, lane: Lane, m: QueuedMessage, exc: BaseException) -> None:
        # The message may or may not have arrived: it is retried (at least once).
        self.outcomes.transient(lane, m, None, f"connection to {conn.host} lost: {exc or type(exc).__name__}",
                                time.time())
        conn.abort()

    async def _next_message(self, lane: Lane, buf: deque[QueuedMessage]) -> QueuedMessage | None:
        """The next message this connection may send now, honouring pauses and
        the rate; None when the connection should close."""
        assert self.stopping is not None
        idle_since = time.monotonic()
        while not self.stopping.is_set():
            now = time.time()
            if lane.blocked(now) or lane.active > lane.effective_connections():
                return None
            if not buf:
                # Close soon when the queue has nothing more for this lane.
                idle_limit = 0.1 if lane.db_empty_until > now and not lane.claiming else IDLE_CLOSE_S
                if time.monotonic() - idle_since > idle_limit:
                    return None
                if self.feed_wake is not None:
                    self.feed_wake.set()
                await lane.wait(0.25)
                continue
            wait = lane.acquire_slot()
            if wait > 0:
                await lane.wait(min(wait, 0.5))  # re-checks pauses while waiting
                idle_since = time.monotonic()
                continue
            message = buf.popleft()
            if len(buf) < self.batch // 2 and self.feed_wake is not None:
                self.feed_wake.set()
            return message
        return None

    def _connect_failed(self, lane: Lane, site: Site, exc: SmtpFailure) -> None:
        now = time.time()
        lane.connect_failures += 1
        lane.retry_connect_at = now + min(MAX_CONNECT_BACKOFF_S, 2.0 ** min(lane.connect_failures, 10))
        reply = exc.reply
        log.warning("lane %s: %s", lane.key, exc)
        if reply is not None:
            self.outcomes.check_rules(lane, reply, now)
        # The waiting messages go back with a retry time rather than spinning on a dead site.
        buf = lane.buffers.get(site.key)
        if buf and (reply is not None or lane.connect_failures >= 3):
            while buf:
                m = buf.popleft()
                if reply is not None and reply.code >= 500:
                    self.outcomes.failed(lane, m, reply, now, "connect")
                else:
                    self.outcomes.transient(lane, m, reply, str(exc), now)

    # -- messages ----------------------------------------------------------------------

    def _prepare(self, lane: Lane, m: QueuedMessage) -> Transaction:
        self.stats.transactions += 1
        prepared = m.prepared
        if prepared is not None and prepared[0] == lane.key:
            return Transaction(prepared[1], m.recipient, prepared[2], m.eight_bit)
        _, verp, content = self.build(lane, m)
        return Transaction(verp, m.recipient, content, m.eight_bit)

    def build(self, lane: Lane, m: QueuedMessage) -> tuple[str, str, bytes]:
        """(lane key, VERP envelope sender, content in wire form): the
        tracking header and, where a key matches the From: domain, a DKIM
        signature are the only per-delivery work on the stored message."""
        token = tracking.encode(m.message_id, lane.source_ip if lane.bind_ip else "", m.campaign)
        headers = b"X-Repmon-Track: " + token.encode("ascii") + b"\r\n" + m.headers
        if self.signers:
            signer = signer_for(self.signers, from_domain(m.headers))
            if signer is not None:
                headers = signer.sign(headers, m.body_hash or body_hash_of_wire(m.body)) + headers
        local, _, domain = m.mail_from.rpartition("@")
        return lane.key, tracking.verp_address(local, token, domain), headers + b"\r\n" + m.body


def from_domain(headers: bytes) -> str:
    """The domain of a message's From: address (the DKIM signing domain)."""
    for line in headers.split(b"\r\n"):
        if line[:5].lower() == b"from:":
            value = line[5:].decode("utf-8", "replace")
            address = value.rpartition("<")[2].rstrip("> ").strip() if "<" in value else value.strip()
            return address.rpartition("@")[2].lower()
    return ""
