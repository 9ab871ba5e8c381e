"""The managed suppression list: what operators, the HTTP API and the export
need beyond monitor/storage/suppression.py.

- list / search with id-cursor paging, show (the row, the event that caused
  it with its message or file, the operator history);
- add an address (storage's `suppress`, reason "manual") or a whole @domain
  (`suppressed_domains`), remove either; every change is audited
  (`suppression_audit`: who, why, when, the removed row);
- a removed address is not suppressed again by the evidence it was removed
  over: `skip_removed` drops entries whose event is not newer than the
  removal (wired into storage's `suppress_many`: see README of the part);
- export (CSV, JSON, a Postfix access map, PowerMTA lines), incremental with
  a change cursor: "v1.<suppression id>.<audit id>.<domain id>";
- the id-ordered feeds the API and the webhooks read: events, new
  suppressions, removals.

Functions take the caller's session and never commit, like suppression.py.
Addresses are compared in lower case (`normalize_address`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, literal, or_, select, union_all
from sqlalchemy.engine import Connection
from sqlmodel import Session

from monitor.core.dbtypes import utcnow
from monitor.core.units import parse_duration
from monitor.storage import suppression as base
from monitor.storage.admin_models import SuppressedDomain, SuppressionAudit
from monitor.storage.models import FolderFile, ProcessedMessage, StoredEvent, Suppression

MAX_PAGE = 1000
MAX_SEARCH = 200
MAX_WHY = 500
EXPORT_FORMATS = ("csv", "json", "postfix", "pmta")
_ADDRESS_RE = re.compile(r"^[^\s@<>\"(),;:\\\[\]]{1,64}@[a-z0-9](?:[a-z0-9.-]{0,253}[a-z0-9])?$")
_DOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)+$")

_supp: Table = Suppression.__table__  # type: ignore[attr-defined]
_events: Table = StoredEvent.__table__  # type: ignore[attr-defined]
_audit: Table = SuppressionAudit.__table__  # type: ignore[attr-defined]
_domains: Table = SuppressedDomain.__table__  # type: ignore[attr-defined]


class AdminError(ValueError):
    """A request about the list that cannot be done; `field` names the bad input."""

    def __init__(self, message: str, field: str = "address") -> None:
        super().__init__(message)
        self.field = field


# --- targets -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    """An address ("bob@example.net") or a domain (text "@example.net")."""

    text: str
    is_domain: bool

    @property
    def domain(self) -> str:
        return self.text[1:] if self.is_domain else self.text.rpartition("@")[2]


def parse_target(text: str, *, allow_domain: bool = True, field_name: str = "address") -> Target:
    """A checked, lower-cased address or @domain; AdminError naming the field otherwise."""
    value = base.normalize_address(text or "")
    if len(value) > 320:
        raise AdminError(f"{field_name}: longer than 320 characters", field_name)
    if value.startswith("@"):
        if not allow_domain:
            raise AdminError(f"{field_name}: give an address, not a domain", field_name)
        domain = value[1:].rstrip(".")
        if not _DOMAIN_RE.match(domain):
            raise AdminError(f"{field_name}: {text[:80]!r} is not @domain.tld", field_name)
        return Target("@" + domain, True)
    if not _ADDRESS_RE.match(value):
        raise AdminError(f"{field_name}: {text[:80]!r} is not an email address", field_name)
    return Target(value, False)


def parse_since(text: str, *, field_name: str = "since", now: datetime | None = None) -> datetime:
    """A point in time from "7d" / "12h" (that long ago) or an ISO 8601 date or time (UTC unless it says)."""
    value = (text or "").strip()
    if not value or len(value) > 40:
        raise AdminError(f"{field_name}: give a duration (7d, 12h) or an ISO date", field_name)
    try:
        return (now or utcnow()) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AdminError(f"{field_name}: {value!r} is neither a duration (7d) nor an ISO date", field_name) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _active(expires_at: datetime | None, at: datetime) -> bool:
    return expires_at is None or expires_at > at


# --- rows as plain data --------------------------------------------------------------------------

def address_json(row: Any, at: datetime) -> dict[str, Any]:
    return {
        "address": row.address, "kind": "address", "domain": row.domain, "reason": row.reason,
        "detail": row.detail, "source": row.source, "event_id": row.source_event_id,
        "first_seen": _iso(row.first_seen_at), "last_seen": _iso(row.last_seen_at), "count": row.count,
        "expires": _iso(row.expires_at), "active": _active(row.expires_at, at),
    }


def domain_json(row: Any, at: datetime) -> dict[str, Any]:
    return {
        "address": "@" + row.domain, "kind": "domain", "domain": row.domain, "reason": row.reason,
        "detail": row.detail, "source": row.source, "event_id": None,
        "first_seen": _iso(row.created_at), "last_seen": _iso(row.created_at), "count": 1,
        "expires": _iso(row.expires_at), "active": _active(row.expires_at, at),
    }


def audit_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "op": row.op, "target": row.target, "at": _iso(row.at), "actor": row.actor, "why": row.why,
            "removed": dict(row.snapshot or {}) or None}


# --- listing -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Filters:
    reason: str | None = None
    source: str | None = None  # exact, or a prefix ending in "*" ("policy:*")
    since: datetime | None = None  # first seen at or after
    search: str | None = None  # part of the address or detail
    include_expired: bool = False

    def check(self) -> None:
        if self.reason is not None and self.reason not in base.SUPPRESSION_REASONS:
            raise AdminError(f"reason: one of {', '.join(base.SUPPRESSION_REASONS)}", "reason")
        if self.search is not None and len(self.search) > MAX_SEARCH:
            raise AdminError(f"search: at most {MAX_SEARCH} characters", "search")
        if self.source is not None and len(self.source) > 64:
            raise AdminError("source: at most 64 characters", "source")


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _like(text: str) -> str:
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _source_clause(column: Any, source: str) -> Any:
    if source.endswith("*"):
        prefix = source[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(prefix + "%", escape="\\")
    return column == source


def _parse_page_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "a", 0
    match = re.fullmatch(r"([ad])(\d{1,18})", cursor)
    if not match:
        raise AdminError("cursor: not a cursor this API gave out", "cursor")
    return match.group(1), int(match.group(2))


def list_suppressions(session: Session, filters: Filters, *, cursor: str | None = None, limit: int = 100,
                      at: datetime | None = None) -> Page:
    """Addresses by id, then domains by id; `next_cursor` continues (None: done)."""
    filters.check()
    if not 1 <= limit <= MAX_PAGE:
        raise AdminError(f"limit: between 1 and {MAX_PAGE}", "limit")
    at = at or utcnow()
    part, after = _parse_page_cursor(cursor)
    items: list[dict[str, Any]] = []
    if part == "a":
        rows = list(session.execute(_address_query(filters, after, at).limit(limit + 1)))
        items = [address_json(r, at) for r in rows[:limit]]
        if len(rows) > limit:
            return Page(items, f"a{rows[limit - 1].id}")
        part, after = "d", 0
    room = limit - len(items)
    if room <= 0:
        return Page(items, "d0")
    rows = list(session.execute(_domain_query(filters, after, at).limit(room + 1)))
    items += [domain_json(r, at) for r in rows[:room]]
    return Page(items, f"d{rows[room - 1].id}" if len(rows) > room else None)


def _address_query(filters: Filters, after: int, at: datetime) -> Any:
    return _filtered(_supp, filters, after, at, since_column="first_seen_at", name_column="address",
                     search=filters.search)


def _domain_query(filters: Filters, after: int, at: datetime) -> Any:
    return _filtered(_domains, filters, after, at, since_column="created_at", name_column="domain",
                     search=filters.search.lstrip("@") if filters.search else None)


def _filtered(t: Any, filters: Filters, after: int, at: datetime, *, since_column: str, name_column: str,
              search: str | None) -> Any:
    """The rows of the address or domain list after `after` that match the filters."""
    query = select(t).where(t.c.id > after).order_by(t.c.id)
    if not filters.include_expired:
        query = query.where(or_(t.c.expires_at.is_(None), t.c.expires_at > at))
    if filters.reason:
        query = query.where(t.c.reason == filters.reason)
    if filters.source:
        query = query.where(_source_clause(t.c.source, filters.source))
    if filters.since:
        query = query.where(t.c[since_column] >= filters.since)
    if search:
        pattern = _like(search)
        query = query.where(or_(t.c[name_column].like(pattern, escape="\\"),
                                func.lower(t.c.detail).like(pattern, escape="\\")))
    return query


# --- one address ----------------------------------------------------------------------------------

def _check_statement() -> Any:
    """One round trip: the address's own row, else its domain's, in force at :now."""
    now = bindparam("now", type_=_supp.c.expires_at.type)
    by_address = select(literal("address").label("kind"), _supp.c.reason, _supp.c.detail, _supp.c.expires_at).where(
        _supp.c.address == bindparam("address"), or_(_supp.c.expires_at.is_(None), _supp.c.expires_at > now))
    by_domain = select(literal("domain").label("kind"), _domains.c.reason, _domains.c.detail, _domains.c.expires_at).where(
        _domains.c.domain == bindparam("domain"), or_(_domains.c.expires_at.is_(None), _domains.c.expires_at > now))
    return union_all(by_address, by_domain).order_by("kind").limit(1)


_CHECK = _check_statement()


def check(conn: Connection | Session, address: str, *, at: datetime | None = None) -> dict[str, Any]:
    """{"suppressed": bool, "reason", "detail", "expires", "kind"} for one address (the sender's question)."""
    target = parse_target(address, allow_domain=False)
    row = conn.execute(_CHECK, {"address": target.text, "domain": target.domain, "now": at or utcnow()}).first()
    if row is None:
        return {"address": target.text, "suppressed": False, "reason": None, "detail": None, "expires": None,
                "kind": None}
    return {"address": target.text, "suppressed": True, "reason": row.reason, "detail": row.detail,
            "expires": _iso(row.expires_at), "kind": row.kind}


def suppressed_by_domain(session: Session, addresses: Iterable[str], *, at: datetime | None = None) -> set[str]:
    """The given addresses (as given) whose domain is suppressed (for the sender's bulk check)."""
    at = at or utcnow()
    by_domain: dict[str, list[str]] = {}
    for address in addresses:
        by_domain.setdefault(base.normalize_address(address).rpartition("@")[2], []).append(address)
    found: set[str] = set()
    names = [n for n in by_domain if n]
    for start in range(0, len(names), 500):
        for domain in session.execute(select(_domains.c.domain).where(
                _domains.c.domain.in_(names[start:start + 500]),
                or_(_domains.c.expires_at.is_(None), _domains.c.expires_at > at))).scalars():
            found.update(by_domain[domain])
    return found


def show(session: Session, text: str, *, at: datetime | None = None) -> dict[str, Any] | None:
    """The suppression of an address or @domain with its cause and history; None when
    it is neither on the list nor ever changed by hand."""
    target = parse_target(text)
    at = at or utcnow()
    history = [audit_json(r) for r in session.execute(
        select(_audit).where(_audit.c.target == target.text).order_by(_audit.c.id.desc()).limit(50))]
    if target.is_domain:
        row = session.execute(select(_domains).where(_domains.c.domain == target.domain)).first()
        if row is None and not history:
            return None
        out = domain_json(row, at) if row is not None else {"address": target.text, "kind": "domain", "active": False}
        return {**out, "suppressed": row is not None and out["active"], "event": None, "history": history}
    row = session.execute(select(_supp).where(_supp.c.address == target.text)).first()
    if row is None and not history:
        return None
    out = address_json(row, at) if row is not None else {"address": target.text, "kind": "address", "active": False}
    event = describe_event(session, row.source_event_id) if row is not None and row.source_event_id else None
    return {**out, "suppressed": row is not None and out["active"], "event": event, "history": history}


def describe_event(session: Session, event_id: int) -> dict[str, Any] | None:
    """The stored event and the message (file, IMAP folder/UID, Message-ID) it came from."""
    e = _events
    row = session.execute(select(e.c.id, e.c.kind, e.c.occurred_at, e.c.recipient, e.c.reason, e.c.status,
                                 e.c.feedback_type, e.c.original_message_id, e.c.message_id)
                          .where(e.c.id == event_id)).first()
    if row is None:
        return None
    out: dict[str, Any] = {"id": row.id, "kind": row.kind, "occurred": _iso(row.occurred_at), "recipient": row.recipient,
                           "reason": row.reason, "status": row.status, "feedback_type": row.feedback_type,
                           "original_message_id": row.original_message_id, "message": None}
    if row.message_id is not None:
        m = ProcessedMessage.__table__  # type: ignore[attr-defined]
        msg = session.execute(select(m.c.source, m.c.folder, m.c.uid, m.c.header_message_id, m.c.content_sha256,
                                     m.c.processed_at).where(m.c.id == row.message_id)).first()
        if msg is not None:
            f = FolderFile.__table__  # type: ignore[attr-defined]
            path = session.execute(select(f.c.path).where(f.c.content_sha256 == msg.content_sha256)
                                   .order_by(f.c.id).limit(1)).scalar()
            out["message"] = {"source": msg.source, "folder": msg.folder, "uid": msg.uid, "file": path,
                              "message_id": msg.header_message_id, "sha256": msg.content_sha256,
                              "processed": _iso(msg.processed_at)}
    return out


# --- changes by hand ------------------------------------------------------------------------------

def _why(text: str) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise AdminError("reason: say why (it is kept in the audit)", "reason")
    if len(text) > MAX_WHY:
        raise AdminError(f"reason: at most {MAX_WHY} characters", "reason")
    return text


def _actor(actor: str) -> str:
    return (" ".join((actor or "").split()) or "unknown")[:100]


def add(session: Session, text: str, *, why: str, actor: str, expires_at: datetime | None = None) -> dict[str, Any]:
    """Suppress an address (reason "manual") or every address of @domain; audited."""
    target = parse_target(text)
    why, actor = _why(why), _actor(actor)
    now = utcnow()
    if target.is_domain:
        existing = session.execute(select(SuppressedDomain).where(_domains.c.domain == target.domain)).scalars().first()
        if existing is None:
            existing = SuppressedDomain(domain=target.domain, reason=base.MANUAL, detail=why[:255], source=actor[:64],
                                        created_at=now, expires_at=expires_at)
        else:
            existing.detail, existing.source, existing.expires_at = why[:255], actor[:64], expires_at
        session.add(existing)
        session.flush()
        out = domain_json(existing, now)
    else:
        row = base.suppress(session, target.text, base.MANUAL, actor[:64], detail=why[:255], seen_at=now)
        if row is None:  # storage skipped it: cannot happen for evidence seen now, but say so if it does
            raise AdminError(f"{target.text}: removed a moment ago; try again", "address")
        out = address_json(row, now)
    session.add(SuppressionAudit(op="add", target=target.text, at=now, actor=actor, why=why, snapshot={},
                                 event_floor=_event_floor(session)))
    session.flush()
    return out


def remove(session: Session, text: str, *, why: str, actor: str) -> dict[str, Any] | None:
    """Take an address or @domain off the list, keeping the removed row in the audit; None if absent."""
    target = parse_target(text)
    why, actor = _why(why), _actor(actor)
    now = utcnow()
    if target.is_domain:
        row = session.execute(select(_domains).where(_domains.c.domain == target.domain)).first()
        if row is None:
            return None
        snapshot = domain_json(row, now)
        session.execute(delete(_domains).where(_domains.c.domain == target.domain))
    else:
        row = session.execute(select(_supp).where(_supp.c.address == target.text)).first()
        if row is None:
            return None
        snapshot = {**address_json(row, now), "row_id": row.id}
        base.unsuppress(session, target.text)
    audit = SuppressionAudit(op="remove", target=target.text, at=now, actor=actor, why=why, snapshot=snapshot,
                             event_floor=_event_floor(session), source=snapshot.get("source"))
    session.add(audit)
    session.flush()
    return audit_json(audit)


def _event_floor(session: Session) -> int:
    return int(session.execute(select(func.max(_events.c.id))).scalar() or 0)


def skip_removed(session: Session, entries: Sequence[base.SuppressionEntry]) -> list[base.SuppressionEntry]:
    """The entries that may (re)suppress their address: for an address an operator
    removed, only evidence newer than the removal counts. Dropped: an entry from
    an event stored before the removal (event id <= the floor then), an entry
    without an event seen before the removal, and the repeated re-application
    of the very source that was removed (a policy action's "policy:<id>")."""
    if not entries:
        return []
    addresses = sorted({base.normalize_address(e.address) for e in entries})
    latest: dict[str, Any] = {}
    for start in range(0, len(addresses), 500):
        chunk = addresses[start:start + 500]
        newest = (select(_audit.c.target, func.max(_audit.c.id).label("id"))
                  .where(_audit.c.op == "remove", _audit.c.target.in_(chunk)).group_by(_audit.c.target).subquery())
        for row in session.execute(select(_audit).join(newest, _audit.c.id == newest.c.id)):
            latest[row.target] = row
    if not latest:
        return list(entries)
    kept = []
    for entry in entries:
        removal = latest.get(base.normalize_address(entry.address))
        if removal is None or _newer_than(entry, removal):
            kept.append(entry)
    return kept


def removed_at(session: Session, addresses: Sequence[str]) -> dict[str, datetime]:
    """When an operator last removed each of these addresses (normalized), for
    rules that count evidence over time (repeated soft bounces count from there)."""
    normals = sorted({base.normalize_address(a) for a in addresses})
    out: dict[str, datetime] = {}
    for start in range(0, len(normals), 500):
        for target, at in session.execute(select(_audit.c.target, func.max(_audit.c.at)).where(
                _audit.c.op == "remove", _audit.c.target.in_(normals[start:start + 500])).group_by(_audit.c.target)):
            out[target] = at
    return out


def _newer_than(entry: base.SuppressionEntry, removal: Any) -> bool:
    if entry.event_id is not None:
        return entry.event_id > removal.event_floor
    if removal.source and entry.source == removal.source and entry.source.startswith("policy:"):
        return False
    return entry.seen_at is None or entry.seen_at > removal.at


def suppress_respecting_removals(session: Session, entries: Sequence[base.SuppressionEntry]) -> dict[str, Suppression]:
    """`suppress_many` of the entries `skip_removed` keeps."""
    kept = skip_removed(session, entries)
    return base.suppress_many(session, kept) if kept else {}


# --- export ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ExportCursor:
    suppression_id: int = 0
    audit_id: int = 0
    domain_id: int = 0

    def __str__(self) -> str:
        return f"v1.{self.suppression_id}.{self.audit_id}.{self.domain_id}"

    @classmethod
    def parse(cls, text: str) -> ExportCursor:
        match = re.fullmatch(r"v1\.(\d{1,18})\.(\d{1,18})\.(\d{1,18})", (text or "").strip())
        if not match:
            raise AdminError(f"since: {text[:40]!r} is not an export cursor (v1.N.N.N, printed by the last export)",
                             "since")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)))


