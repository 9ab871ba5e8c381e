"""A small asyncio DNS stub client for many concurrent lookups against one resolver.

Blocklist polling sends ~10,000 single-question queries a cycle. The client
shares a few connected UDP sockets among all in-flight queries and matches
replies by message id *and* question; one socket per query (what
`dns.asyncquery.udp` does) and dnspython's full message parser would each
cost more than the lookups themselves. Messages are encoded and decoded by
monitor.signals.dnswire (names via dnspython); truncated replies are retried
over TCP with dnspython's `dns.asyncquery.tcp`.

Every failure is reported as an outcome (timeout, servfail, refused,
unreachable, ...), never raised: callers decide what an error means.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Literal

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from monitor.signals.dnswire import (
    Question,
    WireError,
    WireReply,
    answer_values,
    answers_question,
    decode_reply,
    encode_query,
    make_question,
)

Outcome = Literal["answer", "nxdomain", "nodata", "servfail", "refused", "rcode", "timeout", "unreachable", "bad_reply"]
OK_OUTCOMES = frozenset({"answer", "nxdomain", "nodata"})


@dataclass(frozen=True, slots=True)
class DnsReply:
    outcome: Outcome
    addresses: tuple[str, ...] = ()  # A / AAAA answers
    texts: tuple[str, ...] = ()  # TXT answers, each rdata's strings joined
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The resolver gave a definite answer (possibly 'no such name')."""
        return self.outcome in OK_OUTCOMES

    def describe(self) -> str:
        return f"{self.outcome}: {self.detail}" if self.detail else self.outcome


def parse_resolver(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT' or a bare host (port 53)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if not host:
        raise ValueError(f"resolver {text!r}: missing host")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"resolver {text!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"resolver {text!r}: port {number} out of range")
    return host, number


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket and the queries waiting on it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[asyncio.Future[WireReply], Question]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        query_id = int.from_bytes(data[:2], "big")
        entry = self.pending.get(query_id)
        if entry is None:
            return  # a late reply to a query we gave up on
        future, question = entry
        if future.done():
            return
        try:
            reply = decode_reply(data)
        except WireError as exc:
            future.set_exception(_BadReply(f"malformed reply: {exc}"))
            return
        if answers_question(reply, query_id, question):
            future.set_result(reply)
        # else: same id, another question - not ours; keep waiting

    def error_received(self, exc: Exception) -> None:
        # On a connected socket this is the ICMP error of an earlier send
        # (usually "connection refused": nothing listens on the resolver port).
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(exc or ConnectionError("socket closed"))


class _BadReply(Exception):
    pass


class DnsClient:
    """Queries one resolver; use as `async with DnsClient(host, port) as client`."""

    def __init__(self, host: str, port: int = 53, *, timeout: float = 3.0, attempts: int = 2,
                 sockets: int = 4) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._socket_count = max(1, sockets)
        self._channels: list[_Channel] = []

    async def __aenter__(self) -> DnsClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self._socket_count):
            _, channel = await loop.create_datagram_endpoint(_Channel, remote_addr=(self.host, self.port))
            self._channels.append(channel)

    def close(self) -> None:
        for channel in self._channels:
            if channel.transport is not None:
                channel.transport.close()
        self._channels.clear()

    async def query(self, name: str, rdtype: str = "A") -> DnsReply:
        if not self._channels:
            raise RuntimeError("DnsClient used before open()")
        try:
            question, question_wire = make_question(name, rdtype)
        except (dns.exception.DNSException, ValueError) as exc:
            return DnsReply("bad_reply", detail=f"cannot build a query for {name!r}: {exc}")
        outcome = await self._exchange_udp(question, question_wire)
        if isinstance(outcome, DnsReply):
            return outcome
        if outcome.truncated:
            outcome = await self._exchange_tcp(question, question_wire)
            if isinstance(outcome, DnsReply):
                return outcome
        try:
            return read_reply(outcome, question)
        except WireError as exc:
            return DnsReply("bad_reply", detail=f"malformed answer: {exc}")

    async def _exchange_udp(self, question: Question, question_wire: bytes) -> WireReply | DnsReply:
        channel = random.choice(self._channels)
        transport = channel.transport
        if transport is None or transport.is_closing():
            return DnsReply("unreachable", detail="socket closed")
        query_id = random.getrandbits(16)
        while query_id in channel.pending:
            query_id = random.getrandbits(16)
        wire = encode_query(query_id, question_wire)
        loop = asyncio.get_running_loop()
        per_attempt = self.timeout / self.attempts
        try:
            for _ in range(self.attempts):
                # A fresh future per attempt: the timeout cancels it, and a
                # late reply to an earlier send (same id) still completes the next.
                future: asyncio.Future[WireReply] = loop.create_future()
                channel.pending[query_id] = (future, question)
                transport.sendto(wire)
                try:
                    async with asyncio.timeout(per_attempt):
                        return await future
                except TimeoutError:
                    continue
            return DnsReply("timeout", detail=f"no reply from {self.host}:{self.port} in {self.timeout:g}s")
        except _BadReply as exc:
            return DnsReply("bad_reply", detail=str(exc))
        except OSError as exc:
            return DnsReply("unreachable", detail=f"{self.host}:{self.port}: {exc.strerror or exc}")
        finally:
            channel.pending.pop(query_id, None)

    async def _exchange_tcp(self, question: Question, question_wire: bytes) -> WireReply | DnsReply:
        query_id = random.getrandbits(16)
        query = dns.message.from_wire(encode_query(query_id, question_wire))
        try:
            response = await dns.asyncquery.tcp(query, self.host, port=self.port, timeout=self.timeout)
            reply = decode_reply(response.to_wire())
        except dns.exception.Timeout:
            return DnsReply("timeout", detail="TCP retry of a truncated reply timed out")
        except (dns.exception.DNSException, OSError, EOFError, WireError) as exc:
            return DnsReply("unreachable", detail=f"TCP retry of a truncated reply failed: {exc}")
        if not answers_question(reply, query_id, question):
            return DnsReply("bad_reply", detail="TCP reply does not answer the question")
        return reply


def read_reply(reply: WireReply, question: Question) -> DnsReply:
    rcode = reply.rcode
    if rcode == dns.rcode.NXDOMAIN:
        return DnsReply("nxdomain")
    if rcode == dns.rcode.SERVFAIL:
        return DnsReply("servfail", detail="resolver could not get an answer")
    if rcode == dns.rcode.REFUSED:
        return DnsReply("refused", detail="resolver refused the query")
    if rcode != dns.rcode.NOERROR:
        return DnsReply("rcode", detail=dns.rcode.to_text(dns.rcode.Rcode.make(rcode)))
    values = answer_values(reply, question)
    if not values:
        return DnsReply("nodata")
    if question.rdtype == dns.rdatatype.TXT:
        return DnsReply("answer", texts=tuple(values))
    return DnsReply("answer", addresses=tuple(values))
