"""IMAP mailboxes: one watcher per (mailbox, folder), IDLE where offered.

`ImapConnection` is a thin, strict layer over aioimaplib: every command is
checked, raced against the connection dropping (aioimaplib would otherwise
wait for its timeout) and turned into our own exceptions, whose messages
never contain the password. `FolderWatcher` does the passes: finish pending
moves, fetch new UIDs in batches, prepare, commit (monitor/ingest/commit.py),
then move what was committed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aioimaplib

from monitor.core.db import session_scope
from monitor.core.logs import register_secret
from monitor.core.runtime import Backoff, Runtime
from monitor.ingest.batches import Stages, chunks, ingest_pipelined
from monitor.ingest.commit import BatchOutcome, CommitResult, ImapPosition, commit_isolating, is_transient
from monitor.ingest.messages import Prepared, oversized
from monitor.ingest.pool import ParsePool, shared_pool
from monitor.ingest.settings import DmarcConfig, MailboxConfig, SuppressionConfig
from monitor.ingest.suppress import hold_mass_reports
from monitor.storage import ledger
from parsers import MAX_INPUT_BYTES

log = logging.getLogger("repmon.ingest.imap")
T = TypeVar("T")

# UIDs per MOVE / STORE command: keeps command lines short and the server's
# burst of EXPUNGE responses small (aioimaplib parses a burst recursively).
_UIDS_PER_COMMAND = 250
_UIDS_PER_FETCH = 100
# IDLE is renewed before servers drop it (RFC 2177 says 29 minutes).
IDLE_RENEW_S = 25 * 60

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class _LinearFetch(aioimaplib.FetchCommand):
    """aioimaplib's FETCH, with its two per-line costs made constant.

    aioimaplib asks after every received line whether the FETCH response is
    complete by scanning all the lines received so far for the last
    "n FETCH (" (quadratic in the size of the answer), and re-arms its
    inactivity timer on every line (a new timer each time). Here the scan
    resumes where it stopped, with the same answer, and the timer is re-armed
    at most every _TIMER_SLACK_S seconds (the inactivity timeout is still
    enforced, give or take that slack). This is what lets the daemon's one
    process keep up with the parse pool."""

    _TIMER_SLACK_S = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._scanned = 0
        self._last_fetch = 0
        self._armed_at = 0.0
        super().__init__(*args, **kwargs)

    def wait_data(self) -> bool:
        lines = self._resp_lines
        for index in range(self._scanned, len(lines)):
            line = lines[index]
            if isinstance(line, bytes) and self.FETCH_MESSAGE_DATA_RE.match(line):
                self._last_fetch = index
        self._scanned = len(lines)
        tail = b"".join(line for line in lines[self._last_fetch:] if isinstance(line, bytes))
        return tail.count(b"(") != tail.count(b")")

    def _reset_timer(self) -> None:
        now = self._loop.time()
        if now - self._armed_at >= self._TIMER_SLACK_S:
            self._armed_at = now
            super()._reset_timer()


class ImapError(Exception):
    """Something went wrong talking to an IMAP server (message safe to log)."""


class AuthenticationFailed(ImapError):
    pass


class ConnectionLost(ImapError):
    pass


@dataclass(slots=True)
class FolderState:
    uidvalidity: int
    exists: int
    uidnext: int | None


def encode_folder(name: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    text = "".join(out)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_delimiter(response_lines: list[Any]) -> str | None:
    """The hierarchy delimiter from the answer to LIST "" "" (None: flat server)."""
    for line in response_lines:
        if isinstance(line, (bytes, bytearray)):
            match = re.match(rb'(?:LIST )?\([^)]*\) (?:"((?:\\.|[^"])+)"|NIL)', bytes(line))
            if match:
                return re.sub(r"\\(.)", r"\1", match.group(1).decode()) if match.group(1) else None
    return None


def uid_set(uids: Iterable[int]) -> str:
    """1,2,3,7,9,10 -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = None
    for uid in ordered:
        if start is None:
            start = prev = uid
        elif prev is not None and uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def _text(response: Any) -> str:
    lines = [bytes(x) for x in getattr(response, "lines", []) if isinstance(x, (bytes, bytearray))]
    return (lines[-1] if lines else b"").decode("utf-8", "replace")[:300]


