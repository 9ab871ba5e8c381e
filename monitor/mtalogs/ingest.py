"""One pass over a delivery-log source: new lines -> rows, exactly once.

Each batch of lines is one transaction: its delivery rows, bounce and
feedback events, suppressions, rejected lines and the file's checkpoint
(advanced from the offset this pass started at: if another repmon moved it
meanwhile, the batch is rolled back and nothing is counted twice). A crash
anywhere before the commit re-reads the batch on the next pass.

`ingest_kumo_records` is the entry point for KumoMTA's log hook (the HTTP API
hands it the decoded POST bodies). Those records carry no file position and
the hook delivers at least once (a POST whose answer was lost is sent again),
so the hook's checkpoint is a ledger: the SHA-256 of each record's canonical
JSON, stored in the same transaction as its rows; a record seen before is
skipped. Ledger keys older than `HOOK_LEDGER_DAYS` are pruned.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from monitor.core.dbtypes import utcnow
from monitor.mtalogs.destinations import Destinations
from monitor.mtalogs.models import MtaHookRecord, MtaLogCheckpoint
from monitor.mtalogs.settings import DeliveryLogConfig
from monitor.mtalogs.store import Attribution, Located, StoreResult, store_records
from monitor.mtalogs.tail import HEAD_BYTES, LogFile, discover, head_digest, now, read_lines
from parsers.mtalogs import LineReader, reader_for
from parsers.mtalogs import kumomta as kumo_parser
from parsers.mtalogs.events import MAX_LINE, BadRecord, MtaRecord

log = logging.getLogger("repmon.mtalogs")
_CP = MtaLogCheckpoint.__table__  # type: ignore[attr-defined]
HOOK_SOURCE = "kumomta-hook"
MAX_HOOK_RECORDS = 10_000  # per call
HOOK_LEDGER_DAYS = 7
_LEDGER = MtaHookRecord.__table__  # type: ignore[attr-defined]


class CheckpointMoved(RuntimeError):
    """Another reader advanced this file's checkpoint: the batch was not stored."""


@dataclass(slots=True)
class PassResult:
    source: str
    lines: int = 0
    files: int = 0
    stored: StoreResult = field(default_factory=StoreResult)
    more: bool = False  # stopped at max_batches_per_pass with lines left


@dataclass(slots=True)
class _Checkpoint:
    id: int | None
    offset: int  # where to read from
    head_len: int
    head_sha256: str
    stored_offset: int = -1  # what the row holds now (-1: the same as offset)

    def __post_init__(self) -> None:
        if self.stored_offset < 0:
            self.stored_offset = self.offset

    def restart(self) -> _Checkpoint:
        """The same row, read again from the start of a new file under its identity."""
        return _Checkpoint(self.id, 0, 0, "", self.stored_offset)


def attribution_of(config: DeliveryLogConfig) -> Attribution:
    agents = frozenset(config.postfix_agents) if config.kind.startswith("postfix") else None
    return Attribution(source=config.display_name, source_ip=config.source_ip, source_ips=dict(config.source_ips),
                       destinations=Destinations(config.providers), postfix_agents=agents,
                       bounce_events=config.bounce_events)


