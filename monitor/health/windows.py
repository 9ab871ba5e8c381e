"""Reading window totals from the roll-up buckets."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import text
from sqlalchemy.engine import Connection

from monitor.health.counts import WINDOW_GRAINS, WINDOWS, Counts, window_start
from monitor.health.models import COUNTERS

# (scope, key) -> destination -> Counts
Totals = dict[tuple[str, str], dict[str, Counts]]

_SUMS = ", ".join(f"SUM({c})" for c in COUNTERS)


def read_windows(conn: Connection, now: float, *, scopes: tuple[str, ...] = ("ip", "domain"),
                 keys: dict[str, set[str]] | None = None, windows: tuple[str, ...] = WINDOWS) -> dict[str, Totals]:
    """window -> (scope, key) -> destination -> counters.

    keys: only these keys per scope (an incremental re-assessment); None: all.
    """
    out: dict[str, Totals] = {}
    for window in windows:
        grain, _seconds, _n = WINDOW_GRAINS[window]
        totals: Totals = defaultdict(dict)
        params = {"g": grain, "start": window_start(window, now), "end": int(now)}
        for scope in scopes:
            if keys is not None:
                wanted = sorted(keys.get(scope, ()))
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start:start + 500]
                    names = {f"k{i}": k for i, k in enumerate(chunk)}
                    sql = (f"SELECT scope, key, destination, {_SUMS} FROM health_counts WHERE grain = :g "
                           f"AND bucket >= :start AND bucket <= :end AND scope = :scope AND key IN "
                           f"({', '.join(':' + n for n in names)}) GROUP BY scope, key, destination")
                    _collect(conn.execute(text(sql), {**params, "scope": scope, **names}), totals)
            else:
                sql = (f"SELECT scope, key, destination, {_SUMS} FROM health_counts WHERE grain = :g "
                       f"AND bucket >= :start AND bucket <= :end AND scope = :scope GROUP BY scope, key, destination")
                _collect(conn.execute(text(sql), {**params, "scope": scope}), totals)
        out[window] = totals
    return out


def _collect(rows, totals: Totals) -> None:
    for scope, key, destination, *values in rows:
        totals[(scope, key)][destination] = Counts.of(values)


def total_of(by_destination: dict[str, Counts]) -> Counts:
    total = Counts()
    for counts in by_destination.values():
        total.add(counts)
    return total
