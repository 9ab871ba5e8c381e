"""Readers of the delivery logs of the MTAs teams already run, beside repmon's own
sender: Postfix (syslog lines and journald JSON), PowerMTA accounting CSV and
KumoMTA JSON log records. Pure: text in, typed records out (events.py), no
files, no database. A reader never raises on bad input: what it cannot read
becomes a `BadRecord` with the reason.

`reader_for(kind)` gives the per-line function of a log kind, holding the
little state a format needs (Postfix: queue id -> sender; PowerMTA: the header).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from parsers.mtalogs import kumomta
from parsers.mtalogs.events import BadRecord, DeliveryRecord, FeedbackRecord, MtaRecord
from parsers.mtalogs.pmta import PmtaReader
from parsers.mtalogs.postfix import PostfixReader

__all__ = ["KINDS", "BadRecord", "DeliveryRecord", "FeedbackRecord", "MtaRecord", "LineReader", "reader_for"]

KINDS = ("postfix", "postfix-journal", "pmta", "kumomta")
LineReader = Callable[[str], list[MtaRecord]]


def reader_for(kind: str, *, now: datetime | None = None, tz: tzinfo = UTC) -> LineReader:
    """line -> records, for one source of this kind (keep one per source: it has state)."""
    if kind in ("postfix", "postfix-journal"):
        postfix = PostfixReader(now=now, tz=tz)
        feed = postfix.feed if kind == "postfix" else postfix.feed_journal

        def read_postfix(line: str) -> list[MtaRecord]:
            record = feed(line)
            return [] if record is None else [record]

        return read_postfix
    if kind == "pmta":
        pmta = PmtaReader(tz=tz)

        def read_pmta(line: str) -> list[MtaRecord]:
            record = pmta.feed(line)
            return [] if record is None else [record]

        return read_pmta
    if kind == "kumomta":
        def read_kumo(line: str) -> list[MtaRecord]:
            return kumomta.parse_line(line) if line.strip() else []

        return read_kumo
    raise ValueError(f"unknown delivery log kind {kind!r} (one of {', '.join(KINDS)})")
