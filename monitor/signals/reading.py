"""Read-only queries over the signals tables, returning plain rows: what the
metrics show of blocklists, DNS authentication, Postmaster Tools and SNDS,
without the reader importing the tables (monitor/signals/store.py writes)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Row

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
