"""The incremental roll-up: new rows of the event tables -> health_counts.

Each source table is read by id, from where the last pass stopped
(`health_cursors`), in id ranges. The database groups each range by
5-minute bucket and the columns health needs, so a pass costs one indexed
range scan per source plus one upsert per touched counter row, however many
events share a bucket; the counters of a 7-day window are then a handful of
rows, never a rescan of the events. Counters and cursor move in one
transaction: a crash re-reads the range, it never counts it twice.

Sources:
- sender_delivery_log (the sender): delivered / deferred / bounced attempts
  per lane, and which destination each recipient domain goes to;
- events (ingestion and the sender's own 5xx bounces): hard / soft bounces,
  reputation blocks, host-unknown, complaints;
- dmarc_records (DMARC aggregate reports): messages, DMARC / DKIM / SPF pass;
- signal_events (blocklists, postmaster): nothing to count, but their
  subjects need a new assessment.

On PostgreSQL a transaction holding a lower id can commit after a higher id
was read; such ids are remembered as gaps and looked for again until
`GAP_TIMEOUT_S` (then they were rolled back). SQLite has one writer at a
time, so its ids arrive in order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from monitor.core.sql import Ids, bucket_epoch, bucket_time, id_filter, table_names
from monitor.health.counts import GRAIN_RETENTION_S, GRAIN_SECONDS
from monitor.health.models import COUNTERS, HealthCursor, HealthRoute
from monitor.health.subjects import DomainMapper, domain_of, is_ip, provider_guess
from monitor.mtalogs.reading import TABLE as MTA_LOG_TABLE
from monitor.mtalogs.reading import DeliveryCount, delivery_counts
from monitor.signals import reading as signals
from parsers.reports.aggregate import MAX_COUNT
from sender import stats as sender_stats
from sender.lanes import LaneKey

log = logging.getLogger("repmon.health")

SOURCES = ("delivery_log", "mta_log", "events", "dmarc_records", "signal_events")
# source -> the table its id cursor follows (the owners name theirs)
TABLES = {"delivery_log": sender_stats.DELIVERY_LOG_TABLE, "mta_log": MTA_LOG_TABLE, "events": "events",
          "dmarc_records": "dmarc_records", "signal_events": signals.SIGNAL_EVENTS_TABLE}
GAP_TIMEOUT_S = 600.0
# A DMARC record counts at most this many messages in a roll-up (the parser's limit).
DMARC_ROW_CAP = MAX_COUNT
MAX_GAPS = 10_000
# Bounce reasons that refuse the sender, not the recipient.
BLOCK_REASONS = frozenset({"blocked", "badreputation", "requireptr"})
_IDX = {name: i for i, name in enumerate(COUNTERS)}
_N = len(COUNTERS)


@dataclass
class RollupResult:
    rows: dict[str, int] = field(default_factory=dict)  # source rows read
    dirty_ips: set[str] = field(default_factory=set)
    dirty_lanes: set[tuple[str, str]] = field(default_factory=set)
    dirty_domains: set[str] = field(default_factory=set)
    dirty_rdomains: set[str] = field(default_factory=set)
    signals: int = 0  # new signal events (listings, postmaster changes)
    full: bool = False  # a change that concerns every subject (a zone broke, a feed came back)

    @property
    def anything(self) -> bool:
        return bool(self.dirty_ips or self.dirty_lanes or self.dirty_domains or self.dirty_rdomains or self.signals)

    def merge(self, other: RollupResult) -> None:
        for source, n in other.rows.items():
            self.rows[source] = self.rows.get(source, 0) + n
        self.dirty_ips |= other.dirty_ips
        self.dirty_lanes |= other.dirty_lanes
        self.dirty_domains |= other.dirty_domains
        self.dirty_rdomains |= other.dirty_rdomains
        self.signals += other.signals
        self.full = self.full or other.full


class _Accumulator:
    """Counter deltas of one pass, per (grain, bucket, scope, key, destination)."""

    def __init__(self, now: float, day_retention_s: float, result: RollupResult) -> None:
        self.rows: dict[tuple, list[int]] = {}
        self.now = now
        self.oldest = {grain: now - keep for grain, keep in GRAIN_RETENTION_S.items()}
        self.oldest["1d"] = now - day_retention_s
        self.result = result

    def add_one(self, grain: str, bucket: int, scope: str, key: str, destination: str, deltas: dict[str, int],
                times: int) -> None:
        """Add deltas x times to one counter row (bucket already of this grain)."""
        if bucket + GRAIN_SECONDS[grain] <= self.oldest[grain]:
            return  # older than this grain keeps: the coarser grain has it
        row = self.rows.get((grain, bucket, scope, key, destination))
        if row is None:
            row = self.rows[(grain, bucket, scope, key, destination)] = [0] * _N
        for name, n in deltas.items():
            if n:
                row[_IDX[name]] += n * times
        if scope == "ip":
            self.result.dirty_ips.add(key)
            if destination:
                self.result.dirty_lanes.add((key, destination))
        elif scope == "domain":
            self.result.dirty_domains.add(key)
        elif scope == "rdomain":
            self.result.dirty_rdomains.add(key)


class Rollup:
    def __init__(self, engine: Engine, *, mapper: DomainMapper, own_ips: set[str] | None = None,
                 dmarc_own_ips_only: bool = True, retention_days: int = 400, batch: int = 200_000) -> None:
        self.engine = engine
        self.mapper = mapper
        self.own_ips = own_ips or set()
        self.dmarc_own_ips_only = dmarc_own_ips_only
        self.day_retention_s = retention_days * 86400.0
        self.batch = batch
        self.dialect = engine.dialect.name
        self.routes: dict[str, str] | None = None  # recipient domain -> destination
        self._last_prune = 0.0
        self._max_seen: dict[str, int] = {}  # highest id read per source
        self._gaps: dict[str, bool] = {}  # sources with ids still looked for
        self._changed: set[str] | None = None  # what pending() found new; None: look at every source

    def pending(self) -> bool:
        """Whether any source has rows not read yet: one cheap query, so an
        idle loop costs almost nothing."""
        with self.engine.connect() as conn:
            sources = [s for s in SOURCES if self._table_exists(conn, s)]
            if not sources:
                return False
            row = conn.execute(text("SELECT " + ", ".join(
                f"(SELECT MAX(id) FROM {TABLES[s]})" for s in sources))).one()
        self._changed = {s for s, value in zip(sources, row, strict=True)
                         if self._gaps.get(s) or (value or 0) != self._max_seen.get(s)}
        return bool(self._changed)

    # -- one pass ---------------------------------------------------------------------

    def run(self, now: float, max_rows: int = 2_000_000) -> RollupResult:
        """Read what is new in every source (at most about max_rows per
        source, so one busy table cannot starve the loop)."""
        total = RollupResult()
        changed, self._changed = self._changed, None
        for source in SOURCES:
            if changed is not None and source not in changed:
                continue
            read = 0
            while read < max_rows:
                result, more = self._one_range(source, now)
                total.merge(result)
                read += result.rows.get(source, 0)
                if not more:
                    break
        if now - self._last_prune > 600:
            self.prune(now)
        return total

    def _one_range(self, source: str, now: float) -> tuple[RollupResult, bool]:
        result = RollupResult()
        with self.engine.begin() as conn:
            if not self._table_exists(conn, source):
                return result, False
            if self.routes is None:
                self.routes = {r[0]: r[1] for r in conn.execute(text(
                    "SELECT recipient_domain, destination FROM health_routes"))}
            last_id, gaps = self._cursor(conn, source)
            acc = _Accumulator(now, self.day_retention_s, result)
            found_gaps, gaps = self._recheck_gaps(conn, source, gaps, acc, now)
            max_id = conn.execute(text(f"SELECT MAX(id) FROM {TABLES[source]}")).scalar() or 0
            more = False
            if max_id > last_id:
                hi = min(last_id + self.batch, max_id)
                more = hi < max_id
                if self.dialect == "postgresql":
                    gaps += self._new_gaps(conn, source, last_id, hi, now)
                n = self._aggregate(conn, source, acc, (int(last_id), int(hi)))
                result.rows[source] = n + found_gaps
                last_id = hi
            elif found_gaps:
                result.rows[source] = found_gaps
            if not more:
                self._max_seen[source] = max(last_id, max_id)
                self._gaps[source] = bool(gaps)
            if not result.rows and not gaps:
                return result, False
            self._write(conn, acc)
            cursors = _cursor_table()
            conn.execute(update(cursors).where(cursors.c.source == source)
                         .values(last_id=last_id, gaps=gaps, updated_at=now))
        return result, more

    # -- cursors ----------------------------------------------------------------------

    _existing: set[str] | None = None

    def _table_exists(self, conn: Connection, source: str) -> bool:
        """Whether what `source` reads exists (the names are read once; the owner says)."""
        if self._existing is None:
            self._existing = table_names(conn)
        if source == "delivery_log":
            return sender_stats.has_delivery_log(self._existing)
        if source == "signal_events":
            return signals.has_signal_events(self._existing)
        return TABLES[source] in self._existing

    def _cursor(self, conn: Connection, source: str) -> tuple[int, list]:
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        row = conn.execute(text(f"SELECT last_id, gaps FROM health_cursors WHERE source = :s{lock}"),
                           {"s": source}).first()
        if row is None:
            insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
            conn.execute(insert(_cursor_table()).values(source=source, last_id=0, gaps=[], updated_at=0.0)
                         .on_conflict_do_nothing(index_elements=["source"]))
            row = conn.execute(text(f"SELECT last_id, gaps FROM health_cursors WHERE source = :s{lock}"),
                               {"s": source}).one()
        gaps = row[1]
        if isinstance(gaps, str):
            gaps = json.loads(gaps)
        return int(row[0]), [list(g) for g in (gaps or [])]

    def _new_gaps(self, conn: Connection, source: str, lo: int, hi: int, now: float) -> list:
        table = TABLES[source]
        count = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE id > :lo AND id <= :hi"),
                             {"lo": lo, "hi": hi}).scalar() or 0
        if count == hi - lo:
            return []
        present = {r[0] for r in conn.execute(text(f"SELECT id FROM {table} WHERE id > :lo AND id <= :hi"),
                                              {"lo": lo, "hi": hi})}
        missing = [i for i in range(lo + 1, hi + 1) if i not in present]
        return [[i, now] for i in missing[:MAX_GAPS]]

    def _recheck_gaps(self, conn: Connection, source: str, gaps: list, acc: _Accumulator,
                      now: float) -> tuple[int, list]:
        if not gaps:
            return 0, gaps
        ids = [int(g[0]) for g in gaps]
        table = TABLES[source]
        present = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            in_list = ",".join(map(str, chunk))
            present |= {r[0] for r in conn.execute(text(f"SELECT id FROM {table} WHERE id IN ({in_list})"))}
        found = 0
        if present:
            found = self._aggregate(conn, source, acc, sorted(present))
        kept = [g for g in gaps if g[0] not in present and now - g[1] < GAP_TIMEOUT_S]
        return found, kept

    # -- reading the sources ------------------------------------------------------------
    #
    # Each source is grouped by the database once per grain (5-minute, hour,
    # day buckets) and per scope, so Python sees one row per counter row to
    # add, not one per event: a day of a lane's deliveries is one row. Rows
    # older than a grain keeps are left out of that grain's query.

    def _bucket_epoch(self, column: str, seconds: int) -> str:
        return bucket_epoch(self.dialect, column, seconds)

    def _bucket_time(self, column: str, seconds: int) -> str:
        return bucket_time(self.dialect, column, seconds)

    def _after(self, column: str, epoch: float, is_time: bool) -> tuple[str, dict]:
        if not is_time:
            return f"{column} >= :after", {"after": epoch}
        return f"{column} >= :after", {"after": datetime.fromtimestamp(max(epoch, 0), UTC).replace(
            tzinfo=None if self.dialect == "sqlite" else UTC)}

    def _aggregate(self, conn: Connection, source: str, acc: _Accumulator, ids: tuple[int, int] | list[int]) -> int:
        """Count the rows of an id range (lo, hi] or of a list of ids."""
        return {"delivery_log": self._delivery_log, "mta_log": self._mta_log, "events": self._events,
                "dmarc_records": self._dmarc, "signal_events": self._signals}[source](conn, acc, ids)

    def _mta_log(self, conn: Connection, acc: _Accumulator, ids: tuple[int, int] | list[int]) -> int:
        """Outcomes read from the logs of an MTA repmon does not run (monitor/mtalogs/):
        the same counters as the sender's own attempts."""
        def counts(**kwargs: Any) -> list[DeliveryCount]:
            if isinstance(ids, list):
                return delivery_counts(conn, 0, ids=ids, **kwargs)
            return delivery_counts(conn, ids[0], ids[1], **kwargs)

        for grain, seconds in GRAIN_SECONDS.items():
            for row in counts(grain_s=seconds, not_before=acc.oldest[grain] - seconds):
                deltas = _DELIVERY_DELTAS.get(row.outcome)
                if deltas is None:
                    continue
                if row.ip:
                    acc.add_one(grain, row.bucket, "ip", row.ip, row.provider, deltas, row.count)
                domain = self.mapper(row.domain)
                if domain:
                    acc.add_one(grain, row.bucket, "domain", domain, row.provider, deltas, row.count)
        total = 0
        new_routes: dict[str, tuple[str, int]] = {}
        for row in counts(grain_s=86400, by_recipient_domain=True):
            total += row.count
            deltas = _DELIVERY_DELTAS.get(row.outcome)
            rdomain = (row.recipient_domain or "").lower()
            if deltas is None or not rdomain:
                continue
            if row.bucket + 86400 > acc.oldest["1d"]:
                acc.add_one("1d", row.bucket, "rdomain", rdomain, "", deltas, row.count)
            previous = new_routes.get(rdomain)
            if previous is None or row.bucket >= previous[1]:
                new_routes[rdomain] = (row.provider, row.bucket)
        self._save_routes(conn, new_routes)
        return total

    def _delivery_log(self, conn: Connection, acc: _Accumulator, ids: Ids) -> int:
        """The sender's attempts (read through sender/stats.py, grouped by the database)."""
        for grain, seconds in GRAIN_SECONDS.items():
            not_before = acc.oldest[grain] - seconds
            for b, lane, outcome, n in sender_stats.lane_outcomes(conn, ids, grain_s=seconds, not_before=not_before):
                ip, destination = LaneKey.parse(lane or "")
                deltas = _DELIVERY_DELTAS.get(outcome)
                if deltas is not None and ip and destination:
                    acc.add_one(grain, b, "ip", ip, destination, deltas, n)
            for b, dest, outcome, mail_from, n in sender_stats.sender_outcomes(conn, ids, grain_s=seconds,
                                                                                not_before=not_before):
                deltas = _DELIVERY_DELTAS.get(outcome)
                domain = self.mapper(domain_of(mail_from))
                if deltas is not None and dest and domain:
                    acc.add_one(grain, b, "domain", domain, dest, deltas, n)
        # recipient domains: day counters, and where their mail goes (the route health gives events)
        total = 0
        new_routes: dict[str, tuple[str, int]] = {}
        for b, dest, outcome, rdomain, n in sender_stats.recipient_domain_outcomes(conn, ids):
            total += n
            deltas = _DELIVERY_DELTAS.get(outcome)
            if deltas is None or not rdomain or not dest:
                continue
            rdomain = rdomain.lower()
            if b + 86400 > acc.oldest["1d"]:
                acc.add_one("1d", b, "rdomain", rdomain, "", deltas, n)
            previous = new_routes.get(rdomain)
            if previous is None or b >= previous[1]:
                new_routes[rdomain] = (dest, b)
        self._save_routes(conn, new_routes)
        return total

    def _events(self, conn: Connection, acc: _Accumulator, ids) -> int:
        where = (f"{_where('id', ids)} AND (kind = 'bounce' OR is_complaint = :yes) "
                 f"AND COALESCE(action, 'failed') NOT IN ('delayed', 'delivered', 'relayed', 'expanded')")
        blocks = ", ".join(f"'{r}'" for r in sorted(BLOCK_REASONS))
        what = (f"kind, hard_or_soft, CASE WHEN reason IN ({blocks}) THEN 'block' WHEN reason = 'hostunknown' "
                f"THEN 'hostunknown' ELSE '' END, is_complaint")
        routes = self.routes or {}
        total = 0
        for grain, seconds in GRAIN_SECONDS.items():
            after, params = self._after("occurred_at", acc.oldest[grain] - seconds, is_time=True)
            bucket = self._bucket_time("occurred_at", seconds)
            rows = conn.execute(text(
                f"SELECT {bucket}, sending_ip, sending_domain, recipient_domain, "
                f"CASE WHEN smtp_agent = 'repmon-sender' OR smtp_agent LIKE 'mtalog:%' THEN remote_mta END, "
                f"{what}, COUNT(*) FROM events "
                f"WHERE {where} AND {after} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"), {"yes": True, **params})
            for b, ip, sdomain, rdomain, dest, kind, hard_or_soft, klass, _complaint, n in rows:
                if grain == "1d":
                    total += n
                if kind == "bounce":
                    deltas = {"hard_bounces" if hard_or_soft == "hard" else "soft_bounces": 1}
                    if klass == "block":
                        deltas["blocks"] = 1
                    elif klass == "hostunknown":
                        deltas["hostunknown"] = 1
                else:
                    deltas = {"complaints": 1}
                rdomain = rdomain.lower() if rdomain else None
                destination = dest or (routes.get(rdomain) if rdomain else None) or provider_guess(rdomain)
                if ip:
                    acc.add_one(grain, int(b), "ip", ip, destination, deltas, n)
                domain = self.mapper(sdomain)
                if domain:
                    acc.add_one(grain, int(b), "domain", domain, destination, deltas, n)
                if rdomain and grain == "1d":
                    acc.add_one("1d", int(b), "rdomain", rdomain, "", deltas, n)
        return total

    def _dmarc(self, conn: Connection, acc: _Accumulator, ids) -> int:
        where = _where("id", ids)
        # Each row is capped at DMARC_ROW_CAP (the parser's own limit) before summing: rows
        # stored before that limit, or written by hand, must not overflow SUM() (SQLite
        # raises "integer overflow", PostgreSQL "bigint out of range") and stop health.
        capped = (f"CASE WHEN count > {DMARC_ROW_CAP} THEN {DMARC_ROW_CAP} WHEN count < 0 THEN 0 "
                  "ELSE count END")
        rows = conn.execute(text(
            f"SELECT {self._bucket_time('begin', 86400)} AS b, domain, header_from, source_ip, dkim, spf, "
            f"SUM({capped}), COUNT(*) FROM dmarc_records WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6"))
        total = 0
        for bucket, domain, header_from, source_ip, dkim, spf, messages, n in rows:
            total += n
            if bucket + 86400 <= acc.oldest["1d"]:
                continue
            own = source_ip in self.own_ips
            dkim_ok, spf_ok = (dkim or "").lower() == "pass", (spf or "").lower() == "pass"
            deltas = {"dmarc_messages": 1, "dmarc_pass": 1 if (dkim_ok or spf_ok) else 0,
                      "dkim_pass": 1 if dkim_ok else 0, "spf_pass": 1 if spf_ok else 0}
            messages = int(messages or 0)
            # Reports are per day: only the day grain has a meaningful bucket.
            if own:
                acc.add_one("1d", int(bucket), "ip", source_ip, "", deltas, messages)
            if own or not (self.dmarc_own_ips_only and self.own_ips):
                mapped = self.mapper(header_from or domain)
                if mapped:
                    acc.add_one("1d", int(bucket), "domain", mapped, "", deltas, messages)
        return total

    def _signals(self, conn: Connection, acc: _Accumulator, ids) -> int:
        rows = signals.signal_subjects(conn, ids)
        for source, subject in rows:
            subject = (subject or "").strip()
            if source in ("dnsbl", "dns_auth") and subject:
                if is_ip(subject):
                    acc.result.dirty_ips.add(subject)
                else:
                    acc.result.dirty_domains.add(self.mapper(subject) or subject.lower())
            else:
                # a zone that broke or recovered, a postmaster feed: every subject may change
                acc.result.full = True
        acc.result.signals += len(rows)
        return len(rows)

    # -- writing --------------------------------------------------------------------------

    def _save_routes(self, conn: Connection, new_routes: dict[str, tuple[str, int]]) -> None:
        assert self.routes is not None
        changed = {d: dest for d, (dest, _b) in new_routes.items() if self.routes.get(d) != dest}
        if not changed:
            return
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        now = time.time()
        rows = [{"recipient_domain": d[:255], "destination": dest[:255], "seen_at": now} for d, dest in changed.items()]
        table: Table = HealthRoute.__table__  # type: ignore[attr-defined]
        for start in range(0, len(rows), 1000):
            stmt = insert(table).values(rows[start:start + 1000])
            stmt = stmt.on_conflict_do_update(index_elements=["recipient_domain"],
                                              set_={"destination": stmt.excluded.destination,
                                                    "seen_at": stmt.excluded.seen_at})
            conn.execute(stmt)
        self.routes.update(changed)

    def _write(self, conn: Connection, acc: _Accumulator) -> None:
        """One upsert per counter row, sent as a plain DB-API executemany (the
        rows are tuples already; going through the ORM layer tripled the cost)."""
        if not acc.rows:
            return
        mark = "?" if self.dialect == "sqlite" else "%s"
        columns = ("grain", "bucket", "scope", "key", "destination", *COUNTERS)
        sql = (f"INSERT INTO health_counts ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))}) "
               f"ON CONFLICT (grain, bucket, scope, key, destination) DO UPDATE SET "
               + ", ".join(f"{c} = health_counts.{c} + excluded.{c}" for c in COUNTERS))
        rows = [(k[0], k[1], k[2], k[3][:255], k[4][:255], *v) for k, v in acc.rows.items()]
        for start in range(0, len(rows), 5000):
            conn.exec_driver_sql(sql, rows[start:start + 5000])

    def prune(self, now: float) -> int:
        """Drop buckets older than their grain keeps."""
        self._last_prune = now
        removed = 0
        with self.engine.begin() as conn:
            for grain, keep in (*GRAIN_RETENTION_S.items(), ("1d", self.day_retention_s)):
                removed += conn.execute(text("DELETE FROM health_counts WHERE grain = :g AND bucket < :b"),
                                        {"g": grain, "b": int(now - keep - GRAIN_SECONDS[grain])}).rowcount or 0
        return removed


# outcome of the delivery log -> counters
_DELIVERY_DELTAS: dict[str, dict[str, int]] = {
    "delivered": {"attempts": 1, "delivered": 1, "sent": 1},
    "deferred": {"attempts": 1, "deferred": 1},
    "bounced": {"attempts": 1, "sent": 1},
    # expired / suppressed: no SMTP verdict; the expiry's bounce event counts as a soft bounce
}




def _cursor_table() -> Table:
    return HealthCursor.__table__  # type: ignore[attr-defined]


def _where(column: str, ids: Ids) -> str:
    return id_filter(column, ids)
