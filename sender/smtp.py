"""The SMTP client of the delivery hot path: one connection, many transactions.

Why not aiosmtplib here: its `sendmail` awaits the reply to every command
before sending the next (MAIL, RCPT, DATA, then the content: four round trips
and four task wake-ups a message) and builds several objects per command; a
plain aiosmtplib loop measures about 1,000 messages/s on this machine (see
bench/bench_sender.py), a fifth of what the sender must reach. This client
speaks the same protocol over an asyncio Protocol with SMTP PIPELINING
(RFC 2920): MAIL, RCPT and DATA leave in one write, the content and the
terminating dot in a second, so a message costs two writes and two wake-ups.
aiosmtplib is still what the benchmark's naive reference uses.

STARTTLS is used when offered (unless tls="none") and required when the lane
says so; the source address is bound per connection (one sending IP per lane).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sender.settings import TlsMode

T = TypeVar("T")
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, TimeoutError, asyncio.TimeoutError, ConnectionError)
_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(slots=True, frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without the codes

    @classmethod
    def of(cls, code: int, text: str) -> Reply:
        return cls(code, (text,))

    @property
    def text(self) -> str:
        """The reply flattened to one line, as rules and logs match it."""
        lines = self.lines
        if len(lines) == 1:  # nearly every reply to a transaction: no join
            return lines[0]
        return " ".join(x for x in lines if x)

    @property
    def status(self) -> str | None:
        """The enhanced status code (RFC 3463) the reply starts with, if any."""
        match = _STATUS_RE.match(self.text)
        return match.group(0) if match else None

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class SmtpFailure(Exception):
    """A connection that could not be opened or used. `reply` is the server's
    reply when it gave one (greeting 421, EHLO 5xx, STARTTLS refused)."""

    def __init__(self, message: str, reply: Reply | None = None, stage: str = "connect") -> None:
        super().__init__(message)
        self.reply = reply
        self.stage = stage


# What can end the clean-up of a refused envelope: the connection is then given up.
_END_ERRORS: tuple[type[BaseException], ...] = (SmtpFailure, *CONNECTION_ERRORS)


@dataclass(slots=True, frozen=True)
class TransactionResult:
    """How one message's transaction ended: `stage` is the step that decided
    (mail, rcpt, data, end) and `reply` what the server said there."""

    stage: str
    reply: Reply

    @property
    def delivered(self) -> bool:
        return self.stage == "end" and 200 <= self.reply.code < 300


@dataclass(slots=True, frozen=True)
class Transaction:
    """One message in wire form: `content` is CRLF lines, dot-stuffed, ending
    with CRLF (the terminating dot is added when it is sent)."""

    mail_from: str
    recipient: str
    content: bytes
    eight_bit: bool = False


@dataclass(slots=True)
class PipelineRun(Generic[T]):
    """How a chain of pipelined transactions on one connection ended.

    `sent` counts transactions started on the connection (including those
    before the chain). `lost` is the message whose transaction the connection
    lost with `error` (it may or may not have arrived); `untried` one taken
    but never attempted (the connection closed before its envelope got any
    reply)."""

    sent: int
    lost: T | None = None
    error: BaseException | None = None
    untried: T | None = None


_ssl_unverified: ssl.SSLContext | None = None


def client_tls_context(verify: bool) -> ssl.SSLContext:
    """Opportunistic TLS to MX hosts cannot verify names (MX certificates
    rarely match and there is no policy to say they should), so the default
    context encrypts without verifying; `verify=True` checks as a browser would."""
    global _ssl_unverified
    if verify:
        return ssl.create_default_context()
    if _ssl_unverified is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _ssl_unverified = ctx
    return _ssl_unverified


class _SmtpProtocol(asyncio.Protocol):
    """Splits the byte stream into replies and hands them to one waiter that
    wants a given number of replies (a pipelined group)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self.closed_exc: Exception | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            code = line[:3]
            sep = line[3:4]
            self._lines.append(line[4:].decode("utf-8", "replace").strip())
            if sep != b"-":
                try:
                    number = int(code)
                except ValueError:
                    number = 0  # not SMTP: the caller treats 0 as a protocol error
                self._replies.append(Reply(number, tuple(self._lines)))
                self._lines = []
        if start:
            del buf[:start]
        if len(buf) > 65536:  # a "line" this long is not SMTP
            self._fail(ConnectionError("reply line too long"))
            return
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._wanted and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.closed_exc = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_exc = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self.closed_exc)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(self.closed_exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    async def drain(self) -> None:
        if self._paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    async def replies(self, count: int, timeout: float, partial: bool = False) -> list[Reply]:
        """The next `count` replies, in order. With `partial`, a connection
        closed after at least one reply returns the replies it gave."""
        got = self._replies
        if len(got) < count:
            try:
                if self.closed_exc is not None:
                    raise self.closed_exc
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiter, self._wanted = waiter, count
                timer = loop.call_later(timeout, _expire, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._waiter = None
            except (OSError, EOFError, ConnectionError):
                if partial and got:
                    return [got.popleft() for _ in range(len(got))]
                raise
        return [got.popleft() for _ in range(count)]


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("timed out waiting for the server's reply"))


class SmtpConnection:
    """One open SMTP session after EHLO (and STARTTLS)."""

    def __init__(self, protocol: _SmtpProtocol, host: str, command_timeout: float) -> None:
        self._p = protocol
        self.host = host
        self.command_timeout = command_timeout
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.transactions = 0

    # -- opening --------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ehlo_name: str,
        source_ip: str | None = None,
        tls: TlsMode = "opportunistic",
        tls_verify: bool = False,
        server_hostname: str | None = None,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
    ) -> SmtpConnection:
        loop = asyncio.get_running_loop()
        local = (source_ip, 0) if source_ip else None
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_SmtpProtocol, host, port, local_addr=local), connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise SmtpFailure(f"cannot connect to {host}:{port} from {source_ip or 'any address'}: {exc}") from None
        conn = cls(protocol, host, command_timeout)
        try:
            await conn._handshake(ehlo_name, tls, tls_verify, server_hostname or host, connect_timeout)
        except SmtpFailure:
            conn.abort()
            raise
        except (OSError, EOFError, TimeoutError, ssl.SSLError) as exc:
            conn.abort()
            raise SmtpFailure(f"{host}:{port}: {exc or type(exc).__name__}") from None
        return conn

    async def _handshake(self, ehlo_name: str, tls: TlsMode, tls_verify: bool, server_name: str,
                         timeout: float) -> None:
        (greeting,) = await self._p.replies(1, timeout)
        if greeting.code != 220:
            raise SmtpFailure(f"{self.host} refused the session: {greeting}", greeting, "greeting")
        await self._ehlo(ehlo_name)
        if tls != "none" and "STARTTLS" in self.extensions:
            reply = await self.command(b"STARTTLS\r\n")
            if reply.code != 220:
                if tls == "required":
                    raise SmtpFailure(f"{self.host} refused STARTTLS: {reply}", reply, "starttls")
                return
            loop = asyncio.get_running_loop()
            transport = self._p.transport
            assert transport is not None
            new_transport = await asyncio.wait_for(loop.start_tls(
                transport, self._p, client_tls_context(tls_verify), server_hostname=server_name), timeout)
            self._p.transport = new_transport
            self.tls = True
            await self._ehlo(ehlo_name)  # RFC 3207: forget what was said before TLS
        elif tls == "required":
            raise SmtpFailure(f"{self.host} does not offer STARTTLS and this lane requires TLS", None, "starttls")

    async def _ehlo(self, ehlo_name: str) -> None:
        reply = await self.command(f"EHLO {ehlo_name}\r\n".encode())
        self.extensions = {}
        if reply.code == 250:
            for item in reply.lines[1:]:  # the first line is the server's name
                name, _, args = item.partition(" ")
                if name:
                    self.extensions[name.upper()] = args
            return
        if 500 <= reply.code < 600:
            reply = await self.command(f"HELO {ehlo_name}\r\n".encode())
            if reply.code == 250:
                return
        raise SmtpFailure(f"{self.host} refused EHLO/HELO: {reply}", reply, "ehlo")

    # -- commands ---------------------------------------------------------------------

    async def command(self, line: bytes) -> Reply:
        self._write(line)
        (reply,) = await self._p.replies(1, self.command_timeout)
        return reply

    def envelope(self, mail_from: str, recipient: str, eight_bit: bool = False) -> bytes:
        """MAIL, RCPT and DATA as one pipelined group (RFC 2920)."""
        body_param = b" BODY=8BITMIME" if eight_bit and "8BITMIME" in self.extensions else b""
        return (b"MAIL FROM:<" + mail_from.encode() + b">" + body_param + b"\r\nRCPT TO:<" + recipient.encode()
                + b">\r\nDATA\r\n")

    def write(self, data: bytes) -> None:
        self.transactions += data.count(b"\r\nDATA\r\n")
        self._write(data)

    async def read(self, count: int, partial: bool = False) -> list[Reply]:
        return await self._p.replies(count, self.command_timeout, partial)

    async def end_failed_envelope(self, r_data: Reply) -> None:
        """After a refused MAIL or RCPT in a pipelined group: close a DATA the
        server accepted anyway (RFC 2920 says to send just the dot), then RSET."""
        if r_data.code == 354:
            self._write(b".\r\n")
            await self._p.replies(1, self.command_timeout)
        await self._reset()

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    def _write(self, data: bytes) -> None:
        if self._p.closed_exc is not None:
            raise self._p.closed_exc
        transport = self._p.transport
        assert transport is not None
        transport.write(data)

    async def send(self, mail_from: str, recipient: str, content: bytes, *,
                   eight_bit: bool = False) -> TransactionResult:
        """One transaction. `content` is the message in wire form: CRLF lines,
        dot-stuffed, ending with CRLF (the terminating dot is added here)."""
        body_param = b" BODY=8BITMIME" if eight_bit and "8BITMIME" in self.extensions else b""
        mail = b"MAIL FROM:<" + mail_from.encode() + b">" + body_param + b"\r\n"
        rcpt = b"RCPT TO:<" + recipient.encode() + b">\r\n"
        timeout = self.command_timeout
        p = self._p
        self.transactions += 1
        if "PIPELINING" in self.extensions:
            self._write(mail + rcpt + b"DATA\r\n")
            r_mail, r_rcpt, r_data = await p.replies(3, timeout)
        else:
            self._write(mail)
            (r_mail,) = await p.replies(1, timeout)
            if r_mail.code != 250:
                await self._reset()
                return TransactionResult("mail", r_mail)
            self._write(rcpt)
            (r_rcpt,) = await p.replies(1, timeout)
            if r_rcpt.code not in (250, 251):
                await self._reset()
                return TransactionResult("rcpt", r_rcpt)
            self._write(b"DATA\r\n")
            (r_data,) = await p.replies(1, timeout)
        if r_mail.code != 250 or r_rcpt.code not in (250, 251) or r_data.code != 354:
            if r_data.code == 354:  # RFC 2920: a server that accepted DATA anyway gets an empty message ended at once
                self._write(b".\r\n")
                await p.replies(1, timeout)
            await self._reset()
            if r_mail.code != 250:
                return TransactionResult("mail", r_mail)
            if r_rcpt.code not in (250, 251):
                return TransactionResult("rcpt", r_rcpt)
            return TransactionResult("data", r_data)
        self._write(content + b".\r\n")
        if p._paused:
            await p.drain()
        (r_end,) = await p.replies(1, timeout)
        return TransactionResult("end", r_end)

    async def pipeline(self, first: T, *, prepare: Callable[[T], Transaction], take_next: Callable[[], T | None],
                       done: Callable[[T, TransactionResult], None], sent: int, limit: int) -> PipelineRun[T]:
        """Transactions chained on this connection (RFC 2920): the content and
        final dot of one message leave in the same write as MAIL/RCPT/DATA of
        the next (message content may open a command group), so a steady
        stream costs one write and one wake-up per message.

        `prepare` turns a message into its transaction, `take_next` gives the
        next message that may go right now (or None), `done` receives each
        message's result; at most `limit` transactions run on the connection,
        `sent` of them already did."""
        m = first
        started = await self._start(prepare(m))
        if isinstance(started, BaseException):
            return PipelineRun(sent + 1, lost=m, error=started)
        replies, content = started
        while True:
            r_mail, r_rcpt, r_data = replies
            sent += 1
            if r_mail.code != 250 or r_rcpt.code not in (250, 251) or r_data.code != 354:
                stage, reply = (("mail", r_mail) if r_mail.code != 250 else
                                ("rcpt", r_rcpt) if r_rcpt.code not in (250, 251) else ("data", r_data))
                done(m, TransactionResult(stage, reply))
                try:
                    await self.end_failed_envelope(r_data)
                except _END_ERRORS:
                    self.abort()
                    return PipelineRun(sent)
                nxt = take_next() if sent < limit else None
                if nxt is None:
                    return PipelineRun(sent)
                m = nxt
                started = await self._start(prepare(m))
                if isinstance(started, BaseException):
                    return PipelineRun(sent + 1, lost=m, error=started)
                replies, content = started
                continue
            nxt = take_next() if sent < limit else None
            if nxt is None:
                try:
                    self.write(content + b".\r\n")
                    (r_end,) = await self.read(1)
                except CONNECTION_ERRORS as exc:
                    return PipelineRun(sent, lost=m, error=exc)
                done(m, TransactionResult("end", r_end))
                return PipelineRun(sent)
            following = prepare(nxt)
            try:
                self.write(content + b".\r\n" + self.envelope(following.mail_from, following.recipient,
                                                              following.eight_bit))
                got = await self.read(4, partial=True)
            except CONNECTION_ERRORS as exc:
                return PipelineRun(sent, lost=m, error=exc, untried=nxt)
            done(m, TransactionResult("end", got[0]))
            if len(got) < 4:  # closed after the end of data (e.g. a per-connection cap)
                self.abort()
                return PipelineRun(sent, untried=nxt)
            replies = got[1:]
            m, content = nxt, following.content

    async def _start(self, t: Transaction) -> tuple[list[Reply], bytes] | BaseException:
        """MAIL/RCPT/DATA of one message on its own: their replies and the
        content, or the error that lost the connection."""
        try:
            self.write(self.envelope(t.mail_from, t.recipient, t.eight_bit))
            return await self.read(3), t.content
        except CONNECTION_ERRORS as exc:
            return exc

    async def _reset(self) -> None:
        reply = await self.command(b"RSET\r\n")
        if reply.code != 250:
            raise SmtpFailure(f"{self.host} refused RSET: {reply}", reply, "rset")

    async def quit(self) -> None:
        try:
            if self._p.closed_exc is None:
                self._write(b"QUIT\r\n")
                await self._p.replies(1, min(self.command_timeout, 5.0))
        except (OSError, EOFError, TimeoutError, ConnectionError):
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        transport = self._p.transport
        if transport is not None:
            transport.close()

    @property
    def usable(self) -> bool:
        return self._p.closed_exc is None


def dot_stuff(data: bytes) -> bytes:
    """CRLF line ends, a leading dot doubled on every line, a final CRLF."""
    # Counting, not copying: a message already in CRLF form (every rendered
    # template body) is left alone without building an intermediate copy.
    crlf = data.count(b"\r\n")
    if not crlf or data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")
