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

A bounce or complaint suppresses only addresses it can be trusted about:
- a hard bounce only when its reason is sure (`confidence` high or medium,
  parsers/events.py); a guess from the reply code alone suppresses nobody;
- a bounce of a message repmon's sender sent (its tracking token came back:
  parsers/tracking.py) is about that message's one recipient; one naming
  several recipients does not say which was ours and suppresses none;
- a message naming more recipients than `max_recipients_per_report` suppresses
  none of them; sources hold it back (`hold_mass_reports`) so it is quarantined
  for review with the reason.

Called inside the transaction that inserts the events.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from monitor.ingest.messages import Prepared
from monitor.ingest.settings import SuppressionConfig
from monitor.storage import ledger
from monitor.storage.rows import COMPLAINT_TYPES, OPT_OUT_TYPES, normalize_recipient
from monitor.storage.suppression import COMPLAINT, HARD_BOUNCE, OPT_OUT, SOFT_BOUNCE, SuppressionEntry, suppress_many
from parsers.events import BounceEvent, FeedbackEvent

log = logging.getLogger("repmon.ingest.suppress")

# The confidence a hard bounce's reason needs to suppress (issue 10).
SURE_ENOUGH = frozenset({"high", "medium"})

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


def too_many_recipients(prepared: Prepared, settings: SuppressionConfig) -> str | None:
    """Why a message names too many recipients to suppress any, or None."""
    recipients = {normalize_recipient(e.recipient) for e in prepared.events
                  if isinstance(e, (BounceEvent, FeedbackEvent)) and e.recipient}
    recipients.discard(None)
    cap = settings.max_recipients_per_report
    if len(recipients) <= cap:
        return None
    return (f"names {len(recipients):,} recipients, more than [suppression] max_recipients_per_report = {cap}: "
            "none suppressed, held for review")


def hold_mass_reports(items: list[Prepared], settings: SuppressionConfig) -> None:
    """Replace (in place) each parsed message naming more recipients than the cap
    with one that is quarantined with the reason: no event, no suppression."""
    for index, prepared in enumerate(items):
        reason = too_many_recipients(prepared, settings)
        if reason is None:
            continue
        log.warning("message %s %s", prepared.sha256[:12], reason)
        items[index] = Prepared(
            sha256=prepared.sha256, size=prepared.size, raw=prepared.raw, events=[], uid=prepared.uid,
            header_message_id=prepared.header_message_id, header_date=prepared.header_date,
            subject=prepared.subject, received_at=prepared.received_at, forced_quarantine=reason,
        )


def _untrusted(session: Session, rows: list[StoredRow], settings: SuppressionConfig) -> set[int]:
    """Ids of the events that must not suppress (see the module docstring)."""
    about_addresses = [r for r in rows if r.kind in ("bounce", "feedback") and r.recipient]
    if not about_addresses:
        return set()
    context = ledger.events_context(session, [r.id for r in about_addresses])
    by_message: dict[int | None, list[StoredRow]] = defaultdict(list)
    for row in about_addresses:
        by_message[context.get(row.id, (None, {}))[0]].append(row)
    untrusted: set[int] = set()
    for message_pk, message_rows in by_message.items():
        if message_pk is not None and len({r.recipient for r in message_rows}) > settings.max_recipients_per_report:
            log.warning("message %s names %d recipients, more than max_recipients_per_report = %d: none suppressed",
                        message_pk, len({r.recipient for r in message_rows}), settings.max_recipients_per_report)
            untrusted.update(r.id for r in message_rows)
            continue
        tracked = [r for r in message_rows if r.kind == "bounce"
                   and (context.get(r.id, (None, {}))[1].get("tracking") or {}).get("message_id")]
        if message_pk is not None and len({r.recipient for r in tracked}) > 1:
            log.warning("message %s: a bounce of one message repmon sent names %d recipients: none suppressed",
                        message_pk, len({r.recipient for r in tracked}))
            untrusted.update(r.id for r in tracked)
        for row in message_rows:
            if (row.kind == "bounce" and row.hard_or_soft == "hard"
                    and context.get(row.id, (None, {}))[1].get("confidence") not in SURE_ENOUGH):
                untrusted.add(row.id)
    return untrusted


def apply_suppressions(session: Session, rows: list[StoredRow], settings: SuppressionConfig) -> int:
    """Suppress what these freshly inserted events call for; returns how many entries."""
    entries: list[SuppressionEntry] = []
    soft_recipients: dict[str, StoredRow] = {}
    untrusted = _untrusted(session, rows, settings)
    for row in rows:
        if not row.recipient or "@" not in row.recipient or row.id in untrusted:
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
