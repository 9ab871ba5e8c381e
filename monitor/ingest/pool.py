"""Parsing off the event loop: a small pool of worker processes.

Messages are parsed (and their DMARC records given their sources) in worker
processes while the daemon's one writer commits (monitor/ingest/commit.py);
the batch loops (imap.py, folder.py) parse the next batch while the current
one is committed. Exactly-once is untouched: workers only turn bytes into a
`Prepared`; everything stored is still written by the one transaction per
batch, in the daemon process.

Workers take messages JOB_MESSAGES at a time and hand back each message's
events with its storage rows already built (messages.with_rows), so the
writer only inserts. A job that takes longer than `parse_timeout_s` has its
worker killed and replaced, and its messages are parsed again one at a time,
each with the whole budget: the one that still exceeds it comes back as a
`Prepared` with `forced_quarantine` (the reason says so) and is quarantined
like any unreadable message instead of holding up the mailbox; no parse,
however slow, ever runs on the event loop. A worker that dies (a crash in a
C library) quarantines its message the same way.

`workers = 0` parses in a thread of the daemon instead (no time budget).
"""

from __future__ import annotations

import asyncio
import atexit
import copyreg
import dataclasses
import gc
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from operator import attrgetter
from pathlib import Path
from typing import Any

from monitor.ingest.messages import Prepared, content_hash, prepare, with_rows
from monitor.ingest.settings import DmarcConfig, ParsingConfig
from monitor.ingest.sources import record_sources
from parsers.events import DmarcRecord

log = logging.getLogger("repmon.ingest.pool")

# Item: raw bytes and IMAP UID (None for a file).
Item = tuple[bytes, int | None]
_READY = "ready"
_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding monitor/ and parsers/
STARTUP_TIMEOUT_S = 120.0
GC_THRESHOLD = 50_000
# Messages per round trip to a worker: one pickle and one thread hop per job, not per message.
JOB_MESSAGES = 50
JOB_BYTES = 8 * 1024 * 1024


def prepare_with_sources(raw: bytes, uid: int | None, dmarc: DmarcConfig | None) -> Prepared:
    prepared = prepare(raw, uid)
    sources = record_sources(dmarc)
    if sources is not None:
        try:
            sources.enrich(prepared.events)
        except Exception as exc:  # lookups are a nicety: store the records without them
            log.warning("DMARC source lookups failed: %s: %s", type(exc).__name__, exc)
    return prepared


def _serve(requests: Connection, replies: Connection) -> None:
    """A worker process: its [dmarc] settings first, then lists of (raw, uid)
    in, their Prepared (with their rows built, without their raw bytes) out."""
    tune_gc()
    dmarc: DmarcConfig | None = requests.recv()
    record_sources(dmarc)  # open the IP database before the first message's clock starts
    replies.send(_READY)
    while True:
        try:
            job = requests.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        out = []
        for raw, uid in job:
            prepared = with_rows(prepare_with_sources(raw, uid, dmarc))
            prepared.raw = None  # the daemon has the bytes already
            out.append(prepared)
        del job, raw
        replies.send(out)
        del out


class _Worker:
    """One worker process (`python -m monitor.ingest.worker`), talked to over two
    pipes. Started as a fresh interpreter, not through multiprocessing: that
    would run the daemon's main module again in every worker."""

    def __init__(self, dmarc: DmarcConfig | None) -> None:
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor.ingest.worker", str(from_parent), str(to_parent)],
                pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        finally:
            os.close(from_parent)
            os.close(to_parent)
        self.requests = Connection(to_child, readable=False)
        self.replies = Connection(from_child, writable=False)
        # A new worker imports the parsers first: that is not the first message's time.
        try:
            self.requests.send(dmarc)
            ready = self.replies.poll(STARTUP_TIMEOUT_S) and self.replies.recv() == _READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop(kill=True)
            raise RuntimeError(f"a parse worker did not start within {STARTUP_TIMEOUT_S:g} s")

    def run(self, job: Sequence[Item], timeout: float) -> list[Prepared] | str:
        """The parsed messages, or why there are none (blocking: run in a thread)."""
        started = time.monotonic()
        try:
            self.requests.send(list(job))
            if not self.replies.poll(timeout):
                return f"parsing took longer than {timeout:g} s; the parser was stopped"
            result: list[Prepared] = self.replies.recv()
        except (EOFError, OSError) as exc:
            try:
                code: int | None = self.process.wait(1)
            except subprocess.TimeoutExpired:
                code = None
            return (f"the parser process died (exit code {code}) after "
                    f"{time.monotonic() - started:.1f} s: {type(exc).__name__}")
        return result

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.requests.send(None)
            except OSError:
                pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.requests.close()
        self.replies.close()


def tune_gc() -> None:
    """Raise the cyclic collector's first threshold in this process (once).

    A DMARC report of 100,000 records is hundreds of thousands of small,
    acyclic objects, built by the parser (thread mode) or by unpickling the
    workers' answers, then turned into rows; at the default threshold (700
    allocations) the collector runs thousands of times over a growing heap and
    ingestion takes about 3x as long. 50,000 is what `repmon parse` uses."""
    first, second, third = gc.get_threshold()
    if first < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, second, third)


