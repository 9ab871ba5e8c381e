"""Report containers: zip, gzip and bare documents, opened as bounded streams.

A report file is recognised by its first bytes, never by its name. Archives
are decompressed chunk by chunk and every chunk is counted before it is
handed on, so a decompression bomb is stopped after at most a few chunks past
its limit instead of being expanded in memory first:

- the decompressed total of one input (all entries, all nesting levels) is
  capped (`Limits.max_decompressed_bytes`);
- past a small floor, output may not exceed `Limits.max_ratio` times the
  compressed size of its stream (bombs have ratios in the thousands, DMARC
  XML around 20-40);
- a zip may hold at most `Limits.max_zip_entries` entries, and archives may
  be nested only `Limits.max_nesting` levels deep.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 64 * 1024
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = b" \t\r\n"


class ReportError(ValueError):
    """The input is not a report we can read; the message says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_decompressed_bytes: int = 200 * 1024 * 1024
    max_ratio: int = 250
    ratio_floor_bytes: int = 8 * 1024 * 1024  # small files may compress better than max_ratio
    max_zip_entries: int = 64
    max_nesting: int = 2  # an archive inside an archive, no deeper
    max_json_bytes: int = 64 * 1024 * 1024  # a TLS report is parsed whole, so it gets its own cap
    max_nested_zip_bytes: int = 32 * 1024 * 1024  # zipfile needs a seekable buffer


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Payload:
    """One document found in the input: its name inside the container (None
    for a bare file) and its bytes as a stream of chunks."""

    name: str | None
    chunks: Iterator[bytes]


class _Budget:
    """Decompressed bytes left for the whole input, shared by every stream."""

    __slots__ = ("limits", "produced")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.produced = 0

    def take(self, amount: int, stream_out: int, stream_in: int, what: str) -> None:
        self.produced += amount
        limit = self.limits.max_decompressed_bytes
        if self.produced > limit:
            raise ReportError(f"{what} decompresses to more than {limit} bytes (decompression bomb?); refused")
        if stream_out > self.limits.ratio_floor_bytes and stream_out > self.limits.max_ratio * max(stream_in, 1):
            raise ReportError(
                f"{what} expands more than {self.limits.max_ratio}:1 "
                f"({stream_in} compressed bytes gave over {stream_out}; decompression bomb?); refused"
            )


def sniff(head: bytes) -> str:
    """'zip', 'gzip', 'xml', 'json' or 'unknown' from the first bytes."""
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(_UTF16_BOMS):
        return "xml" if b"<\x00" in head[:8] or b"\x00<" in head[:8] else "unknown"
    text = head[3:] if head.startswith(_UTF8_BOM) else head
    text = text.lstrip(_WHITESPACE)
    if text.startswith(b"<"):
        return "xml"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def peek(chunks: Iterator[bytes], want: int = 64) -> tuple[bytes, Iterator[bytes]]:
    """The first bytes of a stream (at least `want` past leading whitespace,
    unless the stream ends first) and the same stream, nothing consumed."""
    taken: list[bytes] = []
    head = b""
    for chunk in chunks:
        if chunk:
            taken.append(chunk)
            head = b"".join(taken)
            if len(head.lstrip(_WHITESPACE)) >= want:
                break

    def replay() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return head, replay()


def bytes_chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start:start + CHUNK])