EXPORT_CHUNK = 5000


@dataclass(slots=True)
class Export:
    """What an export writes. `added` is read from the database in id chunks while
    it is consumed (millions of rows never sit in memory): consume it before the
    session ends."""

    added: Iterable[dict[str, Any]] = ()
    removed: list[dict[str, Any]] = field(default_factory=list)  # incremental only: audit rows of removals
    cursor: ExportCursor = field(default_factory=ExportCursor)
    incremental: bool = False


def export(session: Session, since: ExportCursor | None = None, *, at: datetime | None = None) -> Export:
    """Everything in force (since None), or what changed after `since`: suppressions
    added since (new rows), and removals since of what is not back on the list."""
    at = at or utcnow()
    since_ = since or ExportCursor()
    top = ExportCursor(
        int(session.execute(select(func.max(_supp.c.id))).scalar() or 0),
        int(session.execute(select(func.max(_audit.c.id))).scalar() or 0),
        int(session.execute(select(func.max(_domains.c.id))).scalar() or 0),
    )
    # SQLite hands the id of a deleted newest row to the next insert: a row at the
    # id of a row removed since the cursor is new too
    reused = _reused_ids(session, since_) if since is not None else []
    out = Export(added=_Added(session, since_, top, reused, at), cursor=top, incremental=since is not None)
    if since is not None:
        for row in session.execute(select(_audit).where(
                _audit.c.op == "remove", _audit.c.id > since_.audit_id, _audit.c.id <= top.audit_id).order_by(_audit.c.id)):
            if check_target_absent(session, row.target, at):
                out.removed.append(audit_json(row))
    return out


