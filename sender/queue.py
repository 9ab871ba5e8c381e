"""The durable queue: SQL over SQLite or PostgreSQL, always in batches.

Delivery is at-least-once. A message is claimed (state inflight, with a
lease naming its owner) before its transaction starts and marked delivered
only after the server's 250 to the end of data; a sender that dies leaves
inflight rows behind, and they go back to the queue when their owner is
known dead (same host, process gone) or their lease has run out. So a crash
can only repeat messages that were in flight, never lose one.

Every function here does one batch in the caller's transaction: one claim
for up to `limit` messages, one flush for hundreds of outcomes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from parsers import tracking
from parsers.events import Tracking
from sender.models import BOUNCED, DELIVERED, EXPIRED, INFLIGHT, QUEUED, SUPPRESSED

LEASE_SECONDS = 900.0  # longer than any SMTP transaction may take


def _raw(conn: Connection, sql: str) -> tuple[object, str]:
    """The DBAPI cursor of the connection's transaction and the statement in
    its parameter style. The hot statements (claim, outcomes, enqueue) go
    straight to the driver: SQLAlchemy's per-row parameter processing cost
    more than SQLite itself at thousands of rows a second."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    return cursor, sql


# Per-connection SQLite settings for the queue's bulk transactions, measured
# with strace on the benchmark (20,000 messages):
# - secure_delete=FAST: Debian builds SQLite with secure_delete on, so every
#   delivered message's content page was zeroed on delete and written again
#   (to the WAL, then by the checkpoint). FAST still zeroes deleted cells in
#   pages that are written anyway, and skips the extra I/O for whole freed
#   pages: a third fewer page writes.
# - cache_size 32 MB: an injection chunk (2,000 messages, ~5 MB) no longer
#   spills the default 2 MB cache mid-transaction: half the page reads.
_SQLITE_TUNING = ("PRAGMA secure_delete=FAST", "PRAGMA cache_size=-32768")


def tune_connection(conn: Connection) -> None:
    """Apply the queue's SQLite settings to this (pooled) connection; cheap
    enough to repeat at the start of every bulk transaction. (One statement
    at a time: executescript would COMMIT the caller's transaction first.)"""
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for pragma in _SQLITE_TUNING:
            cursor.execute(pragma)


def executemany(conn: Connection, sql: str, rows: Sequence[tuple]) -> None:
    if rows:
        cursor, sql = _raw(conn, sql)
        cursor.executemany(sql, rows)  # type: ignore[attr-defined]

_COLUMNS = ("id, campaign, pool, recipient, domain, mail_from, message_id, body_hash, "
            "eight_bit, attempts, created_at, source_ip")


def owner_id() -> str:
    """host:pid:start — enough to tell, on this host, whether the owner lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def owner_alive(owner: str, host: str | None = None) -> bool | None:
    """True/False for an owner on this host, None when it is elsewhere."""
    name, _, rest = owner.partition(":")
    if name != (host or socket.gethostname()):
        return None
    pid_text = rest.partition(":")[0]
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _same_process(pid, rest)


def _same_process(pid: int, rest: str) -> bool:
    """A recycled pid is another process: compare its start time with the owner's."""
    started = rest.partition(":")[2]
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
        proc_start = btime + ticks / os.sysconf("SC_CLK_TCK")
        return proc_start <= int(started) + 2  # started after the owner was named: a new process
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # cannot tell: assume alive, the lease expiry still applies


@dataclass(slots=True)
class QueuedMessage:
    id: int
    campaign: str
    pool: str
    recipient: str
    domain: str
    mail_from: str
    message_id: str
    headers: bytes
    body: bytes
    body_hash: str | None
    eight_bit: bool
    attempts: int
    created_at: float
    source_ip: str | None
    lane: str = ""
    prepared: tuple[str, str, bytes] | None = None  # (lane, VERP sender, signed content), built off the event loop


@dataclass(slots=True)
class NewMessage:
    campaign: str
    pool: str
    recipient: str
    mail_from: str
    message_id: str
    headers: bytes
    body: bytes
    body_hash: str | None
    eight_bit: bool
    state: str = QUEUED