def read_all(chunks: Iterator[bytes], limit: int, what: str) -> bytes:
    """Join a stream that must be held whole (JSON, nested zip), within `limit`."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise ReportError(f"{what} is larger than {limit} bytes; refused")
    return bytes(out)


def gunzip_chunks(data: bytes, budget: _Budget, notes: list[str], what: str = "gzip data") -> Iterator[bytes]:
    """Decompress gzip (several members allowed) a chunk at a time.

    Trailing bytes after the last member are tolerated (some reporters pad
    the file) and noted; a stream that ends before its end marker is
    truncated and refused: a partial report would understate counts."""
    pos = 0
    out_total = 0
    while True:
        decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = b""
        while not decomp.eof:
            if not pending:
                if pos >= len(data):
                    # all input consumed: zlib may still hold the last few bytes of output
                    try:
                        out = decomp.flush()
                    except zlib.error as exc:
                        raise ReportError(f"{what} is corrupt: {exc}") from None
                    if out:
                        out_total += len(out)
                        budget.take(len(out), out_total, len(data), what)
                        yield out
                    if not decomp.eof:
                        raise ReportError(f"{what} is truncated: the stream ends before its end marker")
                    break
                pending = data[pos:pos + CHUNK]
                pos += len(pending)
            try:
                out = decomp.decompress(pending, CHUNK)
            except zlib.error as exc:
                raise ReportError(f"{what} is corrupt: {exc}") from None
            pending = decomp.unconsumed_tail
            if out:
                out_total += len(out)
                budget.take(len(out), out_total, len(data), what)
                yield out
        # what the member did not need of the input fed to it
        rest_start = pos - len(decomp.unused_data) - len(pending)
        if data.startswith(GZIP_MAGIC, rest_start):
            pos = rest_start
            continue
        trailing = data[rest_start:]
        if trailing.strip(b"\x00" + _WHITESPACE):
            notes.append(f"{what}: {len(trailing)} bytes after the end of the gzip stream were ignored")
        return


def zip_payloads(data: bytes, budget: _Budget, what: str = "zip archive") -> Iterator[Payload]:
    """The entries of a zip archive that hold something (directories and
    empty files are skipped), each as a bounded stream."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ReportError(f"{what} cannot be read: {exc}") from None
    if len(infos) > budget.limits.max_zip_entries:
        raise ReportError(f"{what} has {len(infos)} entries, more than the {budget.limits.max_zip_entries} allowed")
    # not info.is_dir(): it raises IndexError on an entry with an empty name
    entries = [info for info in infos if not info.filename.endswith("/") and info.file_size > 0]
    if not entries:
        raise ReportError(f"{what} holds no file")
    for info in entries:
        if info.flag_bits & 0x1:
            raise ReportError(f"{what}: entry {info.filename!r} is encrypted")
        yield Payload(info.filename, _zip_entry_chunks(archive, info, budget, f"{what} entry {info.filename!r}"))


def _zip_entry_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, what: str) -> Iterator[bytes]:
    out_total = 0
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    return
                out_total += len(chunk)
                budget.take(len(chunk), out_total, info.compress_size, what)
                yield chunk
    except ReportError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ReportError(f"{what} cannot be decompressed: {type(exc).__name__}: {exc}") from None


def open_payloads(
    data: bytes, limits: Limits, notes: list[str], *, _budget: _Budget | None = None, _depth: int = 0,
    _name: str | None = None,
) -> Iterator[Payload]:
    """Every document inside `data`, archives opened (bounded), leaves left
    for the caller to sniff as XML or JSON. A zip entry that cannot be opened
    becomes a payload that raises its ReportError when read, so the other
    entries are still read."""
    budget = _budget or _Budget(limits)
    kind = sniff(data[:64])
    if kind not in ("zip", "gzip"):
        yield Payload(_name, bytes_chunks(data))
        return
    label = f"{kind} archive" + (f" {_name!r}" if _name else "")
    if kind == "gzip":
        yield from _expand_nested(Payload(_name, gunzip_chunks(data, budget, notes, label)), limits, notes, budget, _depth)
        return
    for entry in zip_payloads(data, budget, label):
        try:
            yield from _expand_nested(entry, limits, notes, budget, _depth)
        except ReportError as exc:
            yield Payload(entry.name, _raising(exc))


def _raising(error: ReportError) -> Iterator[bytes]:
    raise error
    yield b""  # a generator: the error comes when the payload is read


def _expand_nested(payload: Payload, limits: Limits, notes: list[str], budget: _Budget, depth: int) -> Iterator[Payload]:
    """The payload itself, or the documents inside it when it is an archive."""
    head, chunks = peek(payload.chunks)
    kind = sniff(head)
    if kind not in ("zip", "gzip"):
        yield Payload(payload.name, chunks)
        return
    if depth + 1 >= limits.max_nesting:
        raise ReportError(f"archive {payload.name!r} is nested more than {limits.max_nesting} levels deep; refused")
    # zipfile needs the whole archive; a nested gzip is small (compressed) too
    inner = read_all(chunks, limits.max_nested_zip_bytes, f"nested {kind} {payload.name!r}")
    yield from open_payloads(inner, limits, notes, _budget=budget, _depth=depth + 1, _name=payload.name)