@dataclass(frozen=True, slots=True)
class _Added:
    """The added rows of an export; every iteration reads them again, in id chunks."""

    session: Session
    since: ExportCursor
    top: ExportCursor
    reused: list[int]
    at: datetime

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _added(self.session, self.since, self.top, self.reused, self.at)


def _added(session: Session, since: ExportCursor, top: ExportCursor, reused: list[int],
           at: datetime) -> Iterator[dict[str, Any]]:
    in_force = or_(_supp.c.expires_at.is_(None), _supp.c.expires_at > at)
    if reused:
        for row in session.execute(select(_supp).where(_supp.c.id.in_(reused), in_force).order_by(_supp.c.id)):
            yield address_json(row, at)
    after = since.suppression_id
    while True:
        rows = list(session.execute(select(_supp).where(_supp.c.id > after, _supp.c.id <= top.suppression_id, in_force)
                                    .order_by(_supp.c.id).limit(EXPORT_CHUNK)))
        for row in rows:
            yield address_json(row, at)
        if len(rows) < EXPORT_CHUNK:
            break
        after = rows[-1].id
    for row in session.execute(select(_domains).where(
            _domains.c.id > since.domain_id, _domains.c.id <= top.domain_id,
            or_(_domains.c.expires_at.is_(None), _domains.c.expires_at > at)).order_by(_domains.c.id)):
        yield domain_json(row, at)


