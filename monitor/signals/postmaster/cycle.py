"""Postmaster jobs: fetch Google Postmaster Tools and SNDS, store figures, record events.

Every failure ends in a fetch-error state (signal_fetch_states) and, when a
feed goes from working to failing, one event - the daemon keeps running.
Figures are upserted per (domain, day) and (IP, activity period): the
providers revise recent days, so the last few days are fetched each time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import aiohttp
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from monitor.core.db import session_scope
from monitor.core.dbtypes import utcnow
from monitor.core.logs import redact, redact_value
from monitor.signals.models import PostmasterDomainDay, SignalEvent, SndsIpDay, SndsIpStatus
from monitor.signals.postmaster import google, snds
from monitor.signals.postmaster.http import FetchError, RetryPolicy
from monitor.signals.settings import PostmasterConfig
from monitor.signals.store import add_event, record_fetch

log = logging.getLogger("repmon.signals.postmaster")

# Gmail's published lines: keep the user-reported spam rate below 0.1 %, never reach 0.3 %.
SPAM_RATE_WARNING = 0.001
SPAM_RATE_CRITICAL = 0.003
_DAY_FIELDS = ("spam_rate", "spam_rate_lower", "spam_rate_upper", "spf_success_rate", "dkim_success_rate",
               "dmarc_success_rate", "tls_inbound_rate", "tls_outbound_rate", "delivery_error_rate",
               "domain_reputation", "delivery_errors", "ip_reputations", "feedback_loops", "metrics")


def policy_of(settings: PostmasterConfig) -> RetryPolicy:
    return RetryPolicy(timeout_s=settings.timeout_s, max_attempts=settings.max_attempts,
                       backoff_s=settings.backoff_s, max_backoff_s=settings.max_backoff_s)


@dataclass(slots=True)
class FetchReport:
    ok: list[str] = field(default_factory=list)  # sources fetched
    failed: dict[str, str] = field(default_factory=dict)  # source -> error
    rows: int = 0
    events: list[str] = field(default_factory=list)  # event kinds recorded

    def record_success(self, source: str, rows: int, kinds: list[str]) -> None:
        self.ok.append(source)
        self.rows += rows
        self.events += kinds


# --- Google ----------------------------------------------------------------------------------

async def run_google(postmaster: PostmasterConfig, engine: Engine, *, today: date | None = None) -> FetchReport:
    settings = postmaster.google
    report = FetchReport()
    if settings is None:
        return report
    policy = policy_of(postmaster)
    today = today or utcnow().date()
    end = today - timedelta(days=1)  # a day's figures appear the day after
    start = end - timedelta(days=settings.lookback_days - 1)
    try:
        account = google.load_service_account(settings.service_account_file)
    except FetchError as exc:
        await _failed(engine, "google", exc, report)
        return report
    async with aiohttp.ClientSession() as session:
        tokens = google.TokenSource(account, google.scopes_for(settings.traffic_stats_v1, not settings.domains),
                                    token_url=settings.token_url, subject=settings.subject)
        client = google.PostmasterClient(session, tokens, settings.api_url, policy)
        domains = list(settings.domains)
        if not domains:
            try:
                domains = await client.list_domains()
            except FetchError as exc:
                await _failed(engine, "google:domains", exc, report)
                return report
            await _succeeded(engine, "google:domains", [], report)
        for domain in domains:
            fetches = [("v2", lambda d=domain: client.domain_stats(d, start, end))]
            if settings.traffic_stats_v1:
                fetches.append(("v1", lambda d=domain: client.traffic_stats(d, start, end + timedelta(days=1))))
            for api, call in fetches:
                source = f"google:{api}:{domain}"
                try:
                    rows = await call()
                except FetchError as exc:
                    await _failed(engine, source, exc, report)
                    if exc.kind == "auth" and exc.status in (None, 400):
                        # The service account itself is unusable: every other call would fail the same way.
                        for other in domains[domains.index(domain) + 1:]:
                            await _failed(engine, f"google:{api}:{other}", exc, report)
                        return report
                    continue
                await _succeeded(engine, source, rows, report)
    return report


def _spam_level(rate: float | None) -> int:
    if rate is None:
        return 0
    return 2 if rate >= SPAM_RATE_CRITICAL else 1 if rate >= SPAM_RATE_WARNING else 0


def _judged_rate(row) -> float | None:
    # v1 gives a confidence interval: the true rate may be as high as its upper bound.
    return row.spam_rate_upper if row.spam_rate_upper is not None else row.spam_rate


def store_domain_days(engine: Engine, source: str, rows: list[google.DomainDay], now: datetime) -> list[str]:
    kinds: list[str] = []
    with session_scope(engine) as session:
        for row in rows:
            existing = session.execute(select(PostmasterDomainDay).where(
                col(PostmasterDomainDay.provider) == "google", col(PostmasterDomainDay.api) == row.api,
                col(PostmasterDomainDay.domain) == row.domain, col(PostmasterDomainDay.day) == row.day)
            ).scalar_one_or_none()
            before = _spam_level(_judged_rate(existing)) if existing is not None else 0
            record = existing or PostmasterDomainDay(provider="google", api=row.api, domain=row.domain, day=row.day)
            for name in _DAY_FIELDS:
                setattr(record, name, getattr(row, name))
            record.fetched_at = now
            session.add(record)
            rate = _judged_rate(row)
            level = _spam_level(rate)
            if level > before:
                line = SPAM_RATE_CRITICAL if level == 2 else SPAM_RATE_WARNING
                reason = (f"Gmail spam rate of {row.domain} on {row.day.isoformat()} was {rate:.2%} "
                          f"(line {line:.1%}){' (upper bound)' if row.spam_rate_upper is not None else ''}")
                session.add(SignalEvent(occurred_at=now, source="postmaster", kind="spam_rate_high", subject=row.domain,
                                        reason=reason, details={"day": row.day.isoformat(), "rate": rate,
                                                                "api": row.api,
                                                                "level": "critical" if level == 2 else "warning"}))
                kinds.append("spam_rate_high")
                log.warning(reason, extra={"domain": row.domain})
        kinds += _fetch_ok(session, source, now)
    return kinds


# --- SNDS ------------------------------------------------------------------------------------

async def run_snds(postmaster: PostmasterConfig, engine: Engine, *, today: date | None = None) -> FetchReport:
    settings = postmaster.snds
    report = FetchReport()
    if settings is None:
        return report
    policy = policy_of(postmaster)
    today = today or utcnow().date()
    async with aiohttp.ClientSession() as session:
        data_key = settings.resolve_data_key()
        if data_key:
            await _snds_data(session, engine, settings.data_url, data_key, today, settings.lookback_days, policy,
                             report)
        status_key = settings.resolve_ipstatus_key()
        if status_key:
            try:
                text = await snds.fetch_status(session, settings.ipstatus_url, status_key, policy)
            except FetchError as exc:
                await _failed(engine, "snds:ipstatus", exc, report)
            else:
                rows, bad = snds.parse_status_csv(text)
                kinds = await asyncio.to_thread(store_ip_status, engine, rows, bad, utcnow())
                report.record_success("snds:ipstatus", len(rows), kinds)
    return report


async def _snds_data(session, engine, url, key, today, lookback, policy, report: FetchReport) -> None:
    rows: list[snds.SndsDataRow] = []
    bad: list[snds.BadRow] = []
    errors: list[FetchError] = []
    for back in range(1, lookback + 1):
        day = today - timedelta(days=back)
        try:
            text = await snds.fetch_data(session, url, key, day, policy)
        except FetchError as exc:
            errors.append(exc)
            continue
        day_rows, day_bad = snds.parse_data_csv(text)
        rows += day_rows
        bad += day_bad
    answered = lookback - len(errors)
    if answered == 0:
        await _failed(engine, "snds:data", errors[0], report)
        return
    if errors:
        # A 404 for one day can mean "no data for that day"; other failures are worth a line in the log.
        for error in errors:
            if error.status != 404:
                log.warning("SNDS data: %s", error)
    kinds = await asyncio.to_thread(store_snds_days, engine, rows, bad, utcnow())
    report.record_success("snds:data", len(rows), kinds)


def store_snds_days(engine: Engine, rows: list[snds.SndsDataRow], bad: list[snds.BadRow], now: datetime) -> list[str]:
    kinds: list[str] = []
    with session_scope(engine) as session:
        for row in rows:
            existing = session.execute(select(SndsIpDay).where(
                col(SndsIpDay.ip) == row.ip, col(SndsIpDay.activity_start) == row.activity_start)).scalar_one_or_none()
            record = existing or SndsIpDay(ip=row.ip, activity_start=row.activity_start, day=row.day,
                                           activity_end=row.activity_end, filter_result=row.filter_result)
            before_result = existing.filter_result if existing is not None else "GREEN"
            before_traps = existing.trap_hits if existing is not None else 0
            for name in ("activity_end", "rcpt_commands", "data_commands", "message_recipients", "filter_result",
                         "complaint_rate", "complaint_rate_text", "complaint_rate_below", "trap_hits",
                         "trap_period_start", "trap_period_end", "sample_helo", "sample_mail_from", "comments"):
                setattr(record, name, getattr(row, name))
            record.day = row.day
            record.fetched_at = now
            session.add(record)
            severity = {"GREEN": 0, "YELLOW": 1, "RED": 2}
            if severity[row.filter_result] > severity.get(before_result, 0):
                kind = f"snds_filter_{row.filter_result.lower()}"
                _event(session, kind, row.ip, now, kinds,
                       f"SNDS filter result for {row.ip} on {row.day.isoformat()}: {row.filter_result} "
                       f"(complaint rate {row.complaint_rate_text or 'n/a'}, trap hits {row.trap_hits})",
                       {"day": row.day.isoformat(), "filter_result": row.filter_result,
                        "complaint_rate": row.complaint_rate, "trap_hits": row.trap_hits})
            if row.trap_hits > before_traps:
                _event(session, "snds_trap_hits", row.ip, now, kinds,
                       f"SNDS: {row.trap_hits} spam trap hits for {row.ip} on {row.day.isoformat()}",
                       {"day": row.day.isoformat(), "trap_hits": row.trap_hits})
        if bad:
            _parse_errors(session, "snds:data", bad, now, kinds)
        kinds += _fetch_ok(session, "snds:data", now)
    return kinds


def store_ip_status(engine: Engine, rows: list[snds.SndsStatusRow], bad: list[snds.BadRow], now: datetime) -> list[str]:
    """Make snds_ip_status the feed's current list; events for ranges blocked and released."""
    kinds: list[str] = []
    with session_scope(engine) as session:
        current = {(r.first_ip, r.last_ip): r for r in session.execute(select(SndsIpStatus)).scalars()}
        seen = set()
        for row in rows:
            if not row.blocked:
                continue
            key = (row.first_ip, row.last_ip)
            seen.add(key)
            record = current.get(key)
            if record is None:
                session.add(SndsIpStatus(first_ip=row.first_ip, last_ip=row.last_ip, blocked=True, reason=row.reason,
                                         first_seen_at=now, fetched_at=now))
                subject = row.first_ip if row.first_ip == row.last_ip else f"{row.first_ip}-{row.last_ip}"
                _event(session, "snds_blocked", subject, now, kinds,
                       f"SNDS: {subject} is blocked by Outlook.com: {row.reason}",
                       {"first_ip": row.first_ip, "last_ip": row.last_ip})
            else:
                record.reason, record.fetched_at = row.reason, now
                session.add(record)
        for key, record in current.items():
            if key not in seen:
                subject = key[0] if key[0] == key[1] else f"{key[0]}-{key[1]}"
                _event(session, "snds_unblocked", subject, now, kinds,
                       f"SNDS: {subject} is no longer reported blocked", {"first_ip": key[0], "last_ip": key[1]})
                session.delete(record)
        if bad:
            _parse_errors(session, "snds:ipstatus", bad, now, kinds)
        kinds += _fetch_ok(session, "snds:ipstatus", now)
    return kinds


