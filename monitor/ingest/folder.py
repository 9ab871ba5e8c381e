"""Local folder sources: a folder of .eml / report files, or a maildir.

Files are never moved or deleted (the folder may be shared or read-only).
A file is read again only when its size or mtime changed since the last pass
(`folder_files`), and the ledger's content hash makes reading it again a
no-op. A file that cannot be parsed is quarantined with its path as location.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from monitor.core.db import session_scope
from monitor.core.runtime import Runtime
from monitor.ingest.batches import ingest_in_batches
from monitor.ingest.commit import CommitResult, SeenFile, commit_isolating, is_transient
from monitor.ingest.messages import Prepared, content_hash, prepare
from monitor.ingest.settings import FolderSourceConfig, SuppressionConfig
from monitor.storage import ledger
from parsers import MAX_INPUT_BYTES

log = logging.getLogger("repmon.ingest.folder")

BATCH_SIZE = 200


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
    def __init__(self, runtime: Runtime, folder: FolderSourceConfig, *, suppression: SuppressionConfig) -> None:
        self.runtime = runtime
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
        todo = [f for f in files if known.get(str(f.path)) != (f.size, f.mtime_ns)]
        return await ingest_in_batches(
            todo, BATCH_SIZE, self._ingest, runtime=self.runtime, logs_as_json=self.runtime.logs_as_json,
            name=self.name, unit="file", log=log, log_extra={"folder": self.name},
        )

    async def _ingest(self, chunk: list[FileInfo]) -> CommitResult:
        prepared, seen = await asyncio.to_thread(self._read_and_prepare, chunk)
        outcome = await asyncio.to_thread(
            commit_isolating, self.runtime.engine, self.source, prepared, self.suppression,
            location=self._location, seen_files=seen,
        )
        if outcome.error is not None:
            if is_transient(outcome.error):
                raise outcome.error
            # The rest of the chunk is not marked seen: it is retried next pass.
            stopped = prepared[outcome.stopped_at or 0]  # set whenever error is
            log.warning("%s: stopped at %s: %s", self.name, self._paths.get(stopped.sha256),
                        outcome.error)
        return outcome.result

    def _read_and_prepare(self, chunk: list[FileInfo]) -> tuple[list[Prepared], list[SeenFile]]:
        prepared: list[Prepared] = []
        seen: list[SeenFile] = []
        self._paths: dict[str, Path] = {}
        for info in chunk:
            try:
                if info.size > MAX_INPUT_BYTES:  # not read: quarantined by reference
                    key = f"oversized-file:{info.path}:{info.size}:{info.mtime_ns}".encode()
                    item = Prepared(sha256=content_hash(key), size=info.size, raw=None, events=[],
                                    forced_quarantine=f"file is {info.size} bytes, "
                                                      f"above the {MAX_INPUT_BYTES}-byte limit")
                else:
                    item = prepare(info.path.read_bytes())
            except OSError as exc:
                log.warning("%s: cannot read %s: %s", self.name, info.path, exc.strerror)
                continue
            self._paths[item.sha256] = info.path
            prepared.append(item)
            seen.append(SeenFile(str(info.path), info.size, info.mtime_ns, item.sha256))
        return prepared, seen

    def _location(self, prepared: Prepared) -> str | None:
        path = getattr(self, "_paths", {}).get(prepared.sha256)
        return str(path) if path else None

    def _known(self) -> dict[str, tuple[int, int]]:
        with session_scope(self.runtime.engine) as session:
            return ledger.seen_files(session, self.source)