def _reused_ids(session: Session, since: ExportCursor) -> list[int]:
    ids = []
    for snapshot in session.execute(select(_audit.c.snapshot).where(
            _audit.c.op == "remove", _audit.c.id > since.audit_id)).scalars():
        row_id = (snapshot or {}).get("row_id")
        if isinstance(row_id, int) and row_id <= since.suppression_id:
            ids.append(row_id)
    return ids[:5000]


def check_target_absent(session: Session, target: str, at: datetime) -> bool:
    if target.startswith("@"):
        return session.execute(select(_domains.c.id).where(_domains.c.domain == target[1:])).first() is None
    return session.execute(select(_supp.c.id).where(_supp.c.address == target)).first() is None


_UNSAFE_KEY = re.compile(r"[\s#\"\\]|[\x00-\x1f\x7f]")


def _one_line(text: str | None, size: int = 200) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", " ".join((text or "").split()))[:size]


def render(export_: Export, fmt: str) -> Iterator[str]:
    """The export as chunks of text (streamed) in one of EXPORT_FORMATS."""
    if fmt == "json":
        yield from _json_export(export_)
    elif fmt == "csv":
        yield from _csv(export_)
    elif fmt == "postfix":
        for item in export_.added:
            key = item["address"][1:] if item["kind"] == "domain" else item["address"]
            if _UNSAFE_KEY.search(key):
                continue  # postmap keys end at whitespace: such an address cannot be a key
            why = _one_line(f"{item['reason']}" + (f" ({item['detail']})" if item["detail"] else ""))
            yield f"{key} REJECT 5.7.1 suppressed: {why}\n"
    elif fmt == "pmta":
        for item in export_.added:
            if not _UNSAFE_KEY.search(item["address"]):
                yield item["address"] + "\n"
    else:
        raise AdminError(f"format: one of {', '.join(EXPORT_FORMATS)}", "format")