def _event(session, kind: str, subject: str, now: datetime, kinds: list[str], reason: str, details: dict) -> None:
    reason = redact(reason)
    session.add(SignalEvent(occurred_at=now, source="postmaster", kind=kind, subject=subject, reason=reason,
                            details=redact_value(details)))
    kinds.append(kind)
    log.warning(reason, extra={"kind": kind})


def _parse_errors(session, source: str, bad: list[snds.BadRow], now: datetime, kinds: list[str]) -> None:
    # The unreadable lines themselves are kept in the event: nothing is silently dropped.
    _event(session, "feed_parse_error", source, now, kinds,
           f"{source}: {len(bad)} line(s) could not be read; first: line {bad[0].line}: {bad[0].reason}",
           {"lines": [{"line": b.line, "text": b.text, "reason": b.reason} for b in bad[:100]],
            "count": len(bad)})


# --- fetch states ----------------------------------------------------------------------------

def _fetch_ok(session, source: str, now: datetime) -> list[str]:
    _, previous = record_fetch(session, source, ok=True, now=now)
    if previous == "error":
        add_event(session, source="postmaster", kind="fetch_recovered", subject=source, now=now,
                  reason=f"{source} works again")
        log.info("%s works again", source)
        return ["fetch_recovered"]
    return []


async def _succeeded(engine: Engine, source: str, rows: list[google.DomainDay], report: FetchReport) -> None:
    kinds = await asyncio.to_thread(store_domain_days, engine, source, rows, utcnow())
    report.record_success(source, len(rows), kinds)


async def _failed(engine: Engine, source: str, exc: FetchError, report: FetchReport) -> None:
    report.failed[source] = redact(str(exc))
    log.error("%s: %s", source, exc, extra={"source": source, "kind": exc.kind})
    kinds = await asyncio.to_thread(store_fetch_error, engine, source, exc, utcnow())
    report.events += kinds


def store_fetch_error(engine: Engine, source: str, exc: FetchError, now: datetime) -> list[str]:
    with session_scope(engine) as session:
        _, previous = record_fetch(session, source, ok=False, error=str(exc), http_status=exc.status, now=now)
        if previous != "error":
            add_event(session, source="postmaster", kind="fetch_failed", subject=source, now=now, reason=str(exc),
                      details={"kind": exc.kind, "status": exc.status, "retry_after_s": exc.retry_after_s})
            return ["fetch_failed"]
    return []
