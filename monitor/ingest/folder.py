"""Local folder sources: a folder of .eml / report files, or a maildir.

Files are never moved or deleted (the folder may be shared or read-only).
A file is read again only when its size or mtime changed since the last pass
(`folder_files`), and the ledger's content hash makes reading it again a
no-op. A file that cannot be parsed is quarantined with its path as location.

Only regular files are read (after following a link; checked with fstat on the
file opened non-blocking, so a FIFO or a link to /dev/zero is neither waited on
nor read for ever), and never more than MAX_INPUT_BYTES of one. Anything else is
quarantined by reference with the reason. Names that are not UTF-8 are stored
escaped (`\\xNN`, ledger.storable_text).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path

from monitor.core.db import session_scope
from monitor.core.runtime import Runtime
from monitor.ingest.batches import ingest_in_batches
from monitor.ingest.commit import CommitResult, SeenFile, commit_isolating, is_transient
from monitor.ingest.messages import Prepared, content_hash
from monitor.ingest.pool import ParsePool, shared_pool
from monitor.ingest.settings import DmarcConfig, FolderSourceConfig, SuppressionConfig
from monitor.ingest.suppress import hold_mass_reports
from monitor.storage import ledger
from monitor.storage.ledger import storable_text
from parsers import MAX_INPUT_BYTES

log = logging.getLogger("repmon.ingest.folder")

BATCH_SIZE = 200
_READ_CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_TYPES = ((stat_module.S_ISFIFO, "a FIFO"), (stat_module.S_ISCHR, "a character device"),
               (stat_module.S_ISBLK, "a block device"), (stat_module.S_ISSOCK, "a socket"),
               (stat_module.S_ISDIR, "a folder"))


class NotAMessageFile(Exception):
    """The path is not something to read as a message; the reason is the text."""


def read_message_file(path: Path, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file (a link is followed), at most `limit` of
    them; NotAMessageFile when it is anything else or larger."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat_module.S_ISREG(mode):
            kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
            raise NotAMessageFile(f"{kind}, not a regular file: not read")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(_READ_CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise NotAMessageFile(f"file is above the {limit}-byte limit (it grew while read): not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(slots=True)
class FileInfo:
    path: Path
    size: int
    mtime_ns: int


def list_files(root: Path) -> list[FileInfo]:
    """Every message file under root. In a maildir only cur/ and new/ count
    (tmp/ holds deliveries in progress); hidden files are skipped."""
    is_maildir = (root / "cur").is_dir() and (root / "new").is_dir()
    files: list[FileInfo] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (is_maildir and d == "tmp"
                                                                                   and Path(dirpath) == root))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except OSError:  # vanished while we looked
                continue
            files.append(FileInfo(path, stat.st_size, stat.st_mtime_ns))
    return files


def folder_source(folder: FolderSourceConfig) -> str:
    return f"folder:{folder.name or folder.path}"


class FolderReader:
    def __init__(self, runtime: Runtime, folder: FolderSourceConfig, *, suppression: SuppressionConfig,
                 dmarc: DmarcConfig | None = None, pool: ParsePool | None = None) -> None:
        self.runtime = runtime
        self.pool = pool if pool is not None else shared_pool(dmarc=dmarc)
        self.suppression = suppression
        self.folder = folder
        self.source = folder_source(folder)
        self.name = folder.name or str(folder.path)

    async def run_once(self) -> CommitResult:
        root = self.folder.path
        if not root.is_dir():
            raise FileNotFoundError(f"folder source {root} does not exist or is not a folder")
        files = await asyncio.to_thread(list_files, root)
        known = await asyncio.to_thread(self._known)
        todo = [f for f in files if known.get(storable_text(str(f.path))) != (f.size, f.mtime_ns)]
        return await ingest_in_batches(
            todo, BATCH_SIZE, self._ingest, runtime=self.runtime, logs_as_json=self.runtime.logs_as_json,
            name=self.name, unit="file", log=log, log_extra={"folder": self.name},
        )

    async def _ingest(self, chunk: list[FileInfo]) -> CommitResult:
        prepared, seen = await asyncio.to_thread(self._read_and_prepare, chunk)
        await self._parse(prepared)
        hold_mass_reports(prepared, self.suppression)
        outcome = await asyncio.to_thread(
            commit_isolating, self.runtime.engine, self.source, prepared, self.suppression,
            location=self._location, seen_files=seen,
        )
        if outcome.error is not None:
            if is_transient(outcome.error):
                raise outcome.error
            # The rest of the chunk is not marked seen: it is retried next pass.
            stopped = prepared[outcome.stopped_at or 0]  # set whenever error is
            log.warning("%s: stopped at %s: %s", self.name, storable_text(str(self._paths.get(stopped.sha256))),
                        outcome.error)
        return outcome.result

    def _read_and_prepare(self, chunk: list[FileInfo]) -> tuple[list[Prepared], list[SeenFile]]:
        prepared: list[Prepared] = []
        seen: list[SeenFile] = []
        self._paths: dict[str, Path] = {}
        for info in chunk:
            name = storable_text(str(info.path))
            try:
                if info.size > MAX_INPUT_BYTES:  # not read: quarantined by reference
                    raise NotAMessageFile(f"file is {info.size} bytes, above the {MAX_INPUT_BYTES}-byte limit")
                raw = read_message_file(info.path)  # parsed in the pool (_parse)
                item = Prepared(sha256=content_hash(raw), size=len(raw), raw=raw, events=[])
            except NotAMessageFile as why:
                key = b"unread-file:%s:%d:%d" % (os.fsencode(info.path), info.size, info.mtime_ns)
                item = Prepared(sha256=content_hash(key), size=info.size, raw=None, events=[],
                                forced_quarantine=str(why))
            except OSError as exc:
                log.warning("%s: cannot read %s: %s", self.name, name, exc.strerror)
                continue
            self._paths[item.sha256] = info.path
            prepared.append(item)
            seen.append(SeenFile(name, info.size, info.mtime_ns, item.sha256))
        return prepared, seen

    async def _parse(self, items: list[Prepared]) -> None:
        """Parse the files read (raw bytes, no events yet) in the parse pool, in place."""
        todo = [i for i, p in enumerate(items) if p.raw is not None and not p.events and p.forced_quarantine is None]
        parsed = await self.pool.prepare_many([(items[i].raw or b"", None) for i in todo])
        for index, item in zip(todo, parsed, strict=True):
            items[index] = item

    def _location(self, prepared: Prepared) -> str | None:
        path = getattr(self, "_paths", {}).get(prepared.sha256)
        return storable_text(str(path)) if path else None

    def _known(self) -> dict[str, tuple[int, int]]:
        with session_scope(self.runtime.engine) as session:
            return ledger.seen_files(session, self.source)