def _json_export(export_: Export) -> Iterator[str]:
    head = json.dumps({"cursor": str(export_.cursor), "incremental": export_.incremental})[:-1]
    yield head + ', "added": ['
    for i, item in enumerate(export_.added):
        yield ("," if i else "") + json.dumps(item, ensure_ascii=False)
    yield '], "removed": ' + json.dumps(export_.removed, ensure_ascii=False) + "}\n"


_CSV_COLUMNS = ("op", "address", "kind", "reason", "detail", "source", "first_seen", "last_seen", "count", "expires",
                "changed_by", "why")


def _cell(text: str | None) -> str:
    """Free text for a CSV cell a spreadsheet will not run as a formula."""
    text = text or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(export_: Export) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for item in export_.added:
        writer.writerow(["add", item["address"], item["kind"], item["reason"], _cell(item["detail"]), _cell(item["source"]),
                         item["first_seen"], item["last_seen"], item["count"], item["expires"] or "", "", ""])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    for row in export_.removed:
        old = row.get("removed") or {}
        writer.writerow(["remove", row["target"], old.get("kind", ""), old.get("reason", ""), _cell(old.get("detail")),
                         _cell(old.get("source")), old.get("first_seen", ""), old.get("last_seen", ""), old.get("count", ""),
                         old.get("expires") or "", _cell(row["actor"]), _cell(row["why"])])
    yield buffer.getvalue()


