"""Read-only queries over the signals tables, returning plain rows: what the
metrics show of blocklists, DNS authentication, Postmaster Tools and SNDS,
without the reader importing the tables (monitor/signals/store.py writes)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select, text
from sqlalchemy.engine import Connection, Row

from monitor.core.sql import Ids, id_filter
from monitor.signals.models import (
    DnsAuthCheck,
    DnsblState,
    DnsblZoneHealth,
    PostmasterDomainDay,
    SignalEvent,
    SignalFetchState,
    SndsIpDay,
    SndsIpStatus,
)
from monitor.storage.reading import Tally, grouped_tally

_states = DnsblState.__table__  # type: ignore[attr-defined]
_zones = DnsblZoneHealth.__table__  # type: ignore[attr-defined]
_events = SignalEvent.__table__  # type: ignore[attr-defined]
_auth = DnsAuthCheck.__table__  # type: ignore[attr-defined]
_postmaster = PostmasterDomainDay.__table__  # type: ignore[attr-defined]
_snds_days = SndsIpDay.__table__  # type: ignore[attr-defined]
_snds_status = SndsIpStatus.__table__  # type: ignore[attr-defined]
_fetch = SignalFetchState.__table__  # type: ignore[attr-defined]

# (source, kind) -> signal events
SIGNAL_EVENTS: Tally = grouped_tally(_events, [_events.c.source, _events.c.kind], func.count())


def dnsbl_states(conn: Connection) -> list[tuple[str, str, str, str, int | None]]:
    """(target, target_kind, zone, state, error_streak) of every checked pair."""
    t = _states
    return [(target, kind, zone, state, streak) for target, kind, zone, state, streak in conn.execute(
        select(t.c.target, t.c.target_kind, t.c.zone, t.c.state, t.c.error_streak))]


def dnsbl_last_check(conn: Connection) -> datetime | None:
    return conn.execute(select(func.max(_states.c.checked_at))).scalar()


def zone_statuses(conn: Connection) -> list[tuple[str, str]]:
    """(zone, status) of every blocklist zone's health."""
    return [(zone, status) for zone, status in conn.execute(select(_zones.c.zone, _zones.c.status))]


def latest_dns_auth(conn: Connection) -> list[tuple[str, list[Any]]]:
    """(domain, [spf, dmarc, dkim, mta_sts, tls_rpt snapshots]) of each domain's
    last check; two at the same instant: the higher id wins (comes last)."""
    t = _auth
    latest = (select(t.c.domain, func.max(t.c.checked_at).label("at")).group_by(t.c.domain)).subquery()
    query = select(t.c.domain, t.c.spf, t.c.dmarc, t.c.dkim, t.c.mta_sts, t.c.tls_rpt, t.c.id).join(
        latest, and_(t.c.domain == latest.c.domain, t.c.checked_at == latest.c.at)).order_by(t.c.id)
    return [(row[0], list(row[1:6])) for row in conn.execute(query)]


def postmaster_days(conn: Connection, since: date) -> list[Row[Any]]:
    """Postmaster domain-days from `since` on: provider, domain, day, api, spam_rate,
    spf/dkim/dmarc_success_rate, delivery_error_rate, domain_reputation."""
    t = _postmaster
    query = select(t.c.provider, t.c.domain, t.c.day, t.c.api, t.c.spam_rate, t.c.spf_success_rate,
                   t.c.dkim_success_rate, t.c.dmarc_success_rate, t.c.delivery_error_rate,
                   t.c.domain_reputation).where(t.c.day >= since)
    return list(conn.execute(query))


def snds_days(conn: Connection, since: date) -> list[Row[Any]]:
    """SNDS IP-days from `since` on: ip, activity_end, filter_result, complaint_rate,
    trap_hits, message_recipients."""
    t = _snds_days
    query = select(t.c.ip, t.c.activity_end, t.c.filter_result, t.c.complaint_rate, t.c.trap_hits,
                   t.c.message_recipients).where(t.c.day >= since)
    return list(conn.execute(query))


def snds_blocked_ranges(conn: Connection) -> int:
    s = _snds_status
    return int(conn.execute(select(func.count()).select_from(s).where(s.c.blocked.is_(True))).scalar() or 0)