def _allocate_ids(conn: Connection, count: int) -> list[int]:
    """Ids for new messages, so the content rows can be written with them in
    one executemany. SQLite: the transaction holds the write lock (BEGIN
    IMMEDIATE), so MAX(id)+1... is ours; PostgreSQL: the id sequence."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text("SELECT nextval(pg_get_serial_sequence('sender_message', 'id')) "
                                 "FROM generate_series(1, :n)"), {"n": count})
        return [int(r[0]) for r in rows]
    start = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM sender_message")).scalar() or 0
    return list(range(start + 1, start + 1 + count))


def enqueue(conn: Connection, messages: Sequence[NewMessage], now: float | None = None) -> int:
    """Insert messages (queued, unrouted, due now); returns how many."""
    if not messages:
        return 0
    now = time.time() if now is None else now
    tune_connection(conn)
    ids = _allocate_ids(conn, len(messages))
    rows = [(
        i, m.campaign, m.pool, m.recipient, m.recipient.rpartition("@")[2].lower(), m.mail_from, m.message_id,
        m.body_hash, m.eight_bit, m.state, now, now, now, "suppressed" if m.state == SUPPRESSED else None,
    ) for i, m in zip(ids, messages, strict=True)]
    executemany(conn,
        "INSERT INTO sender_message (id, campaign, pool, recipient, domain, mail_from, message_id, "
        "body_hash, eight_bit, state, lane, attempts, created_at, next_attempt_at, updated_at, reason) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0, ?, ?, ?, ?)", rows)
    executemany(conn, "INSERT INTO sender_message_content (message_ref, headers, body) VALUES (?, ?, ?)",
                [(i, m.headers, m.body) for i, m in zip(ids, messages, strict=True) if m.state == QUEUED])
    return len(rows)


def claim(conn: Connection, lane: str, limit: int, owner: str, now: float) -> list[QueuedMessage]:
    """Lease up to `limit` due messages of one lane, oldest first."""
    lock = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
    tune_connection(conn)
    cursor, sql = _raw(conn,
        f"UPDATE sender_message SET state = 'inflight', lease_owner = ?, lease_until = ?, updated_at = ? "
        f"WHERE id IN (SELECT id FROM sender_message WHERE state = 'queued' AND lane = ? "
        f"AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?{lock}) RETURNING {_COLUMNS}")
    cursor.execute(sql, (owner, now + LEASE_SECONDS, now, lane, now, limit))  # type: ignore[attr-defined]
    rows = cursor.fetchall()  # type: ignore[attr-defined]
    if not rows:
        return []
    cursor, sql = _raw(conn, f"SELECT message_ref, headers, body FROM sender_message_content WHERE message_ref IN "
                             f"({_marks(rows)})")
    cursor.execute(sql, [r[0] for r in rows])  # type: ignore[attr-defined]
    content = {r[0]: (bytes(r[1]), bytes(r[2])) for r in cursor.fetchall()}  # type: ignore[attr-defined]
    out = []
    for r in rows:
        headers, body = content.get(r[0], (b"", b""))
        out.append(QueuedMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], headers, body, r[7], bool(r[8]),
                                 r[9], r[10], r[11], lane))
    out.sort(key=lambda m: m.id)
    return out


def due_lanes(conn: Connection, now: float, limit: int = 100_000) -> list[str]:
    """Lanes that have a due message. A loose index scan (one probe per lane
    of the claim index) instead of a GROUP BY over every queued row, so a
    million waiting messages cost as little as a thousand."""
    lanes: list[str] = []
    last: str | None = None
    while len(lanes) < limit:
        if last is None:
            row = conn.execute(text("SELECT MIN(lane) FROM sender_message WHERE state = 'queued'")).first()
        else:
            row = conn.execute(text("SELECT MIN(lane) FROM sender_message WHERE state = 'queued' AND lane > :last"),
                               {"last": last}).first()
        if row is None or row[0] is None:
            break
        last = row[0]
        due = conn.execute(text("SELECT 1 FROM sender_message WHERE state = 'queued' AND lane = :lane "
                                "AND next_attempt_at <= :now LIMIT 1"), {"lane": last, "now": now}).first()
        if due is not None:
            lanes.append(last)
    return lanes


def reclaim_dead(conn: Connection, now: float, host: str | None = None) -> int:
    """Inflight messages whose owner died (or whose lease ran out) go back to the queue."""
    owners = [r[0] for r in conn.execute(text(
        "SELECT DISTINCT lease_owner FROM sender_message WHERE state = 'inflight'"))]
    dead = [o for o in owners if o is None or owner_alive(o, host) is False]
    count = 0
    for owner in dead:
        if owner is None:
            result = conn.execute(text("UPDATE sender_message SET state = 'queued', updated_at = :now "
                                       "WHERE state = 'inflight' AND lease_owner IS NULL"), {"now": now})
        else:
            result = conn.execute(text("UPDATE sender_message SET state = 'queued', lease_owner = NULL, "
                                       "lease_until = NULL, updated_at = :now WHERE state = 'inflight' "
                                       "AND lease_owner = :owner"), {"now": now, "owner": owner})
        count += result.rowcount or 0
    result = conn.execute(text("UPDATE sender_message SET state = 'queued', lease_owner = NULL, lease_until = NULL, "
                               "updated_at = :now WHERE state = 'inflight' AND lease_until < :now"), {"now": now})
    return count + (result.rowcount or 0)


# --- outcomes ------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    """What happened to one claimed message; written by `record_outcomes`."""

    message: QueuedMessage
    outcome: str  # delivered | deferred | bounced | expired | suppressed | released | postponed
    at: float
    reply_code: int | None = None
    status: str | None = None
    reply: str | None = None
    reason: str | None = None
    retry_at: float | None = None  # deferred: when to try again


def record_outcomes(conn: Connection, outcomes: Sequence[Outcome], owner: str) -> None:
    """Write a batch of outcomes: message states, the delivery log, lane counters.

    Every state change names the lease owner, so an outcome can never overwrite
    a message that was reclaimed and leased by another sender meanwhile (the
    log and the lane counters still record it: that delivery did happen). The
    lane and source IP are written too: messages routed in memory after a
    claim learn their lane here."""
    tune_connection(conn)
    final: list[tuple] = []
    delivered: dict[tuple[str, str | None], list[int]] = {}  # (lane, source IP) -> ids
    done_ids: list[int] = []
    deferred: list[tuple] = []
    released: list[tuple] = []
    postponed: list[tuple] = []
    log: list[tuple] = []
    lanes: dict[str, list[int]] = {}
    last_reply: dict[str, str] = {}
    for o in outcomes:
        m = o.message
        kind = o.outcome
        if kind == "released":
            released.append((m.lane, m.source_ip, o.at, m.id, owner))
            continue
        if kind == "postponed":  # not an attempt (e.g. warm-up caps): no count, no log row
            postponed.append((m.lane, m.source_ip, o.retry_at or o.at, o.reply, o.reason, o.at, m.id, owner))
            continue
        attempt = m.attempts + (0 if kind == "suppressed" else 1)
        if kind == "deferred":
            deferred.append((m.lane, m.source_ip, o.retry_at or o.at, o.reply, o.reason, o.at, m.id, owner))
        elif kind == "delivered":
            delivered.setdefault((m.lane, m.source_ip), []).append(m.id)
            done_ids.append(m.id)
        else:
            final.append((_FINAL_STATE[kind], m.lane, m.source_ip, attempt, o.reply, o.reason, o.at, m.id, owner))
            done_ids.append(m.id)
        log.append((m.id, o.at, m.lane, m.recipient, kind, attempt, o.reply_code, o.status, o.reply, o.reason))
        counts = lanes.get(m.lane)
        if counts is None:
            counts = lanes[m.lane] = [0, 0, 0]
        index = _COUNTER.get(kind)
        if index is not None:
            counts[index] += 1
        if o.reply and kind != "delivered":
            last_reply[m.lane] = o.reply
    # The bulk of a batch, deliveries, is one statement per lane (the server's
    # reply to each stays in the log), not one execution per message.
    now = max((o.at for o in outcomes), default=0.0)
    for (lane, source_ip), ids in delivered.items():
        for chunk in _chunks(ids):
            cursor, sql = _raw(conn, "UPDATE sender_message SET state = 'delivered', lane = ?, source_ip = ?, "
                                     "lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, "
                                     "last_reply = NULL, reason = NULL, updated_at = ? "
                                     f"WHERE lease_owner = ? AND id IN ({_marks(chunk)})")
            cursor.execute(sql, (lane, source_ip, now, owner, *chunk))  # type: ignore[attr-defined]
    executemany(conn, "UPDATE sender_message SET state = ?, lane = ?, source_ip = ?, lease_owner = NULL, "
                      "lease_until = NULL, attempts = ?, last_reply = ?, reason = ?, "
                      "updated_at = ? WHERE id = ? AND lease_owner = ?", final)
    # Content is dropped once a message is done: the log keeps what happened.
    for chunk in _chunks(done_ids):
        cursor, sql = _raw(conn, f"DELETE FROM sender_message_content WHERE message_ref IN ({_marks(chunk)})")
        cursor.execute(sql, chunk)  # type: ignore[attr-defined]
    executemany(conn, "UPDATE sender_message SET state = 'queued', lane = ?, source_ip = ?, lease_owner = NULL, "
                      "lease_until = NULL, attempts = attempts + 1, next_attempt_at = ?, last_reply = ?, reason = ?, "
                      "updated_at = ? WHERE id = ? AND lease_owner = ?", deferred)
    executemany(conn, "UPDATE sender_message SET state = 'queued', lane = ?, source_ip = ?, lease_owner = NULL, "
                      "lease_until = NULL, updated_at = ? WHERE id = ? AND lease_owner = ?", released)
    executemany(conn, "UPDATE sender_message SET state = 'queued', lane = ?, source_ip = ?, lease_owner = NULL, "
                      "lease_until = NULL, next_attempt_at = ?, last_reply = ?, reason = ?, "
                      "updated_at = ? WHERE id = ? AND lease_owner = ?", postponed)
    executemany(conn, "INSERT INTO sender_delivery_log (message_ref, at, lane, recipient, outcome, attempt, "
                      "reply_code, status, reply, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", log)
    lanes.pop("", None)
    if lanes:
        bump_lane_counters(conn, {lane: (c[0], c[1], c[2]) for lane, c in lanes.items()}, now)
    if last_reply:
        executemany(conn, "UPDATE sender_lane SET last_reply = ? WHERE lane = ?",
                    [(v[:2000], k) for k, v in last_reply.items()])


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


_FINAL_STATE = {"delivered": DELIVERED, "bounced": BOUNCED, "expired": EXPIRED, "suppressed": SUPPRESSED}
_COUNTER = {"delivered": 0, "deferred": 1, "bounced": 2, "expired": 2}


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def ensure_lanes(conn: Connection, lanes: Iterable[tuple[str, str, str]], now: float) -> None:
    """Register lanes (lane, source_ip, destination) that are not there yet."""
    day = utc_day(now)
    existing = {r[0] for r in conn.execute(text("SELECT lane FROM sender_lane"))}
    rows = [{"lane": lane, "ip": ip, "dest": dest, "day": day, "now": now}
            for lane, ip, dest in lanes if lane not in existing]
    if rows:
        conn.execute(text("INSERT INTO sender_lane (lane, source_ip, destination, day, delivered_today, "
                          "deferred_today, bounced_today, delivered_total, updated_at) "
                          "VALUES (:lane, :ip, :dest, :day, 0, 0, 0, 0, :now)"), rows)


def known_lanes(conn: Connection) -> set[str]:
    """The keys of the lanes registered in sender_lane."""
    return {r[0] for r in conn.execute(text("SELECT lane FROM sender_lane"))}


def bump_lane_counters(conn: Connection, counts: dict[str, tuple[int, int, int]], now: float) -> None:
    day = utc_day(now)
    rows = [{"lane": lane, "d": c[0], "f": c[1], "b": c[2], "day": day, "now": now} for lane, c in counts.items()]
    # A new UTC day starts the daily counters from zero.
    conn.execute(text("UPDATE sender_lane SET delivered_today = 0, deferred_today = 0, bounced_today = 0, day = :day "
                      "WHERE lane = :lane AND day <> :day"), rows)
    conn.execute(text("UPDATE sender_lane SET delivered_today = delivered_today + :d, "
                      "deferred_today = deferred_today + :f, bounced_today = bounced_today + :b, "
                      "delivered_total = delivered_total + :d, updated_at = :now "
                      "WHERE lane = :lane"), rows)


def lane_counters_today(conn: Connection, now: float) -> dict[str, int]:
    day = utc_day(now)
    rows = conn.execute(text("SELECT lane, delivered_today FROM sender_lane WHERE day = :day"), {"day": day})
    return {r[0]: r[1] for r in rows}


def expire_old(conn: Connection, max_age: float, now: float, blocked_lanes: Sequence[str] = (),
               limit: int = 1000) -> list[tuple[QueuedMessage, str | None]]:
    """Queued messages past max_age that are not about to be tried (waiting
    for a retry, or in a lane that cannot send): they expire here. Due ones
    in open lanes expire when their next attempt fails."""
    params: dict = {"cutoff": now - max_age, "now": now, "limit": limit}
    lanes = ""
    if blocked_lanes:
        names = [f":b{i}" for i in range(len(blocked_lanes))]
        params.update({f"b{i}": lane for i, lane in enumerate(blocked_lanes)})
        lanes = f" OR lane IN ({', '.join(names)})"
    rows = conn.execute(text(
        f"SELECT {_COLUMNS}, lane, last_reply FROM sender_message WHERE state = 'queued' AND created_at < :cutoff "
        f"AND (next_attempt_at > :now{lanes}) LIMIT :limit"), params).all()
    return [(QueuedMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], b"", b"", r[7], bool(r[8]), r[9], r[10], r[11],
                           r[12]), r[13]) for r in rows]


def lease_ids(conn: Connection, ids: Sequence[int], owner: str, now: float) -> None:
    """Lease queued messages by id (to expire or bounce them without a send)."""
    if ids:
        conn.execute(text("UPDATE sender_message SET state = 'inflight', lease_owner = :owner, lease_until = :until "
                          "WHERE id = :id AND state = 'queued'"),
                     [{"id": i, "owner": owner, "until": now + LEASE_SECONDS} for i in ids])


def counts_by_state(conn: Connection, campaign: str | None = None, min_id: int | None = None) -> dict[str, int]:
    where: list[str] = []
    params: dict[str, str | int] = {}
    if campaign is not None:
        where.append("campaign = :campaign")
        params["campaign"] = campaign
    if min_id is not None:
        where.append("id >= :min_id")
        params["min_id"] = min_id
    sql = ("SELECT state, COUNT(*) FROM sender_message" + (" WHERE " + " AND ".join(where) if where else "")
           + " GROUP BY state")
    return {r[0]: r[1] for r in conn.execute(text(sql), params)}


def pending_count(conn: Connection, now: float, blocked_lanes: Sequence[str] = ()) -> int:
    """Messages deliverable now (queued and due, or in flight), outside blocked lanes."""
    rows = conn.execute(text(
        "SELECT lane, COUNT(*) FROM sender_message WHERE (state = 'queued' AND next_attempt_at <= :now) "
        "OR state = 'inflight' GROUP BY lane"), {"now": now})
    blocked = set(blocked_lanes)
    return sum(n for lane, n in rows if lane not in blocked)


def resolve_tracking(conn: Connection, keys: Iterable[int]) -> dict[int, Tracking]:
    """Message, source IP and campaign of queue rows, by id: what a verified
    v2 tracking token (parsers.tracking.verify_v2) stands for."""
    wanted = sorted({int(k) for k in keys})
    out: dict[int, Tracking] = {}
    for chunk in _chunks(wanted):
        rows = conn.execute(text(
            "SELECT id, message_id, source_ip, campaign FROM sender_message WHERE id IN ("
            + ", ".join(f":p{i}" for i in range(len(chunk))) + ")"),
            {f"p{i}": v for i, v in enumerate(chunk)})
        for row_id, message_id, source_ip, campaign in rows:
            out[int(row_id)] = Tracking(message_id=message_id or None, source_ip=source_ip or None,
                                        campaign=campaign or None)
    return out


def attribute(conn: Connection, tokens: Sequence[str], secret: bytes) -> Tracking | None:
    """The Tracking of the first token in `tokens` that is a genuine v2 token
    under `secret` and names a queue row; None otherwise. A token that fails
    its tag (forged, edited, another installation's) attributes nothing, and
    v1 tokens (no tag) never do."""
    keys = [key for key in (tracking.verify_v2(t, secret) for t in tokens if t.startswith("v2.")) if key is not None]
    if not keys:
        return None
    found = resolve_tracking(conn, keys)
    return next((found[k] for k in keys if k in found), None)


__all__ = [
    "INFLIGHT", "LEASE_SECONDS", "NewMessage", "Outcome", "QueuedMessage", "attribute", "claim", "counts_by_state",
    "enqueue", "expire_old", "owner_alive", "owner_id", "reclaim_dead", "record_outcomes", "resolve_tracking",
]