# --- id-ordered feeds (HTTP API, webhooks) ---------------------------------------------------------

EVENT_COLUMNS = ("id", "kind", "occurred_at", "stored_at", "recipient", "recipient_domain", "reason", "hard_or_soft",
                 "status", "reply_code", "action", "remote_mta", "feedback_type", "is_complaint", "original_message_id",
                 "original_mail_from", "reported_domain", "source_ip", "tracking_message_id", "campaign", "sending_ip",
                 "sending_domain", "subject", "message_id")


def event_json(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in EVENT_COLUMNS}
    out["occurred_at"], out["stored_at"] = _iso(row.occurred_at), _iso(row.stored_at)
    return out


def events_after(conn: Connection | Session, after_id: int, limit: int, *, gap_grace_s: float = 30.0,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Stored events with id > after_id in id order (at most `limit`).

    On PostgreSQL a transaction holding a lower id can commit after a higher
    one: the page stops before a hole in the ids younger than `gap_grace_s`
    (a rolled-back id stops nothing for longer than that)."""
    rows = list(conn.execute(select(*[_events.c[name] for name in EVENT_COLUMNS])
                             .where(_events.c.id > after_id).order_by(_events.c.id).limit(limit)))
    return [event_json(r) for r in stop_at_young_gap(rows, after_id, gap_grace_s, now, "stored_at", conn)]


def stop_at_young_gap(rows: list[Any], after_id: int, grace_s: float, now: datetime | None, when: str,
                      conn: Connection | Session) -> list[Any]:
    """`rows` (id ordered, ids above after_id) up to the first hole in the ids whose
    next row is younger than grace_s; SQLite commits in id order and keeps all."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name == "sqlite" or not rows:
        return rows
    now = now or utcnow()
    expected = after_id + 1
    for i, row in enumerate(rows):
        if row.id != expected and after_id > 0:
            stamp = getattr(row, when, None)
            if stamp is not None and now - stamp < timedelta(seconds=grace_s):
                return rows[:i]
        expected = row.id + 1
    return rows


def suppressions_after(conn: Connection | Session, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Suppression rows with id > after_id (new addresses on the list), in id order."""
    at = utcnow()
    return [{**address_json(r, at), "id": r.id} for r in conn.execute(
        select(_supp).where(_supp.c.id > after_id).order_by(_supp.c.id).limit(limit))]


def removals_after(conn: Connection | Session, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Audit rows of removals with id > after_id, in id order."""
    return [audit_json(r) for r in conn.execute(
        select(_audit).where(_audit.c.op == "remove", _audit.c.id > after_id).order_by(_audit.c.id).limit(limit))]


def top_ids(conn: Connection | Session) -> dict[str, int]:
    """The highest id of each feed now (where a new subscriber starts)."""
    return {
        "events": int(conn.execute(select(func.max(_events.c.id))).scalar() or 0),
        "suppressions": int(conn.execute(select(func.max(_supp.c.id))).scalar() or 0),
        "removals": int(conn.execute(select(func.max(_audit.c.id))).scalar() or 0),
    }
