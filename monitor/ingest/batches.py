"""One pass over a backlog, batch by batch: the loop the IMAP watcher and the
local folder reader share.

Each batch is committed on its own (commit.py), so a large backlog makes
progress that survives a crash. A backlog of at least PROGRESS_THRESHOLD items
gets a progress bar on stderr when one is wanted, and a pass that saw any
message ends with one summary log line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from monitor.core.runtime import Runtime
from monitor.ingest.commit import CommitResult

T = TypeVar("T")
P = TypeVar("P")
C = TypeVar("C")

# Batches read and handed to the parse pool ahead of the one being committed:
# with two, the pool parses batch i+1 while i is committed and i+2 is read.
AHEAD = 2

# A backlog at least this large gets a progress bar (when one is wanted).
PROGRESS_THRESHOLD = 1000


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def ingest_in_batches(
    items: list[T],
    batch_size: int,
    ingest_batch: Callable[[list[T]], Awaitable[CommitResult]],
    *,
    runtime: Runtime,
    logs_as_json: bool,
    name: str,
    unit: str,
    log: logging.Logger,
    log_extra: dict[str, Any],
) -> CommitResult:
    """Hand `items` to `ingest_batch` batch_size at a time; the summed result."""
    total = CommitResult()
    bar = _progress_bar(runtime, logs_as_json, len(items), name, unit)
    try:
        for batch in chunks(items, batch_size):
            total.add(await ingest_batch(batch))
            if bar is not None:
                bar.update(len(batch))
                bar.refresh()  # every batch shown, however fast (tqdm skips updates < 0.1 s apart)
    finally:
        if bar is not None:
            bar.close()
    if total.messages:
        log.info("%s: %d new, %d quarantined, %d already stored; %d events, %d suppressions", name,
                 total.stored, total.quarantined, total.duplicates, total.events, total.suppressions,
                 extra=log_extra)
    return total


class Stages(Generic[T, P, C]):
    """A batch in three steps, for `ingest_pipelined`: `start` (read the batch,
    hand it to the parse pool, return without waiting for the parse), `commit`
    (wait for the parse, store it in one transaction) and `settle` (what must
    follow the commit: IMAP moves; it may raise for a batch not fully stored).
    `abandon` drops a started batch that will not be committed."""

    def __init__(self, start: Callable[[list[T]], Awaitable[P]], commit: Callable[[P], Awaitable[C]],
                 settle: Callable[[C], Awaitable[CommitResult]], abandon: Callable[[P], None]) -> None:
        self.start = start
        self.commit = commit
        self.settle = settle
        self.abandon = abandon


async def ingest_pipelined(
    items: list[T],
    batch_size: int,
    stages: Stages[T, P, C],
    *,
    runtime: Runtime,
    logs_as_json: bool,
    name: str,
    unit: str,
    log: logging.Logger,
    log_extra: dict[str, Any],
) -> CommitResult:
    """Like ingest_in_batches, overlapped: batches i+1 and i+2 are read (and
    parsed, in the pool) while batch i is committed, and batch i is settled
    (moved) after that. Batches are still committed one at a time and in order, and a batch
    is moved only after its commit, so the exactly-once argument
    (monitor/ingest/__init__.py) holds: a batch read but not committed is
    simply read again next pass; one committed but not moved left its pending
    moves in the same transaction."""

    total = CommitResult()
    bar = _progress_bar(runtime, logs_as_json, len(items), name, unit)
    batches = iter(chunks(items, batch_size))
    ahead: deque[P] = deque()  # started (read, parsing), not committed yet

    async def fill() -> None:
        while len(ahead) < AHEAD:
            following = next(batches, None)
            if following is None:
                return
            ahead.append(await stages.start(following))

    try:
        await fill()
        while ahead:
            current = ahead.popleft()
            committing = asyncio.ensure_future(stages.commit(current))
            try:
                await fill()  # the next batches are read while this one is committed
            finally:
                if not committing.done():
                    await asyncio.wait([committing])
            committed = committing.result()  # raises what the commit raised
            result = await stages.settle(committed)
            total.add(result)
            if bar is not None:
                bar.update(result.messages)
                bar.refresh()
    finally:
        for left in ahead:
            stages.abandon(left)
        if bar is not None:
            bar.close()
    if total.messages:
        log.info("%s: %d new, %d quarantined, %d already stored; %d events, %d suppressions", name,
                 total.stored, total.quarantined, total.duplicates, total.events, total.suppressions,
                 extra=log_extra)
    return total


def _progress_bar(runtime: Runtime, logs_as_json: bool, count: int, name: str, unit: str):
    # Asked for (`--progress`), or a terminal whose stderr is not a JSON log stream.
    show = runtime.progress or (sys.stderr.isatty() and not logs_as_json)
    if count < PROGRESS_THRESHOLD or not show:
        return None
    return tqdm(total=count, desc=name, unit=unit, file=sys.stderr, leave=False)
