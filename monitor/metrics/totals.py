"""Running totals of append-only tables, kept cheap at scrape time.

A counter such as "DMARC messages by domain and result" is a GROUP BY over a
table that grows by millions of rows; running it on every scrape would read
the whole table each time. Instead the totals are kept in memory: one full
pass when the process starts, then each refresh only reads the rows whose
primary key is above what has been counted (an index range scan).

Ids are allocated when a row is inserted but become visible when its
transaction commits, so on PostgreSQL a row with a lower id can appear after
a higher one. Rows are therefore only folded into the settled totals once
their id was seen at least `settle_s` seconds ago; newer rows (the "tail")
are counted again at every refresh. SQLite serialises writers (BEGIN
IMMEDIATE), so there `settle_s` is 0. At start-up the last `margin` ids are
left in the tail for the same reason.

Totals never go down when old rows are deleted (retention): they count what
was ever stored, which is what a Prometheus counter means.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.engine import Connection

from monitor.storage.reading import Key, Scan


class Counted(Protocol):
    """An append-only table read by id range (monitor.storage.reading.Tally)."""

    def top_id(self, conn: Connection) -> int: ...

    @property
    def scan(self) -> Scan: ...


def mapped(scan: Scan, relabel: Callable[[Key], Key]) -> Scan:
    """A scan whose keys are turned into label tuples before they are kept, so
    the running totals hold one entry per series, not per raw value."""
    def run(conn: Connection, above: int, up_to: int | None) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for key, amount in scan(conn, above, up_to).items():
            new = relabel(key)
            out[new] = out.get(new, 0.0) + amount
        return out
    return run


def _add(into: dict[Key, float], more: dict[Key, float]) -> None:
    for key, amount in more.items():
        into[key] = into.get(key, 0.0) + amount


class RunningTotals:
    def __init__(self, source: Counted, scan: Scan | None = None, *, settle_s: float = 0.0, margin: int = 0) -> None:
        self.source = source
        self.scan: Scan = scan if scan is not None else source.scan
        self.settle_s = settle_s
        self.margin = margin
        self._base: dict[Key, float] = {}
        self._base_id: int | None = None
        self._seen: deque[tuple[float, int]] = deque()  # (when, highest id) observations

    def _top_id(self, conn: Connection) -> int:
        return self.source.top_id(conn)

    def refresh(self, conn: Connection, now: float) -> dict[Key, float]:
        """Current totals. A failing query leaves the kept state as it was."""
        top = self._top_id(conn)
        base, base_id = self._base, self._base_id
        if base_id is None or top < base_id:  # first refresh, or the table was emptied / replaced
            base_id = max(0, top - self.margin)
            base = self.scan(conn, 0, base_id) if base_id else {}
            self._seen.clear()
        else:
            base = dict(base)
        seen = deque(self._seen)
        seen.append((now, top))
        settled = base_id
        while seen and now - seen[0][0] >= self.settle_s:
            settled = max(settled, seen.popleft()[1])
        if settled > base_id:
            _add(base, self.scan(conn, base_id, settled))
            base_id = settled
        tail = self.scan(conn, base_id, None) if top > base_id else {}
        self._base, self._base_id, self._seen = base, base_id, seen
        result = dict(base)
        _add(result, tail)
        return result
