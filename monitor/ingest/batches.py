"""One pass over a backlog, batch by batch: the loop the IMAP watcher and the
local folder reader share.

Each batch is committed on its own (commit.py), so a large backlog makes
progress that survives a crash. A backlog of at least PROGRESS_THRESHOLD items
gets a progress bar on stderr when one is wanted, and a pass that saw any
message ends with one summary log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

from monitor.core.runtime import Runtime
from monitor.ingest.commit import CommitResult

T = TypeVar("T")

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
    finally:
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