class ImapConnection:
    """One logged-in IMAP connection."""

    def __init__(self, mailbox: MailboxConfig) -> None:
        self.mailbox = mailbox
        self.name = mailbox.display_name
        self.client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self.selected: str | None = None
        # Folder names in the config use "/" between levels; servers whose
        # hierarchy delimiter is something else (Courier, Cyrus: ".") get theirs.
        self.delimiter: str | None = "/"

    # -- plumbing -------------------------------------------------------------------
    async def _call(self, awaitable: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Run one command, failing fast when the connection drops."""
        task = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except (TimeoutError, aioimaplib.AioImapException) as exc:
                raise ImapError(f"{self.name}: {what}: {type(exc).__name__} {exc}".rstrip()) from None
        task.cancel()
        if self._lost.is_set():
            raise ConnectionLost(f"{self.name}: connection lost during {what}")
        raise ImapError(f"{self.name}: {what}: no answer within {timeout:.0f} s")

    def _check(self, response: Any, what: str) -> Any:
        if response.result != "OK":
            raise ImapError(f"{self.name}: {what} failed: {response.result} {_text(response)}")
        return response

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.mailbox.ca_file) if self.mailbox.ca_file else None)
        if not self.mailbox.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # -- session ----------------------------------------------------------------------
    async def open(self) -> None:
        mailbox = self.mailbox
        password = mailbox.resolve_password()
        register_secret(password)
        timeout = mailbox.timeout_s
        context = self._ssl_context() if mailbox.security == "tls" else None
        self.client = aioimaplib.IMAP4(host=mailbox.host, port=mailbox.effective_port, timeout=timeout,
                                       conn_lost_cb=lambda exc: self._lost.set(), ssl_context=context)
        try:
            await self.client.wait_hello_from_server()
        except (TimeoutError, OSError, ssl.SSLError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"{self.name}: cannot connect to {mailbox.host}:{mailbox.effective_port}: "
                            f"{type(exc).__name__} {exc}".rstrip()) from None
        if mailbox.security == "starttls":
            await self._starttls()
        response = await self._call(self.client.login(mailbox.username, password), "LOGIN", timeout)
        if response.result != "OK":
            raise AuthenticationFailed(f"{self.name}: login as {mailbox.username} refused: {_text(response)}")
        listing = await self._call(self.client.list('""', '""'), "LIST", timeout)
        if listing.result == "OK":
            self.delimiter = parse_delimiter(listing.lines)

    def server_name(self, folder: str) -> str:
        """The configured folder name as this server spells it, quoted for a command."""
        if self.delimiter and self.delimiter != "/":
            folder = folder.replace("/", self.delimiter)
        return encode_folder(folder)

    async def _starttls(self) -> None:
        assert self.client is not None
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{self.name}: security = starttls but the server does not offer STARTTLS")
        response = await self._call(protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag(),
                                                                        loop=protocol.loop)),
                                    "STARTTLS", self.mailbox.timeout_s)
        self._check(response, "STARTTLS")
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(protocol.transport, protocol, self._ssl_context(), server_hostname=self.mailbox.host),
                self.mailbox.timeout_s)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ImapError(f"{self.name}: TLS handshake after STARTTLS failed: {type(exc).__name__} {exc}") from None
        protocol.transport = transport
        # capabilities announced before TLS must be forgotten (RFC 3501 6.2.1)
        await self._call(protocol.capability(), "CAPABILITY", self.mailbox.timeout_s)

    async def close(self) -> None:
        if self.client is None:
            return
        try:
            if not self._lost.is_set():
                await asyncio.wait_for(self.client.logout(), 5)
        except Exception:  # closing anyway
            pass
        transport = getattr(self.client.protocol, "transport", None)
        if transport is not None:
            transport.close()
        self.client = None

    def has(self, capability: str) -> bool:
        return self.client is not None and capability in self.client.protocol.capabilities

    # -- folders ------------------------------------------------------------------------
    async def select(self, folder: str) -> FolderState:
        assert self.client is not None
        response = self._check(await self._call(self.client.select(self.server_name(folder)), f"SELECT {folder}",
                                                self.mailbox.timeout_s), f"SELECT {folder}")
        uidvalidity = exists = None
        uidnext = None
        for line in response.lines:
            if not isinstance(line, (bytes, bytearray)):
                continue
            if m := re.search(rb"\[UIDVALIDITY (\d+)\]", line):
                uidvalidity = int(m.group(1))
            elif m := re.search(rb"\[UIDNEXT (\d+)\]", line):
                uidnext = int(m.group(1))
            elif m := re.match(rb"(\d+) EXISTS", line):
                exists = int(m.group(1))
        if uidvalidity is None:
            raise ImapError(f"{self.name}: server gave no UIDVALIDITY for {folder}")
        self.selected = folder
        return FolderState(uidvalidity, exists or 0, uidnext)

    async def ensure_folder(self, folder: str) -> None:
        assert self.client is not None
        response = await self._call(self.client.create(self.server_name(folder)), f"CREATE {folder}",
                                    self.mailbox.timeout_s)
        if response.result != "OK" and "ALREADYEXISTS" not in _text(response).upper() \
                and "EXISTS" not in _text(response).upper():
            raise ImapError(f"{self.name}: cannot create folder {folder}: {_text(response)}")

    # -- messages ------------------------------------------------------------------------
    async def uids_from(self, first_uid: int) -> list[int]:
        assert self.client is not None
        response = self._check(await self._call(self.client.uid_search(f"UID {max(first_uid, 1)}:*", charset=None),
                                                "UID SEARCH", self.mailbox.timeout_s), "UID SEARCH")
        uids: list[int] = []
        for line in response.lines[:-1]:
            if isinstance(line, (bytes, bytearray)):
                uids.extend(int(x) for x in line.split() if x.isdigit())
        # "n:*" always matches the highest UID even when it is below n
        return sorted(u for u in set(uids) if u >= first_uid)

    async def fetch_sizes(self, uids: list[int]) -> dict[int, int]:
        assert self.client is not None
        response = await self._uid_fetch(uids, "(UID RFC822.SIZE)", "UID FETCH sizes")
        sizes: dict[int, int] = {}
        for line in response.lines:
            if isinstance(line, (bytes, bytearray)) and _FETCH_START.match(line):
                uid, size = _UID.search(line), _SIZE.search(line)
                if uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _uid_fetch(self, uids: list[int], parts: str, what: str) -> Any:
        assert self.client is not None
        protocol = self.client.protocol
        command = _LinearFetch(protocol.new_tag(), uid_set(uids), parts, prefix="UID", loop=protocol.loop,
                               timeout=self.mailbox.timeout_s)
        return self._check(await self._call(protocol.execute(command), what), what)

    async def fetch_bodies(self, uids: list[int]) -> dict[int, bytes]:
        """Raw messages by UID (BODY.PEEK[] leaves the \\Seen flag alone)."""
        bodies: dict[int, bytes] = {}
        # Bounded FETCH commands: a large answer is held whole by aioimaplib
        # (its per-line costs are made constant by _LinearFetch).
        for chunk in chunks(uids, _UIDS_PER_FETCH):
            bodies.update(await self._fetch_bodies(chunk))
        return bodies

    async def _fetch_bodies(self, uids: list[int]) -> dict[int, bytes]:
        assert self.client is not None
        response = await self._uid_fetch(uids, "(UID BODY.PEEK[])", "UID FETCH bodies")
        bodies: dict[int, bytes] = {}
        lines = response.lines
        index = 0
        while index < len(lines):
            line = lines[index]
            if isinstance(line, bytes) and _FETCH_START.match(line) and index + 1 < len(lines) \
                    and isinstance(lines[index + 1], bytearray):
                literal = bytes(lines[index + 1])
                uid = _UID.search(line)
                if uid is None and index + 2 < len(lines) and isinstance(lines[index + 2], bytes):
                    uid = _UID.search(lines[index + 2])  # UID given after the literal
                if uid is not None:
                    bodies[int(uid.group(1))] = literal
                index += 2
                continue
            index += 1
        return bodies

    async def move(self, uids: list[int], target: str) -> None:
        """Move messages of the selected folder (MOVE, or COPY + \\Deleted + EXPUNGE)."""
        assert self.client is not None
        for chunk in chunks(sorted(set(uids)), _UIDS_PER_COMMAND):
            for attempt in (1, 2):
                try:
                    await self._move_once(chunk, target)
                    break
                except ImapError as exc:
                    if attempt == 2 or isinstance(exc, ConnectionLost) or "TRYCREATE" not in str(exc).upper():
                        raise
                    await self.ensure_folder(target)

    async def _move_once(self, uids: list[int], target: str) -> None:
        assert self.client is not None
        what = f"move to {target}"
        if self.has("MOVE") and self.mailbox.use_move:
            self._check(await self._call(self.client.uid("move", uid_set(uids), self.server_name(target)), what,
                                         self.mailbox.timeout_s), what)
            return
        self._check(await self._call(self.client.uid("copy", uid_set(uids), self.server_name(target)), what,
                                     self.mailbox.timeout_s), what)
        self._check(await self._call(self.client.uid("store", uid_set(uids), "+FLAGS.SILENT (\\Deleted)"),
                                     what, self.mailbox.timeout_s), what)
        if self.has("UIDPLUS"):
            self._check(await self._call(self.client.uid("expunge", uid_set(uids)), what, self.mailbox.timeout_s), what)
        else:  # plain EXPUNGE also removes other messages already marked \Deleted
            self._check(await self._call(self.client.expunge(), what, self.mailbox.timeout_s), what)

    async def idle(self, max_wait: float, stopping: asyncio.Event) -> bool:
        """Wait in IDLE until the folder gets new mail (True), max_wait passes or
        we are asked to stop (False)."""
        assert self.client is not None
        client = self.client
        idle_task = await self._call(client.idle_start(timeout=max_wait), "IDLE", self.mailbox.timeout_s)
        changed = False
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                push = asyncio.ensure_future(client.wait_server_push(timeout=max_wait + 5))
                try:
                    lines = await self._call(_first(push, stop), "IDLE")
                except ImapError:
                    break
                if lines is _STOPPED or lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(isinstance(x, (bytes, bytearray)) and re.match(rb"\d+ (EXISTS|RECENT)", x) for x in lines):
                    changed = True
                    break
        finally:
            stop.cancel()
            if not self._lost.is_set() and client.has_pending_idle():
                client.idle_done()
                try:
                    await self._call(asyncio.shield(idle_task), "IDLE DONE", self.mailbox.timeout_s)
                except ImapError:
                    pass
        return changed


_STOPPED = object()


async def _first(push: asyncio.Future, stop: asyncio.Future) -> Any:
    done, _ = await asyncio.wait({push, stop}, return_when=asyncio.FIRST_COMPLETED)
    if push in done:
        return push.result()
    push.cancel()
    return _STOPPED


def mailbox_source(mailbox: MailboxConfig) -> str:
    return f"imap:{mailbox.display_name}"


class RetryLater(Exception):
    """A message could not be stored yet; the watcher backs off and retries."""


@dataclass(slots=True)
class _Fetched:
    """A batch fetched and handed to the parse pool, not committed yet."""

    uidvalidity: int
    chunk: list[int]
    parsing: asyncio.Task[list[Prepared]]
    too_big: list[Prepared]

    def abandon(self) -> None:
        self.parsing.cancel()


@dataclass(slots=True)
class _Committed:
    """A batch committed (or partly, see BatchOutcome), not moved yet."""

    uidvalidity: int
    batch: list[Prepared]
    outcome: BatchOutcome


class FolderWatcher:
    """Ingests one folder of one mailbox."""

    def __init__(self, runtime: Runtime, mailbox: MailboxConfig, folder: str, *,
                 suppression: SuppressionConfig, dmarc: DmarcConfig | None = None,
                 pool: ParsePool | None = None) -> None:
        self.runtime = runtime
        self.pool = pool if pool is not None else shared_pool(dmarc=dmarc)
        self.suppression = suppression
        self.mailbox = mailbox
        self.folder = folder
        self.source = mailbox_source(mailbox)
        self.name = f"{mailbox.display_name}/{folder}"
        self.max_message_bytes = min(MAX_INPUT_BYTES, int(mailbox.max_message_mb * 1024 * 1024))
        self.last_result = CommitResult()

    # -- entry points ---------------------------------------------------------------------
    async def run_once(self) -> CommitResult:
        """Connect, do one pass, disconnect (`repmon run --once`, polling)."""
        connection = ImapConnection(self.mailbox)
        try:
            await connection.open()
            return await self.one_pass(connection)
        finally:
            await connection.close()

    async def serve(self) -> None:
        """Until stopped: stay connected, a pass whenever IDLE says there is new
        mail (or every poll_interval_s without IDLE); reconnect with back-off."""
        backoff = Backoff(self.mailbox.retry_initial_s, self.mailbox.retry_max_s)
        stopping = self.runtime.stopping
        # The parse workers start now, not when the first message arrives.
        await asyncio.to_thread(self.pool.start)
        while not stopping.is_set():
            connection = ImapConnection(self.mailbox)
            try:
                await connection.open()
                use_idle = self.mailbox.idle and connection.has("IDLE")
                while not stopping.is_set():
                    result = await self.one_pass(connection)
                    backoff.reset()
                    if result.messages:
                        # Mail that arrived during the pass was announced in
                        # answers we did not listen to: look again before idling.
                        continue
                    if use_idle:
                        await connection.idle(min(self.mailbox.poll_interval_s, IDLE_RENEW_S), stopping)
                    elif await self.runtime.sleep(self.mailbox.poll_interval_s):
                        break
            except AuthenticationFailed as exc:
                delay = backoff.next_delay()
                log.error("%s; retrying in %.1f s", exc, delay, extra={"mailbox": self.mailbox.display_name})
            except (ImapError, RetryLater, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.1f s", self.name, exc, delay,
                            extra={"mailbox": self.mailbox.display_name})
            except Exception as exc:
                if not is_transient(exc):
                    raise  # a bug: the daemon's supervisor logs it and restarts us
                delay = backoff.next_delay()
                log.warning("%s: database unavailable (%s); retrying in %.1f s", self.name, type(exc).__name__, delay)
            finally:
                await connection.close()
            if stopping.is_set():
                break
            await self.runtime.sleep(delay)

    # -- one pass -------------------------------------------------------------------------------
    async def one_pass(self, connection: ImapConnection) -> CommitResult:
        state = await connection.select(self.folder)
        last_uid = await asyncio.to_thread(self._checkpoint, state.uidvalidity)
        await self._finish_pending_moves(connection, state.uidvalidity)
        uids = await connection.uids_from(last_uid + 1)
        # The next batch is fetched and parsing (in the pool) while this one is committed.
        stages: Stages[int, _Fetched, _Committed] = Stages(
            lambda chunk: self._fetch_chunk(connection, state.uidvalidity, chunk),
            self._commit_chunk,
            lambda committed: self._settle_chunk(connection, committed),
            _Fetched.abandon,
        )
        total = await ingest_pipelined(
            uids, self.mailbox.batch_size, stages,
            runtime=self.runtime, logs_as_json=self.runtime.logs_as_json, name=self.name, unit="msg",
            log=log, log_extra={"mailbox": self.mailbox.display_name, "folder": self.folder},
        )
        self.last_result = total
        return total

    async def _fetch_chunk(self, connection: ImapConnection, uidvalidity: int, chunk: list[int]) -> _Fetched:
        sizes = await connection.fetch_sizes(chunk)
        wanted = [u for u in chunk if u in sizes and sizes[u] <= self.max_message_bytes]
        bodies = await connection.fetch_bodies(wanted) if wanted else {}
        where = f"{self.source}/{self.folder}/{uidvalidity}"
        too_big = [oversized(u, sizes[u], self.max_message_bytes, where) for u in chunk
                   if u in sizes and sizes[u] > self.max_message_bytes]
        parsing = asyncio.create_task(self.pool.prepare_many([(bodies[u], u) for u in sorted(bodies)]))
        return _Fetched(uidvalidity, chunk, parsing, too_big)

    async def _commit_chunk(self, fetched: _Fetched) -> _Committed:
        uidvalidity, chunk = fetched.uidvalidity, fetched.chunk
        prepared = await fetched.parsing
        hold_mass_reports(prepared, self.suppression)  # a forged mass DSN suppresses none: quarantined
        batch = sorted(prepared + fetched.too_big, key=lambda p: p.uid or 0)
        # Messages that vanished between SEARCH and FETCH (another client
        # expunged them) are simply gone; the checkpoint moves past them.
        position = ImapPosition(self.folder, uidvalidity, self.mailbox.processed_folder,
                                self.mailbox.quarantine_folder, checkpoint_uid=max(chunk))
        outcome = await asyncio.to_thread(
            commit_isolating, self.runtime.engine, self.source, batch, self.suppression,
            imap=position, location=self._location, max_attempts=self.mailbox.max_attempts,
        )
        return _Committed(uidvalidity, batch, outcome)

    async def _settle_chunk(self, connection: ImapConnection, committed: _Committed) -> CommitResult:
        """Move what was committed; then fail for a batch not fully stored."""
        outcome, batch = committed.outcome, committed.batch
        await self._apply_moves(connection, committed.uidvalidity, outcome.result.moves)
        if outcome.error is not None:
            if is_transient(outcome.error):
                raise outcome.error
            raise RetryLater(f"message UID {batch[outcome.stopped_at or 0].uid} not stored yet: "
                             f"{type(outcome.error).__name__}: {outcome.error}")
        return outcome.result

    def _location(self, prepared: Prepared) -> str:
        return (f"imap://{self.mailbox.username}@{self.mailbox.host}/{self.mailbox.quarantine_folder}"
                f" (from {self.folder}, UID {prepared.uid}, sha256 {prepared.sha256})")

    async def _apply_moves(self, connection: ImapConnection, uidvalidity: int, moves: dict[str, list[int]]) -> None:
        for target, uids in moves.items():
            if not uids:
                continue
            await connection.move(uids, target)
            await asyncio.to_thread(self._forget_moves, uidvalidity, uids)

    async def _finish_pending_moves(self, connection: ImapConnection, uidvalidity: int) -> None:
        moves = await asyncio.to_thread(self._pending_moves, uidvalidity)
        if moves:
            log.info("%s: finishing %d moves left by an interrupted pass", self.name, sum(map(len, moves.values())))
            await self._apply_moves(connection, uidvalidity, moves)

    # -- database helpers (run in a thread) ---------------------------------------------------------
    def _checkpoint(self, uidvalidity: int) -> int:
        """The last settled UID for this UIDVALIDITY; a new UIDVALIDITY resets it."""
        with session_scope(self.runtime.engine) as session:
            known = ledger.checkpoint_of(session, self.source, self.folder)
            if known is None:
                return 0
            known_uidvalidity, last_uid = known
            if known_uidvalidity == uidvalidity:
                return last_uid
            log.warning("%s: UIDVALIDITY changed from %d to %d: reading the whole folder again "
                        "(messages already stored are recognised by their content and only moved)",
                        self.name, known_uidvalidity, uidvalidity)
            ledger.restart_folder(session, self.source, self.folder, uidvalidity)
            return 0

    def _pending_moves(self, uidvalidity: int) -> dict[str, list[int]]:
        with session_scope(self.runtime.engine) as session:
            rows = ledger.pending_moves(session, self.source, self.folder, uidvalidity)
        moves: dict[str, list[int]] = {}
        for target, uid in rows:
            moves.setdefault(target, []).append(uid)
        return moves

    def _forget_moves(self, uidvalidity: int, uids: list[int]) -> None:
        with session_scope(self.runtime.engine) as session:
            for chunk in chunks(sorted(uids), 500):
                ledger.forget_moves(session, self.source, self.folder, uidvalidity, chunk)