class ParsePool:
    """`prepare` for many messages at once, in worker processes."""

    def __init__(self, settings: ParsingConfig | None = None, dmarc: DmarcConfig | None = None) -> None:
        tune_gc()
        self.settings = settings or ParsingConfig()
        self.dmarc = dmarc if dmarc is not None else DmarcConfig()
        self._idle: list[_Worker] = []
        self._started = 0
        self._lock = threading.Lock()
        self._closed = False
        # at most `workers` jobs in the workers at once, whichever sources ask
        self._slots = threading.BoundedSemaphore(max(1, self.settings.workers))

    @property
    def workers(self) -> int:
        return self.settings.workers

    async def prepare_many(self, items: Sequence[Item]) -> list[Prepared]:
        """The messages prepared, in order; never raises for a message's sake.
        Messages go to the workers JOB_MESSAGES (at most JOB_BYTES) at a time."""
        if not items:
            return []
        if self.workers == 0:
            dmarc = self.dmarc
            return await asyncio.to_thread(lambda: [prepare_with_sources(raw, uid, dmarc) for raw, uid in items])
        gate = asyncio.Semaphore(self.workers)

        async def one(job: list[Item]) -> list[Prepared]:
            async with gate:
                return await asyncio.to_thread(self._run_job, job)

        done = await asyncio.gather(*(one(job) for job in _jobs(items)))
        return [prepared for job in done for prepared in job]

    def _run_job(self, job: list[Item]) -> list[Prepared]:
        with self._slots:
            outcome = self._run_in_worker(job)
        if isinstance(outcome, list):
            return outcome
        if len(job) == 1:
            raw, uid = job[0]
            log.warning("message %s quarantined: %s", uid if uid is not None else content_hash(raw)[:12], outcome)
            return [Prepared(sha256=content_hash(raw), size=len(raw), raw=raw, events=[], uid=uid,
                             forced_quarantine=outcome)]
        # The job as a whole ran over the budget (or its worker died): each message
        # again on its own, with the whole budget, so only the culprit is quarantined.
        return [prepared for item in job for prepared in self._run_job([item])]

    def _run_in_worker(self, job: list[Item]) -> list[Prepared] | str:
        worker = self._take()
        outcome = worker.run(job, self.settings.parse_timeout_s)
        if isinstance(outcome, list):
            for prepared, (raw, _) in zip(outcome, job, strict=True):
                prepared.raw = raw
            self._give_back(worker)
            return outcome
        worker.stop(kill=True)
        with self._lock:
            self._started -= 1
        return outcome

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("parse pool closed")
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.stop(kill=True)
                self._started -= 1
            self._started += 1
        return _Worker(self.dmarc)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if self._closed or len(self._idle) >= self.workers:
                keep = False
            else:
                self._idle.append(worker)
                keep = True
        if not keep:
            worker.stop()

    def start(self) -> None:
        """Start the workers now rather than on the first message."""
        with self._lock:
            while self._started < self.workers:
                self._idle.append(_Worker(self.dmarc))
                self._started += 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


def _jobs(items: Sequence[Item]) -> list[list[Item]]:
    """Consecutive runs of at most JOB_MESSAGES messages and JOB_BYTES bytes."""
    jobs: list[list[Item]] = []
    current: list[Item] = []
    size = 0
    for item in items:
        if current and (len(current) >= JOB_MESSAGES or size + len(item[0]) > JOB_BYTES):
            jobs.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item[0])
    if current:
        jobs.append(current)
    return jobs


# DmarcRecord crosses the process boundary by the hundred thousand: pickled as a tuple
# of its values (copyreg), a third cheaper than the dataclass's default reduction.
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(DmarcRecord))
_record_values = attrgetter(*_RECORD_FIELDS)
_RECORD_SETTERS = tuple(getattr(DmarcRecord, name).__set__ for name in _RECORD_FIELDS)


def _rebuild_record(values: tuple[Any, ...]) -> DmarcRecord:
    record = DmarcRecord.__new__(DmarcRecord)
    for setter, value in zip(_RECORD_SETTERS, values, strict=True):
        setter(record, value)
    return record


def _reduce_record(record: DmarcRecord) -> tuple[Any, ...]:
    return _rebuild_record, (_record_values(record),)


copyreg.pickle(DmarcRecord, _reduce_record)


_SHARED: dict[tuple[str, str], ParsePool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(settings: ParsingConfig | None = None, dmarc: DmarcConfig | None = None) -> ParsePool:
    """One pool per process and configuration, shared by every source."""
    settings = settings or ParsingConfig()
    dmarc = dmarc if dmarc is not None else DmarcConfig()
    key = (settings.model_dump_json(), dmarc.model_dump_json())
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None:
            pool = _SHARED[key] = ParsePool(settings, dmarc)
        return pool


@atexit.register
def _close_shared() -> None:
    for pool in list(_SHARED.values()):
        pool.close()



def worker_main(argv: list[str]) -> None:
    """A worker of a ParsePool (`python -m monitor.ingest.worker READ_FD WRITE_FD`)."""
    _serve(Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False))