class SourceReader:
    """A [[delivery_logs]] source: its line reader (with the format's state) and attribution."""

    def __init__(self, engine: Engine, config: DeliveryLogConfig) -> None:
        self.engine = engine
        self.config = config
        self.name = config.display_name
        self.attribution = attribution_of(config)
        self.reader: LineReader = reader_for(config.kind, tz=config.tz)

    def run_pass(self) -> PassResult:
        result = PassResult(self.name)
        checkpoints = self._load()
        first_time = not checkpoints
        files = discover(self.config.path, self.config.is_glob, set(checkpoints))
        batches = 0
        for file in files:
            checkpoint = self._position(file, checkpoints.get(file.identity), first_time)
            if checkpoint is None:
                continue
            result.files += 1
            while batches < self.config.max_batches_per_pass:
                done = self._one_batch(file, checkpoint, result)
                batches += 1
                if done:
                    break
            else:
                result.more = True
                break
        if not result.more:
            self._prune(checkpoints, files)
        return result

    # -- checkpoints --------------------------------------------------------------------

    def _load(self) -> dict[tuple[int, int], _Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_CP.c.id, _CP.c.device, _CP.c.inode, _CP.c.offset, _CP.c.head_len,
                                       _CP.c.head_sha256).where(_CP.c.source == self.name)).all()
        return {(r.device, r.inode): _Checkpoint(r.id, r.offset, r.head_len, r.head_sha256) for r in rows}

    def _position(self, file: LogFile, checkpoint: _Checkpoint | None, first_time: bool) -> _Checkpoint | None:
        """Where to read this file from; None when there is nothing to read."""
        try:
            if checkpoint is not None and checkpoint.head_len and (
                    file.size < checkpoint.head_len
                    or head_digest(file.path, checkpoint.head_len, file.identity) != checkpoint.head_sha256):
                log.info("file changed under its identity (copytruncate or inode reused): reading it from the start",
                         extra={"source": self.name, "path": file.path})
                checkpoint = checkpoint.restart()
            elif checkpoint is not None and file.size < checkpoint.offset:
                log.info("file shrank below its checkpoint: reading it from the start",
                         extra={"source": self.name, "path": file.path})
                checkpoint = checkpoint.restart()
        except OSError as exc:  # gone or rotated since we looked: the next pass sees where it went
            log.warning("cannot read %s: %s", file.path, exc.strerror or exc, extra={"source": self.name})
            return None
        if checkpoint is None:
            start = file.size if (first_time and self.config.start_at == "end") else 0
            checkpoint = _Checkpoint(None, start, 0, "")
        if checkpoint.offset >= file.size and checkpoint.id is not None:
            return None
        return checkpoint

    def _head(self, file: LogFile, checkpoint: _Checkpoint, new_offset: int) -> tuple[int, str]:
        """The fingerprint to store: the first HEAD_BYTES bytes (fewer while the file is shorter)."""
        head_len = min(HEAD_BYTES, max(file.size, new_offset))
        if head_len == checkpoint.head_len:
            return head_len, checkpoint.head_sha256
        return head_len, head_digest(file.path, head_len, file.identity)

    def _save(self, conn: Connection, file: LogFile, checkpoint: _Checkpoint, new_offset: int, lines: int,
              stored: StoreResult, head: tuple[int, str]) -> None:
        head_len, head_sha = head
        values = {"path": file.path[:1024], "offset": new_offset, "head_len": head_len, "head_sha256": head_sha,
                  "updated_at": utcnow()}
        if checkpoint.id is None:
            new_id = conn.execute(_CP.insert().returning(_CP.c.id), {
                **values, "source": self.name[:255], "device": file.device, "inode": file.inode,
                "lines": lines, "records": stored.stored, "rejected": stored.rejected}).scalar_one()
            checkpoint.id = new_id
        else:
            moved = conn.execute(update(_CP).where(_CP.c.id == checkpoint.id, _CP.c.offset == checkpoint.stored_offset)
                                 .values(**values, lines=_CP.c.lines + lines, records=_CP.c.records + stored.stored,
                                         rejected=_CP.c.rejected + stored.rejected))
            if moved.rowcount != 1:
                raise CheckpointMoved(f"{self.name}: {file.path} was read by another process meanwhile")
        checkpoint.offset = checkpoint.stored_offset = new_offset
        checkpoint.head_len, checkpoint.head_sha256 = head_len, head_sha

    def _prune(self, checkpoints: dict[tuple[int, int], _Checkpoint], files: list[LogFile]) -> None:
        present = {f.identity for f in files}
        if not self.config.is_glob:
            present |= _still_on_disk(self.config, set(checkpoints))
        gone = [c.id for identity, c in checkpoints.items() if identity not in present and c.id is not None]
        if gone:
            with self.engine.begin() as conn:
                conn.execute(delete(_CP).where(_CP.c.id.in_(gone)))

    # -- one batch ----------------------------------------------------------------------

    def _one_batch(self, file: LogFile, checkpoint: _Checkpoint, result: PassResult) -> bool:
        """Read, parse and store up to batch_lines lines; True when the file is read to its end."""
        try:
            lines, new_offset = read_lines(file.path, checkpoint.offset, final=file.finished(now()),
                                           max_lines=self.config.batch_lines, identity=file.identity)
            head = self._head(file, checkpoint, new_offset)
        except OSError as exc:  # rotated or removed between looking and reading: the next pass sees where it went
            log.info("file moved while reading it; again at the next pass: %s", exc, extra={"source": self.name})
            return True
        if new_offset == checkpoint.offset and checkpoint.id is not None:
            return True
        located: list[Located] = []
        for line in lines:
            if line.too_long:
                located.append(Located(BadRecord(self.config.kind, f"line longer than {MAX_LINE} bytes", line.text[:2000]),
                                       file.path, line.offset))
                continue
            for record in self._parse(line.text):
                located.append(Located(record, file.path, line.offset))
        try:
            stored = self._commit(file, checkpoint, new_offset, len(lines), located, head, one_by_one=False)
        except IntegrityError:
            raise CheckpointMoved(f"{self.name}: {file.path} was first read by another process meanwhile") from None
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            log.warning("a batch could not be stored (%s); storing it record by record", type(exc).__name__,
                        extra={"source": self.name, "path": file.path})
            stored = self._commit(file, checkpoint, new_offset, len(lines), located, head, one_by_one=True)
        result.lines += len(lines)
        result.stored.add(stored)
        return len(lines) < self.config.batch_lines

    def _commit(self, file: LogFile, checkpoint: _Checkpoint, new_offset: int, lines: int, located: list[Located],
                head: tuple[int, str], *, one_by_one: bool) -> StoreResult:
        with self.engine.begin() as conn:
            if one_by_one:
                stored = store_each(conn, self.attribution, located)
            else:
                stored = store_records(conn, self.attribution, located)
            self._save(conn, file, checkpoint, new_offset, lines, stored, head)
        return stored

    def _parse(self, text: str) -> list[MtaRecord]:
        try:
            return self.reader(text)
        except Exception as exc:  # a parser bug must not stop the source: the line is kept with the reason
            log.exception("delivery-log parser failed on a line", extra={"source": self.name})
            return [BadRecord(self.config.kind, f"parser error: {type(exc).__name__}: {exc}"[:500], text[:2000])]


