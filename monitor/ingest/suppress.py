"""Which stored events put an address on the suppression list.

- A hard bounce (the address is dead): at once, for good.
- A complaint (feedback abuse / fraud / virus): at once, for good.
- An opt-out (feedback opt-out, unsubscribe requests): at once, for good.
- Soft bounces only when they repeat: `soft_bounce_count` of them spread over
  at least `soft_bounce_min_days` days, counted since the address last took a
  delivery, and only those that say something about the address (a full or
  suspended mailbox), not about us (our IP blocked, our content filtered,
  rate limits): suppressing a good address because our IP was listed would be
  the wrong cure. Such a suppression expires after `soft_expiry_days`.

Called inside the transaction that inserts the events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from monitor.ingest.settings import SuppressionConfig
from monitor.storage import ledger
from monitor.storage.rows import COMPLAINT_TYPES, OPT_OUT_TYPES
from monitor.storage.suppression import COMPLAINT, HARD_BOUNCE, OPT_OUT, SOFT_BOUNCE, SuppressionEntry, suppress_many

# Soft bounce reasons (parsers/bounce/reasons.py) that are about the sender,
# the content or the moment, not about the recipient's address.
NOT_ABOUT_THE_ADDRESS = frozenset({
    "blocked", "badreputation", "requireptr", "authfailure", "spamdetected", "virusdetected",
    "policyviolation", "contenterror", "notcompliantrfc", "securityerror", "failedstarttls",
    "norelaying", "mesgtoobig", "toomanyconn", "speeding", "syntaxerror", "delivered",
})


@dataclass(slots=True)
class StoredRow:
    """What the rules need of an inserted `events` row."""

    id: int
    kind: str
    recipient: str | None
    occurred_at: datetime
    hard_or_soft: str | None
    reason: str | None
    feedback_type: str | None
    action: str | None = None  # DSN Action: failed | delayed | ...


def counts_as_soft(row: StoredRow | Any) -> bool:
    # A "delayed" DSN is a warning while the MTA keeps retrying: one slow message
    # sends several of them, so they never count towards a soft suppression.
    return (row.kind == "bounce" and row.hard_or_soft == "soft" and row.action != "delayed"
            and (row.reason or "") not in NOT_ABOUT_THE_ADDRESS)


def apply_suppressions(session: Session, rows: list[StoredRow], settings: SuppressionConfig) -> int:
    """Suppress what these freshly inserted events call for; returns how many entries."""
    entries: list[SuppressionEntry] = []
    soft_recipients: dict[str, StoredRow] = {}
    for row in rows:
        if not row.recipient or "@" not in row.recipient:
            continue
        if row.kind == "bounce" and row.hard_or_soft == "hard":
            entries.append(SuppressionEntry(row.recipient, HARD_BOUNCE, "bounce", row.reason, row.id, row.occurred_at))
        elif row.kind == "feedback" and row.feedback_type in COMPLAINT_TYPES:
            entries.append(SuppressionEntry(row.recipient, COMPLAINT, "feedback", row.feedback_type, row.id,
                                            row.occurred_at))
        elif row.kind == "feedback" and row.feedback_type in OPT_OUT_TYPES:
            entries.append(SuppressionEntry(row.recipient, OPT_OUT, "feedback", row.feedback_type, row.id,
                                            row.occurred_at))
        elif counts_as_soft(row):
            latest = soft_recipients.get(row.recipient)
            if latest is None or row.occurred_at >= latest.occurred_at:
                soft_recipients[row.recipient] = row
    if soft_recipients:
        entries.extend(_repeated_soft_bounces(session, soft_recipients, settings))
    if entries:
        suppress_many(session, entries)
    return len(entries)


def _repeated_soft_bounces(session: Session, latest: dict[str, StoredRow],
                           settings: SuppressionConfig) -> list[SuppressionEntry]:
    lookback = timedelta(days=settings.soft_expiry_days + settings.soft_bounce_min_days)
    since = min(r.occurred_at for r in latest.values()) - lookback
    recipients = list(latest)
    last_delivery: dict[str, datetime] = {}
    history: dict[str, list[datetime]] = defaultdict(list)
    for start in range(0, len(recipients), 500):
        chunk = recipients[start:start + 500]
        last_delivery.update(ledger.last_deliveries(session, chunk))
        for row in ledger.soft_bounces_since(session, chunk, since):
            if counts_as_soft(row):
                history[row.recipient].append(row.occurred_at)
    entries = []
    for recipient, newest in latest.items():
        window_start = newest.occurred_at - lookback
        delivered = last_delivery.get(recipient)
        if delivered is not None and delivered > window_start:
            window_start = delivered
        times = sorted(t for t in history[recipient] if window_start < t <= newest.occurred_at)
        if len(times) < settings.soft_bounce_count:
            continue
        if times[-1] - times[0] < timedelta(days=settings.soft_bounce_min_days):
            continue
        entries.append(SuppressionEntry(
            recipient, SOFT_BOUNCE, "bounce", newest.reason, newest.id, newest.occurred_at,
            expires_at=newest.occurred_at + timedelta(days=settings.soft_expiry_days),
        ))
    return entries