def fetch_states(conn: Connection) -> list[tuple[str, str, int | None]]:
    """(source, status, consecutive_failures) of every fetched source."""
    t = _fetch
    return [(source, status, consecutive) for source, status, consecutive in
            conn.execute(select(t.c.source, t.c.status, t.c.consecutive_failures))]


# -- what health reads -----------------------------------------------------------------------
#
# `existing` is the set of table names the database has (monitor.core.sql.table_names),
# read once by the caller: each has_* says whether the read below it can run.

SIGNAL_EVENTS_TABLE: str = _events.name  # for a reader that keeps an id cursor per table (health_cursors)


def has_listings(existing: Collection[str]) -> bool:
    return _states.name in existing


def has_zone_health(existing: Collection[str]) -> bool:
    return _zones.name in existing


def has_snds_days(existing: Collection[str]) -> bool:
    return _snds_days.name in existing


def has_snds_status(existing: Collection[str]) -> bool:
    return _snds_status.name in existing


def has_postmaster_days(existing: Collection[str]) -> bool:
    return _postmaster.name in existing


def has_signal_events(existing: Collection[str]) -> bool:
    return _events.name in existing


def broken_zones(conn: Connection) -> set[str]:
    """Blocklist zones whose answers are not to be trusted now."""
    return {r[0] for r in conn.execute(text("SELECT zone FROM dnsbl_zone_health WHERE status = 'broken'"))}


def listings(conn: Connection) -> list[tuple[str, str, Any, str | None, str, Any, str | None]]:
    """(target, zone, codes as stored, reason, state, changed_at, delist_url) of every pair
    listed, or unknown now with the last known state listed."""
    rows = conn.execute(text(
        "SELECT target, zone, codes, reason, state, changed_at, delist_url FROM dnsbl_states "
        "WHERE state = 'listed' OR (state = 'unknown' AND last_known = 'listed')"))
    return [(target, zone, codes, reason, state, changed_at, delist_url)
            for target, zone, codes, reason, state, changed_at, delist_url in rows]


def snds_ip_days(conn: Connection, since: date) -> list[tuple[str, Any, str | None, Any, str | None, Any, Any, Any]]:
    """(ip, day, filter_result, complaint_rate, complaint_rate_text, complaint_rate_below,
    trap_hits, message_recipients) of the SNDS IP-days from `since` on, as stored."""
    rows = conn.execute(text(
        "SELECT ip, day, filter_result, complaint_rate, complaint_rate_text, complaint_rate_below, "
        "trap_hits, message_recipients FROM snds_ip_days WHERE day >= :since"), {"since": since})
    return [(ip, day, result, rate, rate_text, below, traps, recipients)
            for ip, day, result, rate, rate_text, below, traps, recipients in rows]


def snds_blocked(conn: Connection) -> list[tuple[str, str, str | None]]:
    """(first_ip, last_ip, reason) of the address ranges SNDS says are blocked."""
    rows = conn.execute(text("SELECT first_ip, last_ip, reason FROM snds_ip_status WHERE blocked = :yes"),
                        {"yes": True})
    return [(first, last, reason) for first, last, reason in rows]


def google_postmaster_days(conn: Connection, since: date) -> list[tuple[str, Any, str, Any, Any, str | None, Any]]:
    """(domain, day, api, spam_rate, spam_rate_upper, domain_reputation, dmarc_success_rate)
    of Google's domain-days from `since` on, v2 rows first (api descending)."""
    rows = conn.execute(text(
        "SELECT domain, day, api, spam_rate, spam_rate_upper, domain_reputation, dmarc_success_rate "
        "FROM postmaster_domain_days WHERE provider = 'google' AND day >= :since ORDER BY api DESC"),
        {"since": since})
    return [(domain, day, api, spam, upper, reputation, dmarc) for domain, day, api, spam, upper, reputation, dmarc in rows]


def signal_subjects(conn: Connection, ids: Ids) -> list[tuple[str, str | None]]:
    """(source, subject) of the signal events in `ids` (an id range (lo, hi] or a list)."""
    rows = conn.execute(text(f"SELECT source, subject FROM signal_events WHERE {id_filter('id', ids)}"))
    return [(source, subject) for source, subject in rows]