def is_transient(exc: BaseException) -> bool:
    """A database that is down or busy, as opposed to a problem with these rows."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def store_each(conn: Connection, attribution: Attribution, located: list[Located]) -> StoreResult:
    """The slow path after a batch failed: each record in its own savepoint; one
    the database refuses becomes a reject with the database's reason instead of
    stopping the source for ever."""
    total = StoreResult()
    for item in located:
        try:
            with conn.begin_nested():
                total.add(store_records(conn, attribution, [item]))
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            reason = f"could not be stored: {type(exc).__name__}: {exc.orig}"[:500]
            total.add(store_records(conn, attribution, [Located(BadRecord(attribution.source, reason, repr(item.record)[:2000]),
                                                                item.path, item.offset)]))
    return total


def _still_on_disk(config: DeliveryLogConfig, known: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Identities of rotated siblings still present (their checkpoints are kept)."""
    return {f.identity for f in discover(config.path, False, known)}


# -- KumoMTA log hook ----------------------------------------------------------------------

def ingest_kumo_records(engine: Engine, records: Any, *, source: str = HOOK_SOURCE,
                        attribution: Attribution | None = None) -> StoreResult:
    """Store KumoMTA log records POSTed by its log hook (one record, or a list).

    For monitor/api: call it with the decoded JSON body and answer 2xx only
    after it returned (KumoMTA then does not send the batch again); a raised
    exception means nothing was stored (answer 5xx: KumoMTA retries). Records
    that cannot be read are stored as rejects with the reason, not raised.
    At most MAX_HOOK_RECORDS records per call (ValueError above: answer 413).
    """
    items = records if isinstance(records, list) else [records]
    if len(items) > MAX_HOOK_RECORDS:
        raise ValueError(f"at most {MAX_HOOK_RECORDS} log records per request, got {len(items)}")
    attribution = attribution or Attribution(source=source)
    keyed: dict[str, Any] = {}
    for item in items:
        keyed.setdefault(_record_key(item), item)
    with engine.begin() as conn:
        seen: set[str] = set()
        keys = list(keyed)
        for start in range(0, len(keys), 500):
            seen.update(conn.execute(select(_LEDGER.c.sha256).where(_LEDGER.c.sha256.in_(keys[start:start + 500])))
                        .scalars())
        fresh = [(key, item) for key, item in keyed.items() if key not in seen]
        located = [Located(record) for _key, item in fresh for record in kumo_parser.parse_record(item)]
        result = store_records(conn, attribution, located)
        if fresh:
            at = utcnow()
            conn.execute(_LEDGER.insert(), [{"sha256": key, "source": source[:255], "seen_at": at} for key, _ in fresh])
        result.duplicates = len(items) - len(fresh)
    return result


def prune_hook_ledger(engine: Engine, days: float = HOOK_LEDGER_DAYS) -> int:
    """Forget hook records older than `days` (KumoMTA retries within minutes)."""
    from datetime import timedelta

    with engine.begin() as conn:
        return conn.execute(delete(_LEDGER).where(_LEDGER.c.seen_at < utcnow() - timedelta(days=days))).rowcount or 0


def _record_key(item: Any) -> str:
    try:
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        canonical = repr(item)
    return hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()


# -- journald piped in -----------------------------------------------------------------------

JOURNAL_FLUSH_S = 1.0


