"""Following log files exactly once: file identity, offsets, rotation.

A file is known by (device, inode) and a SHA-256 of its first bytes (up to
256): the checkpoint row of that identity holds the offset of the first byte
not yet committed. Lines are handed out only whole (up to a newline); a
partial last line waits for the rest, except in a file that is finished (a
rotated-away or glob-matched file untouched for `SETTLE_S`), where it is the
last line.

- One path ("/var/log/mail.log"): the live file, and before it any rotated
  sibling in the same folder (mail.log.1, mail.log-20261202) whose identity has
  a checkpoint that is not at its end: the rest of a file that was renamed
  away is read before the new file (rename + create rotation). A file that
  shrank below its offset, or whose first bytes changed, is a new file
  (copytruncate; an inode reused) and is read from the start.
- A glob ("/var/log/kumomta/*"): every match, oldest first, each followed
  while it grows. Checkpoints of files that are gone are deleted.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from parsers.mtalogs.events import MAX_LINE

HEAD_BYTES = 256
READ_BYTES = 1024 * 1024  # read from a file at a time (a few thousand lines; more than MAX_LINE)
SETTLE_S = 10.0  # a non-live file untouched this long is finished
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")


@dataclass(frozen=True, slots=True)
class LogFile:
    path: str
    device: int
    inode: int
    size: int
    mtime: float
    live: bool  # the path itself (still written), as opposed to rotated away

    @property
    def identity(self) -> tuple[int, int]:
        return self.device, self.inode

    def finished(self, now: float) -> bool:
        return not self.live and now - self.mtime >= SETTLE_S


def _stat(path: str, live: bool) -> LogFile | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return LogFile(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime, live)


def discover(path: Path, is_glob: bool, known: set[tuple[int, int]]) -> list[LogFile]:
    """The files to read, in reading order."""
    if is_glob:
        found = [f for f in (_stat(p, False) for p in glob.glob(str(path))) if f is not None]
        return sorted(found, key=lambda f: (f.mtime, f.path))
    live = _stat(str(path), True)
    rotated: list[LogFile] = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        names = []
    base = path.name
    for name in names:
        if name == base or not name.startswith(base) or name[len(base):len(base) + 1] not in (".", "-", "_"):
            continue
        if name.endswith(_COMPRESSED):
            continue
        candidate = _stat(str(path.parent / name), False)
        if candidate is not None and candidate.identity in known and (live is None or candidate.identity != live.identity):
            rotated.append(candidate)
    rotated.sort(key=lambda f: (f.mtime, f.path))
    return rotated + ([live] if live is not None else [])


class FileMoved(OSError):
    """The path no longer names the file of that identity (rotated meanwhile)."""


def _open(path: str, identity: tuple[int, int] | None) -> BinaryIO:
    """Open for reading, checking the opened file is the one we mean: between
    looking and opening, the path may have been rotated to a new file."""
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller's with
    if identity is not None:
        st = os.fstat(handle.fileno())
        if (st.st_dev, st.st_ino) != identity:
            handle.close()
            raise FileMoved(f"{path} is another file now")
    return handle


def head_digest(path: str, length: int, identity: tuple[int, int] | None = None) -> str:
    with _open(path, identity) as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()


class Line(NamedTuple):
    offset: int  # of the line's first byte
    text: str  # without the newline
    too_long: bool = False


def read_lines(path: str, offset: int, *, final: bool, max_lines: int, identity: tuple[int, int] | None = None,
               max_bytes: int = READ_BYTES) -> tuple[list[Line], int]:
    """Whole lines from `offset` (at most max_lines), and the offset after them.

    A line longer than MAX_LINE comes back clipped with too_long set (its
    bytes are still consumed, up to its newline), so memory stays bounded.
    FileMoved when `path` is no longer the file of `identity`."""
    lines: list[Line] = []
    skipping = False  # inside a runaway line: drop bytes up to its newline
    with _open(path, identity) as handle:
        while len(lines) < max_lines:
            handle.seek(offset)
            data = handle.read(max_bytes)
            if not data:
                break
            if skipping:
                newline = data.find(b"\n")
                if newline < 0:
                    offset += len(data)
                    continue
                offset += newline + 1
                skipping = False
                continue
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) >= max_bytes:  # no line end in max_bytes: a runaway line
                    lines.append(Line(offset, _decode(data[:MAX_LINE]), True))
                    offset += len(data)
                    skipping = True
                    continue
                if final:
                    lines.append(_line(offset, data))
                    offset += len(data)
                break
            raws = data[:end].split(b"\n")
            del raws[max_lines - len(lines):]
            for raw in raws:
                lines.append(_line(offset, raw))
                offset += len(raw) + 1
    return lines, offset


def _line(offset: int, raw: bytes) -> Line:
    if len(raw) > MAX_LINE:
        return Line(offset, _decode(raw[:MAX_LINE]), True)
    return Line(offset, _decode(raw))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def now() -> float:
    return time.time()