class JournalPipe:
    """`journalctl -o json [-f]` piped into `repmon delivery-logs pipe`.

    The checkpoint of a pipe is the journal's own clock: the row of (source,
    device 0, inode 0) holds the __REALTIME_TIMESTAMP (microseconds) of the
    last record committed and `path` its __CURSOR; records at or before it
    are skipped, so piping the same journal again does not count twice. A
    batch is committed when full or after JOURNAL_FLUSH_S without input."""

    def __init__(self, engine: Engine, config: DeliveryLogConfig) -> None:
        self.engine = engine
        self.config = config
        self.name = config.display_name
        self.attribution = attribution_of(config)
        self.reader = reader_for("postfix-journal", tz=config.tz)
        self.position, self.cursor, self.row_id = self._load()
        self.result = PassResult(self.name)

    def _load(self) -> tuple[int, str, int | None]:
        with self.engine.connect() as conn:
            row = conn.execute(select(_CP.c.id, _CP.c.offset, _CP.c.path).where(
                _CP.c.source == self.name, _CP.c.device == 0, _CP.c.inode == 0)).first()
        return (int(row.offset), row.path, int(row.id)) if row else (0, "", None)

    def feed_lines(self, lines: list[str]) -> None:
        """Store one batch of journal lines (one transaction)."""
        located: list[Located] = []
        position, cursor = self.position, self.cursor
        for line in lines:
            stamp, this_cursor = _journal_position(line)
            if stamp is not None:
                if stamp < position or (stamp == position and this_cursor == cursor):
                    continue
                position, cursor = stamp, this_cursor or cursor
            if len(line) > MAX_LINE:
                located.append(Located(BadRecord("postfix", f"record longer than {MAX_LINE} bytes", line[:2000])))
                continue
            located.extend(Located(r) for r in self._parse(line))
        with self.engine.begin() as conn:
            stored = store_records(conn, self.attribution, located)
            values = {"offset": position, "path": cursor[:1024], "updated_at": utcnow()}
            if self.row_id is None:
                self.row_id = conn.execute(_CP.insert().returning(_CP.c.id), {
                    **values, "source": self.name[:255], "device": 0, "inode": 0, "head_len": 0, "head_sha256": "",
                    "lines": len(lines), "records": stored.stored, "rejected": stored.rejected}).scalar_one()
            else:
                moved = conn.execute(update(_CP).where(_CP.c.id == self.row_id, _CP.c.offset == self.position)
                                     .values(**values, lines=_CP.c.lines + len(lines),
                                             records=_CP.c.records + stored.stored,
                                             rejected=_CP.c.rejected + stored.rejected))
                if moved.rowcount != 1:
                    raise CheckpointMoved(f"{self.name}: the journal checkpoint was moved by another process")
        self.position, self.cursor = position, cursor
        self.result.lines += len(lines)
        self.result.stored.add(stored)

    def _parse(self, text: str) -> list[MtaRecord]:
        try:
            return self.reader(text)
        except Exception as exc:
            log.exception("journal parser failed on a record", extra={"source": self.name})
            return [BadRecord("postfix", f"parser error: {type(exc).__name__}: {exc}"[:500], text[:2000])]

    def run(self, fd: int) -> PassResult:
        """Read the file descriptor to its end, committing batch by batch."""
        import os
        import select as select_module

        pending: list[str] = []
        buffer = b""
        while True:
            ready, _, _ = select_module.select([fd], [], [], JOURNAL_FLUSH_S)
            if not ready:
                if pending:
                    self.feed_lines(pending)
                    pending = []
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                break
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE * 4:  # a runaway record: keep it as a reject, drop its bytes
                complete.append(buffer[:MAX_LINE * 4])
                buffer = b""
            pending.extend(c.decode("utf-8", "replace") for c in complete if c.strip())
            while len(pending) >= self.config.batch_lines:
                self.feed_lines(pending[:self.config.batch_lines])
                pending = pending[self.config.batch_lines:]
        if buffer.strip():
            pending.append(buffer.decode("utf-8", "replace"))
        if pending:
            self.feed_lines(pending)
        return self.result


def _journal_position(line: str) -> tuple[int | None, str | None]:
    """(__REALTIME_TIMESTAMP, __CURSOR) of a journal JSON line, read cheaply."""
    stamp = _json_string_field(line, '"__REALTIME_TIMESTAMP"')
    cursor = _json_string_field(line, '"__CURSOR"')
    return (int(stamp) if stamp and stamp.isdigit() else None), cursor


def _json_string_field(line: str, key: str) -> str | None:
    start = line.find(key)
    if start < 0:
        return None
    start = line.find('"', line.find(":", start + len(key)) + 1)
    end = line.find('"', start + 1)
    return line[start + 1:end] if start >= 0 and end > start else None
